"""The set-up every notebook shares: catalogue x model, and the cached fine-tuned model of notebook 02.

``load_experiment`` turns the notebook parameters (dataset, data_root, model, pretrained, profile, seed,
device) into a catalogue with its splits and a model bundle. ``finetuned_bundle`` returns notebook 02's
fully fine-tuned dual encoder, training it once and caching the checkpoint (keyed by base weights, data and
recipe), so notebooks 03, 05 and 06 start from the same model whether or not 02 ran first.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch

from .cache import cache_lock, torch_save_atomic
from .data import Catalogue, load_catalogue
from .data.adapters import ImageTextDataset
from .data.registry import loader_accepts
from .embed import weights_digest
from .models import ClipBundle, load_clip
from .paths import cache_dir
from .seeding import seed_everything
from .train import TrainConfig, TrainHistory, clamp_logit_scale, contrastive_batch_loss, fit

FINETUNE_CODE_VERSION = 1

# Notebook 02's full fine-tuning recipe, scaled to the profile by ``epochs``.
FULL_FINETUNE = TrainConfig(epochs=3, batch_size=64, lr=1e-4, weight_decay=0.1, warmup_steps=10, seed=0)


@dataclass
class Experiment:
    """A catalogue, its splits and a model bundle: what a notebook evaluates."""

    catalogue: Catalogue
    bundle: ClipBundle
    train: Catalogue
    test: Catalogue
    query_style: str | None  # caption style used as text queries (None: first caption)


def load_experiment(dataset: str = "synthetic", data_root: str | None = None, model: str = "tiny-fashion-clip",
                    pretrained: str | None = "embedded", profile: str = "ci", seed: int = 0, device: str = "auto",
                    test_size: int | None = None) -> Experiment:
    """Load the catalogue and the model named by a notebook's parameters.

    Args:
        dataset: ``"synthetic"`` (embedded default) or a real format (see ``cu.data.available_catalogues()``).
        data_root: folder of a real dataset.
        model, pretrained: see :func:`course_utils.models.load_clip`; ``"embedded"`` pretrains the tiny CLIP
            on the procedural catalogue (cached after the first run).
        profile: ``"ci"`` or ``"full"`` — the procedural catalogue's size.
        seed: catalogue and training seed.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        test_size: keep only the first ``test_size`` test items (real datasets can be large).
    """
    seed_everything(seed)
    if dataset == "synthetic":
        catalogue = load_catalogue("synthetic", size=profile, seed=seed)
    else:
        catalogue = load_catalogue(dataset, data_root, **({"seed": seed} if loader_accepts(dataset, "seed") else {}))
    # The embedded tiny CLIP is always pretrained on the procedural catalogue (real datasets have no 'pretrain').
    pretrain_catalogue = None
    if pretrained == "embedded":
        pretrain_catalogue = catalogue if dataset == "synthetic" else load_catalogue("synthetic", size=profile, seed=seed)
    bundle = load_clip(model, pretrained, device=device, pretrain_catalogue=pretrain_catalogue)
    test = catalogue.split("test")
    if test_size is not None and len(test) > test_size:
        test = test.subset(test.ids[:test_size], name=test.name)
    query_style = "description" if dataset == "synthetic" else None
    return Experiment(catalogue, bundle, catalogue.split("train"), test, query_style)


def finetuned_bundle(experiment: Experiment, config: TrainConfig = FULL_FINETUNE, use_cache: bool = True,
                     evaluate: Callable[[torch.nn.Module], dict] | None = None, progress: bool = True) -> tuple[ClipBundle, TrainHistory]:
    """Notebook 02's full fine-tuning of the experiment's model on its ``train`` split (cached).

    The base bundle is left untouched; a fine-tuned copy is returned with the training history (the history
    of a cached run is the one saved with its checkpoint).
    """
    base = experiment.bundle
    # Evaluations never change the weights (fit isolates their RNG), so eval_every is not part of the key.
    key = hashlib.sha256(json.dumps(
        [FINETUNE_CODE_VERSION, base.identity, weights_digest(base.model), experiment.train.fingerprint(),
         experiment.query_style, asdict(replace(config, eval_every=None))]).encode()).hexdigest()[:16]
    path = cache_dir() / "models" / f"finetuned-{key}.pt"
    model = copy.deepcopy(base.model)
    with cache_lock(path):
        state = torch.load(path, map_location=base.device, weights_only=False) if use_cache and path.exists() else None
        wants_curve = evaluate is not None and bool(config.eval_every)
        if state is not None and (state["history"]["evals"] or not wants_curve):
            model.load_state_dict(state["model"])
            history = TrainHistory(**state["history"])
        else:  # not cached, or cached without the evaluation curve asked for: (re)train — same weights
            seed_everything(config.seed)
            dataset = ImageTextDataset(experiment.train, base.preprocess, caption_style=experiment.query_style, seed=config.seed)
            history = fit(model, dataset, contrastive_batch_loss(base.tokenizer), config,
                          evaluate=(lambda: evaluate(model)) if evaluate else None, progress=progress,
                          after_step=clamp_logit_scale)
            if use_cache:
                torch_save_atomic({"model": model.state_dict(), "history": asdict(history)}, path)
    model.eval()
    tuned = replace(base, model=model, identity=f"{base.identity}+finetuned-{key}", history=None, checkpoint_path=path)
    return tuned, history
