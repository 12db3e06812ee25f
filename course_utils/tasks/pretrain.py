"""Task: pretrain the embedded tiny CLIP on the procedural catalogue (the course's default model; notebook 01).

Real CLIP weights cannot be downloaded on course machines, so the course pretrains its own small CLIP on the
catalogue's ``pretrain`` split with short web-style captions. The checkpoint is cached through
``course_utils.cache``, keyed by the model config, the data fingerprint, the recipe and the caption style, so every
notebook after the first reuses it.
"""

from __future__ import annotations

import copy
import json

import torch

from ..cache import artifact_key, artifact_path, cached_artifact
from ..data.adapters import ImageTextDataset
from ..data.records import Catalogue
from ..models.clip_loader import ClipBundle, resolve_device
from ..models.tiny_clip import TINY_MODEL, create_tiny_clip, tiny_clip_config
from ..seeding import seed_everything
from ..train import TrainConfig, clamp_logit_scale, contrastive_batch_loss, fit, recipe_key

# Pretraining recipe of the embedded default (fast on 2 CPU cores).
DEFAULT_PRETRAIN = TrainConfig(epochs=6, batch_size=128, lr=1e-3, weight_decay=0.1, warmup_steps=40, seed=0)


def pretrain_key_parts(
    pretrain: Catalogue, config: TrainConfig, caption_style: str, device: str | torch.device
) -> dict:
    """What the pretrained weights depend on: model config, data, recipe (with the precision it trains in on
    ``device``) and captions."""
    return {
        "model": json.loads(tiny_clip_config()),
        "data": pretrain.fingerprint(),
        "train": recipe_key(config, device),
        "captions": caption_style,
    }


def pretrained_tiny_clip(
    catalogue: Catalogue,
    config: TrainConfig = DEFAULT_PRETRAIN,
    caption_style: str = "web",
    device: str | torch.device = "cpu",
    use_cache: bool = True,
    progress: bool = True,
) -> ClipBundle:
    """The tiny CLIP pretrained on ``catalogue``'s ``pretrain`` split (trained once, then loaded from the cache).

    Args:
        catalogue: a catalogue with a ``pretrain`` split (the procedural one by default).
        config: training recipe; part of the cache key.
        caption_style: captions to pretrain on (``"web"``: short, partial, noisy — like web alt-text).
        device: where to train.
        use_cache: reuse/write ``data/cache/tiny-clip/``.
        progress: show a progress bar.

    Returns:
        A :class:`ClipBundle` whose ``history`` holds the pretraining loss curve.
    """
    device = resolve_device(device)
    pretrain = catalogue.split("pretrain")
    parts = pretrain_key_parts(pretrain, config, caption_style, device)
    path = artifact_path("tiny-clip", parts, prefix=TINY_MODEL)
    seed_everything(config.seed)
    model, preprocess, tokenizer = create_tiny_clip(device)
    initial = copy.deepcopy(model.state_dict())  # validate loads a cached file into model, even one it then rejects

    def train() -> dict:
        model.load_state_dict(initial)  # from the seeded initialisation, even after a rejected cache file
        dataset = ImageTextDataset(pretrain, preprocess, caption_style=caption_style, seed=config.seed)
        result = fit(
            model,
            dataset,
            contrastive_batch_loss(tokenizer),
            config,
            device=device,
            progress=progress,
            after_step=clamp_logit_scale,
        )
        return {"model": model.state_dict(), "history": result.steps}

    state = cached_artifact(path, train, use_cache, validate=lambda s: model.load_state_dict(s["model"]))
    model.load_state_dict(state["model"])
    model.eval()
    key = artifact_key(path)
    return ClipBundle(
        model,
        preprocess,
        tokenizer,
        int(model.text_projection.shape[1]),
        f"open_clip:{TINY_MODEL}:embedded-{key}",
        device,
        history=state["history"],
        checkpoint_path=path if use_cache else None,
    )
