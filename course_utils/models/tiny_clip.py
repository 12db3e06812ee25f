"""The embedded default model: a tiny CLIP defined as an open_clip JSON config (no new architecture).

Real CLIP weights cannot be downloaded on course machines, so the course pretrains its own small CLIP
(``model_configs/tiny-fashion-clip.json``, registered with open_clip) on the procedural catalogue; the recipe and
its cache live in ``course_utils.tasks.pretrain``. This module only registers and builds the architecture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

TINY_MODEL = "tiny-fashion-clip"
CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_course_configs() -> None:
    """Make the course's JSON model configs known to open_clip (idempotent)."""
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


def tiny_clip_config() -> str:
    """The tiny CLIP's JSON config as text (part of the pretraining cache key)."""
    return (CONFIG_DIR / f"{TINY_MODEL}.json").read_text()


def create_tiny_clip(device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Callable, Callable]:
    """A freshly initialised tiny CLIP: ``(model, preprocess, tokenizer)``, for weights about to be loaded or trained.

    open_clip logs "No pretrained weights loaded ... initialized randomly" here; the caller loads or pretrains the
    weights right after, so that warning would mislead (notebook 04's truly random model, loaded through
    ``load_clip(..., pretrained=None)``, still gets it).
    """
    import open_clip

    register_course_configs()
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, device=device)
    finally:
        logging.disable(previous)
    return model, preprocess, open_clip.get_tokenizer(TINY_MODEL)
