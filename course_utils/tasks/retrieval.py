"""Task: text–image retrieval — fine-tuning recipes and their evaluation (notebooks 01, 02, 04).

* notebook 02's full fine-tuning (:func:`finetuned_bundle`), cached so notebooks 03, 05, 06 and 07 start from the
  same model whether or not 02 ran first — as long as 02's ``finetune_epochs`` and ``finetune_lr`` equal
  :data:`FULL_FINETUNE`'s ``epochs`` and ``lr`` (its defaults and profiles do); 02 run with others trains and
  caches another model, and the later notebooks train their own with :data:`FULL_FINETUNE`;
* seed 000's two-stage recipe: train an MLP head on CLIP's output with CLIP frozen, then CLIP with the head frozen
  (:func:`head_only_bundle`, :func:`two_stage_bundle`);
* evaluation: full-gallery recall of one model (:func:`evaluate_retrieval`), of several (:func:`recall_by_model`),
  and the recall curve recorded during training (:func:`recall_evaluator`).

Models are in ``course_utils.models.heads``; the training loop is ``course_utils.train.fit``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..cache import artifact_key, artifact_path, cached_artifact, digest
from ..data.adapters import ImageTextDataset
from ..data.records import Catalogue
from ..embed import caption_texts, encode_images, encode_texts, weights_digest
from ..losses import clip_contrastive_loss
from ..metrics import IMAGE_TO_TEXT, TEXT_TO_IMAGE, chance_recall, full_gallery_recall
from ..models import ClipBundle
from ..models.heads import HeadedClip
from ..models.parts import set_trainable
from ..seeding import seed_everything
from ..train import TrainConfig, TrainHistory, clamp_logit_scale, contrastive_batch_loss, fit, recipe_key
from .experiment import Experiment

# Notebook 02's full fine-tuning recipe, scaled to the profile by ``epochs``.
FULL_FINETUNE = TrainConfig(epochs=3, batch_size=64, lr=1e-4, weight_decay=0.1, warmup_steps=10, seed=0)


# --- full fine-tuning (notebook 02) ------------------------------------------------------------------------------


def finetuned_bundle(
    experiment: Experiment,
    config: TrainConfig = FULL_FINETUNE,
    use_cache: bool = True,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    progress: bool = True,
) -> tuple[ClipBundle, TrainHistory]:
    """Notebook 02's full fine-tuning of the experiment's model on its ``train`` split (cached).

    The cache key holds ``config`` (all but ``eval_every``), so a later notebook calling with the default
    :data:`FULL_FINETUNE` reuses 02's model only when 02 ran with that recipe's epochs and learning rate.
    The base bundle is left untouched; a fine-tuned copy is returned with the training history (the history
    of a cached run is the one saved with its checkpoint).
    """
    base = experiment.bundle
    # Evaluations never change the weights (fit isolates their RNG), so eval_every is not part of the key.
    parts = [
        base.identity,
        weights_digest(base.model),
        experiment.train.fingerprint(),
        experiment.query_style,
        recipe_key(replace(config, eval_every=None), base.device),
    ]
    path = artifact_path("finetuned", parts, folder="models")
    wants_curve = evaluate is not None and bool(config.eval_every)
    model = copy.deepcopy(base.model)

    def train() -> dict:
        model.load_state_dict(base.model.state_dict())  # from the base weights, even after a rejected cache file
        seed_everything(config.seed)
        dataset = ImageTextDataset(
            experiment.train, base.preprocess, caption_style=experiment.query_style, seed=config.seed
        )
        history = fit(
            model,
            dataset,
            contrastive_batch_loss(base.tokenizer),
            config,
            evaluate=(lambda: evaluate(model)) if evaluate else None,
            progress=progress,
            after_step=clamp_logit_scale,
        )
        return {"model": model.state_dict(), "history": asdict(history)}

    # A cached run without the evaluation curve asked for, or with another eval_every's, is retrained (same
    # weights, now with that curve).
    state = cached_artifact(
        path,
        train,
        use_cache,
        validate=lambda s: model.load_state_dict(s["model"]),
        usable=lambda s: not wants_curve or _evaluated_every(s["history"], config.eval_every),
    )
    model.load_state_dict(state["model"])
    return _trained_bundle(base, model, "finetuned", path, use_cache), TrainHistory(**state["history"])


def _evaluated_every(history: dict, eval_every: int) -> bool:
    """Whether a saved run's evaluations are the ones :func:`~course_utils.train.fit` makes every ``eval_every``
    steps and once at the end, so that a student who changes ``eval_every`` gets that curve, not the cached one."""
    evaluated = [evaluation["step"] for evaluation in history["evals"]]
    total = evaluated[-1] if evaluated else 0  # the last is at the end (a step of unreadable images has no record)
    return bool(evaluated) and evaluated == sorted(set(range(eval_every, total, eval_every)) | {total})


def _trained_bundle(base: ClipBundle, model: nn.Module, recipe: str, path: Path, use_cache: bool) -> ClipBundle:
    """``base`` with ``model`` in eval mode: trained by ``recipe`` from ``base``, its checkpoint cached at ``path``
    (the identity names both, so features embedded with it are cached apart from the base's)."""
    model.eval()
    return replace(
        base,
        model=model,
        identity=f"{base.identity}+{recipe}-{artifact_key(path)}",
        history=None,
        checkpoint_path=path if use_cache else None,
    )


# --- seed 000's MLP head and two-stage recipe (notebook 02) ------------------------------------------------------


# Stage 1 of seed 000: only the head learns, on cached CLIP embeddings (cheap), so it gets more epochs and a
# larger learning rate than the backbone stage, which reuses notebook 02's full fine-tuning recipe.
HEAD_STAGE = TrainConfig(epochs=10, batch_size=64, lr=1e-3, weight_decay=0.0, warmup_steps=10, seed=0)
BACKBONE_STAGE = FULL_FINETUNE


class EmbeddingPairs(Dataset):
    """Cached ``(image embedding, text embedding)`` pairs: stage 1 trains the head without running CLIP."""

    def __init__(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor):
        if image_embeddings.shape != text_embeddings.shape:
            raise ValueError(
                f"paired embeddings must have one shape, got {tuple(image_embeddings.shape)} "
                f"and {tuple(text_embeddings.shape)}"
            )
        self.image_embeddings, self.text_embeddings = image_embeddings, text_embeddings

    def __len__(self) -> int:
        return self.image_embeddings.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"image_features": self.image_embeddings[index], "text_features": self.text_embeddings[index]}


def head_batch_loss(model: HeadedClip, batch: dict) -> torch.Tensor:
    """Stage 1 loss: the contrastive loss of the heads' outputs on cached CLIP embeddings ``(B, d)``."""
    device = model.logit_scale.device
    image = F.normalize(model.image_head(batch["image_features"].to(device)), dim=-1)
    text = F.normalize(model.text_head(batch["text_features"].to(device)), dim=-1)
    return clip_contrastive_loss(image, text, model.logit_scale)


def train_head_stage(
    model: HeadedClip, dataset: EmbeddingPairs, config: TrainConfig = HEAD_STAGE, progress: bool = True
) -> TrainHistory:
    """Stage 1: freeze CLIP, train both heads on cached embeddings (the whole head is "new", so lr = head lr)."""
    set_trainable(model.clip, False)
    set_trainable(model.heads(), True)
    heads = [p for head in model.heads() for p in head.parameters()]
    return fit(model, dataset, head_batch_loss, config, head_parameters=heads, progress=progress)


def train_backbone_stage(
    model: HeadedClip,
    dataset: Dataset,
    tokenizer: Callable,
    config: TrainConfig = BACKBONE_STAGE,
    progress: bool = True,
) -> TrainHistory:
    """Stage 2: freeze the heads, train CLIP end to end on (image, caption) pairs through them."""
    set_trainable(model.clip, True)
    set_trainable(model.heads(), False)
    history = fit(
        model, dataset, contrastive_batch_loss(tokenizer), config, progress=progress, after_step=clamp_logit_scale
    )
    set_trainable(model, True)
    return history


def _head_stage(
    experiment: Experiment, config: TrainConfig, hidden_dim: int | None, progress: bool
) -> tuple[HeadedClip, TrainHistory]:
    base = experiment.bundle
    texts = caption_texts(experiment.train, experiment.query_style)
    pairs = EmbeddingPairs(
        encode_images(base, experiment.train, progress=progress), encode_texts(base, texts, progress=progress)
    )
    seed_everything(config.seed)  # the heads' initialisation draws from the global RNG
    model = HeadedClip(copy.deepcopy(base.model), base.embed_dim, hidden_dim).to(base.device)
    return model, train_head_stage(model, pairs, config, progress)


def head_only_bundle(
    experiment: Experiment, head_config: TrainConfig = HEAD_STAGE, hidden_dim: int | None = None, progress: bool = True
) -> tuple[ClipBundle, TrainHistory]:
    """Stage 1 alone: CLIP frozen, heads trained on cached embeddings (seconds, so not cached on disk)."""
    model, history = _head_stage(experiment, head_config, hidden_dim, progress)
    model.eval()
    base = experiment.bundle
    identity = f"{base.identity}+head-only-{digest([recipe_key(head_config, base.device), hidden_dim])}"
    return replace(base, model=model, identity=identity, history=None, checkpoint_path=None), history


def two_stage_bundle(
    experiment: Experiment,
    head_config: TrainConfig = HEAD_STAGE,
    backbone_config: TrainConfig = BACKBONE_STAGE,
    hidden_dim: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> tuple[ClipBundle, dict[str, TrainHistory]]:
    """Seed 000's two-stage fine-tuning of the experiment's model on its ``train`` split (notebook 02, cached).

    Stage 1 trains a :class:`HeadedClip`'s heads on cached CLIP embeddings of the train split with CLIP frozen
    (:func:`head_only_bundle`); stage 2 trains CLIP through the frozen heads. The base bundle is left untouched.

    Returns:
        ``(bundle, {"head": stage-1 history, "backbone": stage-2 history})``; the bundle's model is the
        :class:`HeadedClip`.
    """
    base = experiment.bundle
    parts = [
        base.identity,
        weights_digest(base.model),
        experiment.train.fingerprint(),
        experiment.query_style,
        recipe_key(head_config, base.device),
        recipe_key(replace(backbone_config, eval_every=None), base.device),
        hidden_dim,
    ]
    path = artifact_path("two-stage", parts, folder="models")
    built = {}

    def load_model(state: dict) -> None:
        model = HeadedClip(copy.deepcopy(base.model), base.embed_dim, hidden_dim).to(base.device)
        model.load_state_dict(state["model"])
        built["model"] = model

    def train() -> dict:
        model, head_history = _head_stage(experiment, head_config, hidden_dim, progress)
        seed_everything(backbone_config.seed)
        images = ImageTextDataset(
            experiment.train, base.preprocess, caption_style=experiment.query_style, seed=backbone_config.seed
        )
        histories = {
            "head": head_history,
            "backbone": train_backbone_stage(model, images, base.tokenizer, backbone_config, progress),
        }
        built["model"] = model
        return {"model": model.state_dict(), "histories": {k: asdict(h) for k, h in histories.items()}}

    state = cached_artifact(path, train, use_cache, validate=load_model)
    tuned = _trained_bundle(base, built["model"], "two-stage", path, use_cache)
    return tuned, {name: TrainHistory(**h) for name, h in state["histories"].items()}


# --- evaluation (notebooks 01, 02, 04) ----------------------------------------------------------------------------


def recall_evaluator(
    bundle: ClipBundle, gallery: Catalogue, query_style: str | None, ks: tuple[int, ...] = (1, 5, 10)
) -> Callable[[nn.Module], dict]:
    """A ``model -> {"R@K": ...}`` callback: text->image recall on the full ``gallery`` (for ``fit``'s ``evaluate``).

    The model is swapped into a copy of ``bundle`` (same preprocess and tokenizer). Embeddings go through the
    disk cache, keyed by the current weights: a rerun of the same training reuses them, and the starting model's
    point (step 0) reuses what notebook 01 computed.
    """
    texts = caption_texts(gallery, query_style)

    def evaluate(model: nn.Module) -> dict:
        current = replace(bundle, model=model)
        images = encode_images(current, gallery, progress=False)
        queries = encode_texts(current, texts, progress=False)
        recalls = full_gallery_recall(queries, images, torch.arange(len(gallery)), ks)
        return {f"R@{k}": value for k, value in recalls.items()}

    return evaluate


def evaluate_retrieval(
    bundle: ClipBundle, gallery: Catalogue, query_style: str | None, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Full-gallery recall of one model in both directions: ``{"text→image R@K": ..., "image→text R@K": ...}``.

    Item i's caption is the query whose target is item i's image, and vice versa (the protocol of notebook 01).
    """
    texts = caption_texts(gallery, query_style)
    targets = torch.arange(len(gallery))
    images = encode_images(bundle, gallery, progress=False)
    queries = encode_texts(bundle, texts, progress=False)
    return {
        **{f"{TEXT_TO_IMAGE} R@{k}": v for k, v in full_gallery_recall(queries, images, targets, ks).items()},
        **{f"{IMAGE_TO_TEXT} R@{k}": v for k, v in full_gallery_recall(images, queries, targets, ks).items()},
    }


def recall_by_model(
    bundles: dict[str, ClipBundle], gallery: Catalogue, query_style: str | None, ks: tuple[int, ...] = (1, 5, 10)
) -> pd.DataFrame:
    """Full-gallery recall of several models on one gallery, both directions, with a chance row (notebooks 02, 04).

    Args:
        bundles: ``{row name: bundle}``.
        gallery: the test catalogue; item i's image is the target of its caption i and vice versa.
        query_style: caption style of the text side.
        ks: cut-offs.

    Returns:
        DataFrame indexed by model name (plus ``"chance"``), columns ``text→image R@K`` and ``image→text R@K``.
    """
    rows = {name: evaluate_retrieval(bundle, gallery, query_style, ks) for name, bundle in bundles.items()}
    rows["chance"] = {f"{d} R@{k}": chance_recall(k, len(gallery)) for d in (TEXT_TO_IMAGE, IMAGE_TO_TEXT) for k in ks}
    return pd.DataFrame.from_dict(rows, orient="index")
