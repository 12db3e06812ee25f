"""One evaluation entry point (as CLIP_benchmark's ``eval``): dataset x model x task -> a table and a JSON record.

    python -m course_utils.evaluate --dataset synthetic --model tiny-fashion-clip --pretrained embedded \\
        --task retrieval --output result.json

Tasks, each computed by the same task functions the notebooks call:

- ``retrieval`` (notebooks 01, 02, 04): full-gallery text→image and image→text Recall@K on the test split, with
  chance (``tasks.retrieval.evaluate_retrieval``).
- ``rerank`` (notebook 03): the dual encoder's Recall@K alone and re-ranked by a cross-encoder that notebook 03
  saved (``--reranker``; ``tasks.rerank.evaluate_reranker``).
- ``attributes`` (notebook 05): ASEN attribute-specific mAP of the model's global image embedding per condition
  (``tasks.attributes.evaluate_attribute_retrieval``).
- ``composed`` (notebook 06): composed-retrieval Recall@K of the parameter-free compositors (image only, text
  only, sum) on frozen features (``tasks.composed``).

``--checkpoint`` loads other weights into the model first (a state dict, or a dict with a ``"model"`` entry as the
course's caches store them).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from .data import attribute_retrieval_protocol
from .embed import encode_images, encode_texts
from .metrics import chance_recall
from .models.compositors import compose, make_compositor
from .tasks import attributes, composed, rerank, retrieval
from .tasks.experiment import Experiment, load_experiment

TASKS = ("retrieval", "rerank", "attributes", "composed")


def load_weights(bundle, checkpoint: str | Path):
    """``bundle`` with the weights of ``checkpoint`` (a state dict, or ``{"model": state dict}``)."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        model = copy.deepcopy(bundle.model)
        model.load_state_dict(state)
    except Exception as err:
        raise ValueError(
            f"--checkpoint {path} does not hold weights of {bundle.identity} "
            f"({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    return replace(bundle, model=model.eval(), identity=f"{bundle.identity}+{path.name}")


def evaluate(
    task: str, experiment: Experiment, bundle, dataset: str, seed: int = 0, reranker: str | None = None
) -> dict[str, float]:
    """The metrics of ``task`` for ``bundle`` on ``experiment``'s test split (fractions, not %)."""
    test, style = experiment.test, experiment.query_style
    if task == "retrieval":
        ks = (1, 5, 10)
        metrics = retrieval.evaluate_retrieval(bundle, test, style, ks)
        return {**metrics, **{f"chance R@{k}": chance_recall(k, len(test)) for k in ks}}
    if task == "rerank":
        if reranker is None:
            raise SystemExit("--task rerank needs --reranker FILE (notebook 03 writes outputs/models/reranker.pt)")
        saved = rerank.load_reranker(reranker)
        dual = bundle
        if saved.dual_identity != bundle.identity:  # the matcher was trained on another dual encoder's tokens
            model = copy.deepcopy(bundle.model)
            model.load_state_dict(saved.dual_state)
            dual = replace(bundle, model=model.eval(), identity=saved.dual_identity)
        return rerank.evaluate_reranker(dual, test, style, saved)
    if task == "attributes":
        conditions = attributes.DEFAULT_CONDITIONS.get(dataset) or list(test.attribute_names)
        protocol = attribute_retrieval_protocol(test, conditions, seed=seed)
        features = encode_images(bundle, test, progress=False)
        scores = attributes.evaluate_attribute_retrieval(
            lambda positions, condition: features[positions], protocol, test
        )
        return {f"mAP/{name}": value for name, value in scores.items()}
    if task == "composed":
        ks = (1, 10, 50)
        _, triplets = composed.composed_triplets(experiment.train, test, dataset, seed)
        queries = composed.composed_queries(test, triplets, composed.DEFAULT_MATCH[dataset])
        images = encode_images(bundle, test, progress=False)
        texts = encode_texts(bundle, queries.texts, progress=False)
        metrics = {}
        for name in ("image only", "text only", "sum"):
            composed_queries = compose(make_compositor(name, bundle.embed_dim), images[queries.reference_rows], texts)
            recall = composed.composed_recall_at_k(composed_queries, images, queries, ks)
            metrics.update({f"{name}/R@{k}": value for k, value in recall.items()})
        metrics.update({f"chance/R@{k}": v for k, v in composed.chance_composed_recall(queries, ks).items()})
        return metrics
    raise SystemExit(f"unknown --task {task!r}; choose one of {TASKS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help="synthetic (embedded) or a real format")
    parser.add_argument("--data-root", default=None, help="folder of a real dataset")
    parser.add_argument("--model", default="tiny-fashion-clip", help="open_clip model name or clip:NAME")
    parser.add_argument("--pretrained", default="embedded", help="embedded, an open_clip tag, or a checkpoint path")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--checkpoint", default=None, help="weights to load into the model first")
    parser.add_argument("--reranker", default=None, help="--task rerank: the re-ranker file notebook 03 saved")
    parser.add_argument("--profile", default="ci", choices=("ci", "full"), help="size of the procedural catalogue")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-size", type=int, default=None, help="keep only the first N test items")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON record here")
    args = parser.parse_args(argv)

    experiment = load_experiment(
        args.dataset,
        args.data_root,
        args.model,
        args.pretrained,
        args.profile,
        args.seed,
        args.device,
        test_size=args.test_size,
    )
    bundle = load_weights(experiment.bundle, args.checkpoint) if args.checkpoint else experiment.bundle
    metrics = evaluate(args.task, experiment, bundle, args.dataset, args.seed, args.reranker)
    record = {
        "task": args.task,
        "dataset": args.dataset,
        "data_root": args.data_root,
        "model": args.model,
        "pretrained": args.pretrained,
        "checkpoint": args.checkpoint,
        "model_identity": bundle.identity,
        "profile": args.profile,
        "seed": args.seed,
        "gallery_size": len(experiment.test),
        "metrics": metrics,
    }
    print(pd.Series(metrics, name=f"{args.task} · {args.dataset} · {bundle.identity}").round(4).to_string())
    if args.output is not None:
        try:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(record, indent=2) + "\n")
        except OSError as err:
            print(f"cannot write --output {args.output}: {err.strerror}; choose a writable path", file=sys.stderr)
            return 2
        print(f"record written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
