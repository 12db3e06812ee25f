"""One evaluation entry point (as CLIP_benchmark's ``eval``): dataset x model x task -> a table and a JSON record.

    python -m course_utils.evaluate --dataset synthetic --model tiny-fashion-clip --pretrained embedded \\
        --task retrieval --output result.json

Tasks, each computed by the same task functions the notebooks call:

- ``retrieval`` (notebooks 01, 02, 04): full-gallery text→image and image→text Recall@K on the test split, with
  chance (``tasks.retrieval.evaluate_retrieval``).
- ``rerank`` (notebook 03): the dual encoder's Recall@K alone and re-ranked by a cross-encoder that notebook 03
  saved (``--reranker``; ``tasks.rerank.evaluate_reranker``). The dual encoder evaluated is the one saved with the
  re-ranker (its tokens are what the matcher was trained on), and the record names it.
- ``attributes`` (notebook 05): ASEN attribute-specific mAP of the model's global image embedding per condition
  (``tasks.attributes.evaluate_attribute_retrieval``).
- ``composed`` (notebook 06): composed-retrieval Recall@K of the parameter-free compositors (image only, text
  only, sum) on frozen features (``tasks.composed``).

``--checkpoint`` loads other weights into the model first (a state dict, or a dict with a ``"model"`` entry as the
course's caches store them); with ``--task rerank`` it must hold the weights of the re-ranker's own dual encoder.

Recall tasks report fixed cut-offs (``RECALL_KS``), so they need a test split of at least the largest K items (one
more for ``composed``, whose rankings leave the query's reference image out); ``--test-size`` below that is refused.
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from .checks import whole_number
from .cli import check_output_file, device_name, exit_on_load_errors
from .data import attribute_retrieval_protocol
from .embed import encode_images, encode_texts
from .errors import error_summary
from .json_files import write_json
from .metrics import chance_recall
from .models import clip_loader
from .models.clip_loader import BadCheckpoint
from .models.compositors import compose, make_compositor
from .seeding import MAX_SEED
from .tasks import attributes, composed, rerank, retrieval
from .tasks.experiment import Experiment, load_experiment

TASKS = ("retrieval", "rerank", "attributes", "composed")

#: The Recall@K cut-offs each recall task reports.
RECALL_KS = {"retrieval": (1, 5, 10), "rerank": (1, 5, 10), "composed": (1, 10, 50)}


def load_weights(bundle, checkpoint: str | Path):
    """``bundle`` with the weights of ``checkpoint``, read as ``--weights`` files are
    (:func:`course_utils.models.clip_loader.load_weights`: a state dict, or ``{"model": state dict}``, weights only),
    its identity naming the file by its bytes (:func:`~course_utils.models.clip_loader.weights_file_label`)."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file")
    model = copy.deepcopy(bundle.model)
    try:
        clip_loader.load_weights(model, path, bundle.identity)
    except BadCheckpoint as err:
        raise ValueError(f"--checkpoint {path} does not hold weights of {bundle.identity}: {err}") from None
    return replace(bundle, model=model.eval(), identity=f"{bundle.identity}+{clip_loader.weights_file_label(path)}")


def reranker_dual_encoder(bundle, saved: rerank.SavedReranker, reranker: str, checkpoint: str | None = None):
    """``bundle`` with the weights and identity of the dual encoder ``saved``'s matcher was trained on.

    The matcher reads that encoder's tokens, so the re-ranker is only measured with it. ``checkpoint`` is the
    ``--checkpoint`` whose weights ``bundle`` holds, if any: it must be those very weights, else ``ValueError``
    naming both (evaluating one encoder while the record names another would mislead).
    """
    if checkpoint is not None and not _same_weights(bundle.model.state_dict(), saved.dual_state):
        raise ValueError(
            f"--checkpoint {checkpoint} ({bundle.identity}) is not the dual encoder that --reranker {reranker} was "
            f"trained on ({saved.dual_identity}); drop --checkpoint to evaluate the re-ranker with its own dual encoder"
        )
    model = copy.deepcopy(bundle.model)
    try:
        model.load_state_dict(saved.dual_state)
    except RuntimeError as err:
        raise ValueError(
            f"--reranker {reranker} was trained on {saved.dual_identity}, whose weights do not fit "
            f"{bundle.identity} ({error_summary(err)}); pass the --model it was trained with"
        ) from None
    return replace(bundle, model=model.eval(), identity=saved.dual_identity)


def _same_weights(state: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same tensors under the same names."""
    return state.keys() == other.keys() and all(torch.equal(state[name].cpu(), other[name].cpu()) for name in state)


def _check_test_size(task: str, test_size: int) -> None:
    """``SystemExit`` naming ``--test-size`` when the test split is smaller than ``task``'s largest K needs."""
    if task not in RECALL_KS:
        return
    largest_k = max(RECALL_KS[task])
    needed = largest_k + 1 if task == "composed" else largest_k  # composed rankings leave the reference image out
    if test_size < needed:
        raise SystemExit(
            f"--task {task} reports R@{largest_k}, so it needs a test split of at least {needed} items; this one has "
            f"{test_size}: raise --test-size to {needed} or more"
        )


def evaluate(
    task: str,
    experiment: Experiment,
    bundle,
    dataset: str,
    seed: int = 0,
    reranker: str | None = None,
    checkpoint: str | None = None,
) -> tuple[dict[str, float], str]:
    """The metrics of ``task`` on ``experiment``'s test split, and the identity of the model they measure.

    Args:
        task: one of ``TASKS``.
        experiment: the catalogue, model and splits (``tasks.experiment.load_experiment``).
        bundle: the model to evaluate (``experiment.bundle``, or it with ``--checkpoint``'s weights).
        dataset: the dataset name (picks the attribute conditions and composed-retrieval matches).
        seed: seed of the attribute protocol and the composed triplets.
        reranker: ``--task rerank``: the file notebook 03 saved.
        checkpoint: the ``--checkpoint`` whose weights ``bundle`` holds, if any (see :func:`reranker_dual_encoder`).

    Returns:
        ``{name: value}`` (fractions, not %), and ``bundle.identity`` or, for ``rerank``, the identity of the saved
        re-ranker's dual encoder, which is the one evaluated.
    """
    test, style = experiment.test, experiment.query_style
    _check_test_size(task, len(test))
    if task == "retrieval":
        ks = RECALL_KS[task]
        metrics = retrieval.evaluate_retrieval(bundle, test, style, ks)
        return {**metrics, **{f"chance R@{k}": chance_recall(k, len(test)) for k in ks}}, bundle.identity
    if task == "rerank":
        if reranker is None:
            raise SystemExit(
                "--task rerank needs --reranker FILE (notebook 03 writes outputs/models/reranker.pt, or "
                "outputs/<profile>/models/reranker.pt when run in another profile than full, e.g. outputs/ci/)"
            )
        with exit_on_load_errors(f"--reranker {reranker}"):  # a missing or damaged file, or another model's
            saved = rerank.load_reranker(reranker)
            dual = reranker_dual_encoder(bundle, saved, reranker, checkpoint)
        return rerank.evaluate_reranker(dual, test, style, saved, RECALL_KS[task]), dual.identity
    if task == "attributes":
        conditions = attributes.default_conditions(dataset, test)
        try:
            protocol = attribute_retrieval_protocol(test, conditions, seed=seed)
        except ValueError as err:  # too few items with a condition in a small test split
            raise SystemExit(f"--task attributes on {len(test)} test items: {err}; or raise --test-size") from None
        # the protocol drops a query whose value no candidate has: in a small split that can be every query
        unqueried = [condition for condition, split in protocol.items() if not split.query_ids]
        if unqueried:
            raise SystemExit(
                f"--task attributes on {len(test)} test items: no query is left for condition(s) "
                f"{', '.join(map(repr, unqueried))} (no candidate shares a query's value): raise --test-size"
            )
        features = encode_images(bundle, test, progress=False)
        scores = attributes.evaluate_attribute_retrieval(
            lambda positions, condition: features[positions], protocol, test
        )
        return {f"mAP/{name}": value for name, value in scores.items()}, bundle.identity
    if task == "composed":
        ks = RECALL_KS[task]
        try:
            match = composed.default_match(dataset)
        except ValueError as err:  # a dataset registered without saying what counts as the target
            raise SystemExit(f"--task composed: {err}") from None
        # the queries as notebook 06 draws them, on the test items kept
        _, triplets = composed.composed_triplets(experiment.train, test, dataset, seed)
        queries = composed.composed_queries(test, triplets, match)
        # the whole test split's protocol, to count its queries whose reference or target --test-size left out
        # (deepfashion-multimodal draws its swaps from the items given, so its kept queries are another draw: the
        # count is of the whole split's, never one draw subtracted from another)
        _, every_triplet = composed.composed_triplets(
            experiment.train, experiment.catalogue.split("test"), dataset, seed
        )
        left_out = composed.composed_queries(test, every_triplet, match).dropped
        if not len(queries):
            raise SystemExit(
                f"none of the test split's {left_out} composed queries has its reference and target among the "
                f"{len(test)} test items kept: raise --test-size, or leave it out"
            )
        images = encode_images(bundle, test, progress=False)
        texts = encode_texts(bundle, queries.texts, progress=False)
        metrics = {"queries": len(queries), "queries left out (outside the test items kept)": left_out}
        for name in ("image only", "text only", "sum"):
            composed_queries = compose(make_compositor(name, bundle.embed_dim), images[queries.reference_rows], texts)
            recall = composed.composed_recall_at_k(composed_queries, images, queries, ks)
            metrics.update({f"{name}/R@{k}": value for k, value in recall.items()})
        metrics.update({f"chance/R@{k}": v for k, v in composed.chance_composed_recall(queries, ks).items()})
        return metrics, bundle.identity
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
    parser.add_argument("--seed", type=whole_number(0, MAX_SEED), default=0)
    parser.add_argument("--test-size", type=whole_number(1), default=None, help="keep only the first N test items")
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--output", type=Path, default=None, help="write the JSON record here")
    args = parser.parse_args(argv)
    if args.output is not None:
        args.output = check_output_file(parser, "--output", args.output)

    with exit_on_load_errors("the dataset and model", args.dataset, args.data_root):
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
    metrics, model_identity = evaluate(
        args.task, experiment, bundle, args.dataset, args.seed, args.reranker, args.checkpoint
    )
    if model_identity != bundle.identity:
        print(
            f"evaluated {model_identity}, the dual encoder saved with --reranker {args.reranker}, not {bundle.identity}"
        )
    record = {
        "task": args.task,
        "dataset": args.dataset,
        "data_root": args.data_root,
        "model": args.model,
        "pretrained": args.pretrained,
        "checkpoint": args.checkpoint,
        "reranker": args.reranker,
        "model_identity": model_identity,
        "profile": args.profile,
        "seed": args.seed,
        "gallery_size": len(experiment.test),
        "metrics": metrics,
    }
    print(pd.Series(metrics, name=f"{args.task} · {args.dataset} · {model_identity}").round(4).to_string())
    if args.output is not None:
        try:
            write_json(args.output, record)
        except OSError as err:
            print(f"cannot write --output {args.output}: {err.strerror}; choose a writable path", file=sys.stderr)
            return 2
        print(f"record written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
