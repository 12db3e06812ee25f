"""Fine-tuning recipes beyond full fine-tuning: seed 000's two-stage recipe and seed 002's random re-init.

Notebook 02 compares full fine-tuning (``course_utils.experiment.finetuned_bundle``) with the two-stage recipe
of seed 000: add an MLP head on CLIP's output, train the head with CLIP frozen, then train CLIP with the head
frozen (:func:`two_stage_bundle`, cached like ``finetuned_bundle``). Notebook 04 re-initialises the same
architecture as seed 002 did (:func:`normal_init_`) and trains it from scratch; both notebooks record the same
recall curve during training (:func:`recall_evaluator`) and compare models with :func:`recall_by_model`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, replace

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .cache import cache_lock, torch_save_atomic
from .data.adapters import ImageTextDataset
from .data.records import Catalogue
from .embed import caption_texts, encode_images, encode_texts, weights_digest
from .experiment import FULL_FINETUNE, Experiment
from .losses import clip_contrastive_loss
from .metrics import IMAGE_TO_TEXT, TEXT_TO_IMAGE, chance_recall, full_gallery_recall
from .models import ClipBundle
from .paths import cache_dir
from .seeding import seed_everything
from .train import TrainConfig, TrainHistory, clamp_logit_scale, contrastive_batch_loss, fit, set_trainable

TWO_STAGE_CODE_VERSION = 1

# Stage 1 of seed 000: only the head learns, on cached CLIP embeddings (cheap), so it gets more epochs and a
# larger learning rate than the backbone stage, which reuses notebook 02's full fine-tuning recipe.
HEAD_STAGE = TrainConfig(epochs=10, batch_size=64, lr=1e-3, weight_decay=0.0, warmup_steps=10, seed=0)
BACKBONE_STAGE = FULL_FINETUNE


# --- seed 002's random re-initialisation (notebook 04) ------------------------------------------------------------


def normal_init_(model: nn.Module, std: float = 0.02, seed: int = 0) -> int:
    """Seed 002's ``initialize_weights_randomly``: every trainable tensor <- N(0, std²), in place.

    Unlike a library's own initialisation this also sets LayerNorm gains, biases and CLIP's ``logit_scale`` to
    values near 0 (so the softmax temperature becomes exp(0) = 1). Notebook 04 evaluates it next to
    open_clip's initialisation.

    Args:
        model: any module; parameters with ``requires_grad=False`` are left untouched (as in seed 002).
        std: standard deviation of the normal distribution (0.02 in seed 002).
        seed: seed of the draw (a private generator; the global RNG is not consumed).

    Returns:
        The number of scalars re-initialised.
    """
    generator = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                values = torch.empty(param.shape, dtype=torch.float32).normal_(0.0, std, generator=generator)
                param.copy_(values.to(param.device, param.dtype))
                count += param.numel()
    return count


# --- seed 000's MLP head and two-stage recipe (notebook 02) --------------------------------------------------------


class ResidualMLPHead(nn.Module):
    """``y = x + W2 GELU(W1 x)`` on a CLIP embedding; W2 starts at zero, so the head starts as the identity.

    Starting from the identity means stage 1 begins exactly at the zero-shot model and can only move away
    from it when the loss says so.

    Args:
        dim: embedding size d.
        hidden_dim: width of the hidden layer (default 2 d).

    Shapes:
        ``(n, d) -> (n, d)``.
    """

    def __init__(self, dim: int, hidden_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim or 2 * dim)
        self.fc2 = nn.Linear(hidden_dim or 2 * dim, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(x)))


class HeadedClip(nn.Module):
    """A CLIP model with an MLP head on each embedding (seed 000: "an MLP layer on the output of CLIP").

    The heads see CLIP's L2-normalised embeddings, the same vectors ``course_utils.embed`` caches, so stage 1
    can train them on cached embeddings and stage 2 on images end to end without a mismatch.

    Args:
        clip: an open_clip / OpenAI CLIP model (``encode_image``, ``encode_text``, ``logit_scale``).
        embed_dim: size of CLIP's joint embedding d.
        hidden_dim: hidden width of each head (default 2 d).
    """

    def __init__(self, clip: nn.Module, embed_dim: int, hidden_dim: int | None = None):
        super().__init__()
        self.clip = clip
        self.image_head = ResidualMLPHead(embed_dim, hidden_dim)
        self.text_head = ResidualMLPHead(embed_dim, hidden_dim)

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's log inverse temperature (shared by both stages)."""
        return self.clip.logit_scale

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W) -> (n, d)`` (not normalised, like CLIP's own ``encode_image``)."""
        return self.image_head(F.normalize(self.clip.encode_image(images), dim=-1))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(n, context_length) int -> (n, d)``."""
        return self.text_head(F.normalize(self.clip.encode_text(tokens), dim=-1))

    def heads(self) -> list[nn.Module]:
        return [self.image_head, self.text_head]


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
    identity = f"{base.identity}+head-only-{_digest([asdict(head_config), hidden_dim])}"
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
    key = _digest(
        [
            TWO_STAGE_CODE_VERSION,
            base.identity,
            weights_digest(base.model),
            experiment.train.fingerprint(),
            experiment.query_style,
            asdict(head_config),
            asdict(replace(backbone_config, eval_every=None)),
            hidden_dim,
        ]
    )
    path = cache_dir() / "models" / f"two-stage-{key}.pt"
    with cache_lock(path):
        if use_cache and path.exists():
            model = HeadedClip(copy.deepcopy(base.model), base.embed_dim, hidden_dim).to(base.device)
            state = torch.load(path, map_location=base.device, weights_only=False)
            model.load_state_dict(state["model"])
            histories = {name: TrainHistory(**h) for name, h in state["histories"].items()}
        else:
            model, head_history = _head_stage(experiment, head_config, hidden_dim, progress)
            seed_everything(backbone_config.seed)
            images = ImageTextDataset(
                experiment.train, base.preprocess, caption_style=experiment.query_style, seed=backbone_config.seed
            )
            histories = {
                "head": head_history,
                "backbone": train_backbone_stage(model, images, base.tokenizer, backbone_config, progress),
            }
            if use_cache:
                torch_save_atomic(
                    {"model": model.state_dict(), "histories": {k: asdict(h) for k, h in histories.items()}}, path
                )
    model.eval()
    tuned = replace(base, model=model, identity=f"{base.identity}+two-stage-{key}", history=None, checkpoint_path=path)
    return tuned, histories


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


# --- the recall curve recorded during training (notebooks 02 and 04) ----------------------------------------------


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
    texts = caption_texts(gallery, query_style)
    targets = torch.arange(len(gallery))
    rows = {}
    for name, bundle in bundles.items():
        images = encode_images(bundle, gallery, progress=False)
        queries = encode_texts(bundle, texts, progress=False)
        rows[name] = {
            **{f"{TEXT_TO_IMAGE} R@{k}": v for k, v in full_gallery_recall(queries, images, targets, ks).items()},
            **{f"{IMAGE_TO_TEXT} R@{k}": v for k, v in full_gallery_recall(images, queries, targets, ks).items()},
        }
    rows["chance"] = {f"{d} R@{k}": chance_recall(k, len(gallery)) for d in (TEXT_TO_IMAGE, IMAGE_TO_TEXT) for k in ks}
    return pd.DataFrame.from_dict(rows, orient="index")
