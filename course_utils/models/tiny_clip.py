"""The embedded default model: a tiny open_clip CLIP pretrained by the course on the procedural catalogue.

Real CLIP weights cannot be downloaded on course machines, so the course pretrains its own small CLIP (an
open_clip JSON config, ``model_configs/tiny-fashion-clip.json``, registered with open_clip — not a new
architecture) on the catalogue's ``pretrain`` split with short web-style captions. The checkpoint is cached,
keyed by the config, the data fingerprint, the hyper-parameters and ``PRETRAIN_CODE_VERSION``, so every
notebook after the first reuses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from ..cache import cache_lock, torch_save_atomic
from ..data.adapters import ImageTextDataset
from ..data.records import Catalogue
from ..paths import cache_dir
from ..seeding import seed_everything
from ..train import TrainConfig, clamp_logit_scale, contrastive_batch_loss, fit

TINY_MODEL = "tiny-fashion-clip"
CONFIG_DIR = Path(__file__).parent / "model_configs"
PRETRAIN_CODE_VERSION = 1

# Pretraining recipe of the embedded default (fast on 2 CPU cores).
DEFAULT_PRETRAIN = TrainConfig(epochs=6, batch_size=128, lr=1e-3, weight_decay=0.1, warmup_steps=40, seed=0)


def register_course_configs() -> None:
    """Make the course's JSON model configs known to open_clip (idempotent)."""
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def pretrain_tiny_clip(
    catalogue: Catalogue,
    config: TrainConfig = DEFAULT_PRETRAIN,
    caption_style: str = "web",
    device: str | torch.device = "cpu",
    use_cache: bool = True,
    progress: bool = True,
):
    """Pretrain (or load from cache) the tiny CLIP on ``catalogue``'s ``pretrain`` split.

    Args:
        catalogue: a catalogue with a ``pretrain`` split (the procedural one by default).
        config: training recipe; part of the cache key.
        caption_style: captions to pretrain on (``"web"``: short, partial, noisy — like web alt-text).
        device: where to train.
        use_cache: reuse/write ``data/cache/models/tiny-fashion-clip-<key>.pt``.
        progress: show a progress bar.

    Returns:
        A :class:`ClipBundle` whose ``history`` holds the pretraining loss curve.
    """
    import open_clip

    from .clip_loader import ClipBundle, resolve_device

    register_course_configs()
    device = resolve_device(device)
    pretrain = catalogue.split("pretrain")
    key = _cache_key(pretrain, config, caption_style)
    path = cache_dir() / "models" / f"{TINY_MODEL}-{key}.pt"
    seed_everything(config.seed)
    # open_clip logs "No pretrained weights loaded ... initialized randomly" here; the weights are loaded or
    # pretrained just below, so that warning would mislead (notebook 04's truly random model still gets it).
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, device=device)
    finally:
        logging.disable(previous)
    tokenizer = open_clip.get_tokenizer(TINY_MODEL)
    with cache_lock(path):
        if use_cache and path.exists():
            state = torch.load(path, map_location=device, weights_only=False)
            model.load_state_dict(state["model"])
            history = state["history"]
        else:
            dataset = ImageTextDataset(pretrain, preprocess, caption_style=caption_style, seed=config.seed)
            result = fit(model, dataset, contrastive_batch_loss(tokenizer), config, device=device, progress=progress,
                         after_step=clamp_logit_scale)
            history = result.steps
            if use_cache:
                torch_save_atomic({"model": model.state_dict(), "history": history, "config": asdict(config)}, path)
    model.eval()
    return ClipBundle(model, preprocess, tokenizer, int(model.text_projection.shape[1]),
                      f"open_clip:{TINY_MODEL}:embedded-{key}", device, "open_clip", history, path if use_cache else None)


def _cache_key(pretrain: Catalogue, config: TrainConfig, caption_style: str) -> str:
    model_config = (CONFIG_DIR / f"{TINY_MODEL}.json").read_text()
    payload = json.dumps(
        {"model": json.loads(model_config), "data": pretrain.fingerprint(), "train": asdict(config),
         "captions": caption_style, "code": PRETRAIN_CODE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
