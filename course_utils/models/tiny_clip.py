"""The course's own small CLIPs, defined as open_clip JSON configs (no new architecture).

Real CLIP weights cannot be downloaded on course machines, so the course pretrains its own small CLIP:
``model_configs/tiny-fashion-clip.json`` (a tiny ViT, the embedded default, pretrained on the procedural catalogue
by ``course_utils.tasks.pretrain``) and ``photo-clip-*.json`` (a small convolutional tower from timm, randomly
initialised, pretrained on real product photos by ``course_utils.tasks.photo_pretrain``). This module only
registers and builds the architectures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

TINY_MODEL = "tiny-fashion-clip"
# timm convolutional image towers, random init (their training minutes and recalls: benchmarks/README.md)
PHOTO_MODELS = ("photo-clip-resnet18", "photo-clip-resnet10t", "photo-clip-regnetx002")
CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_course_configs() -> None:
    """Make the course's JSON model configs known to open_clip (idempotent)."""
    import open_clip

    if not {TINY_MODEL, *PHOTO_MODELS} <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


def course_clip_config(model_name: str = TINY_MODEL) -> str:
    """One of the course's JSON model configs as text (part of the pretraining cache keys)."""
    path = CONFIG_DIR / f"{model_name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise ValueError(f"no course model config {model_name!r} in {CONFIG_DIR}; choose one of {known}")
    return path.read_text()


def tiny_clip_config() -> str:
    """The tiny CLIP's JSON config as text (part of the pretraining cache key)."""
    return course_clip_config(TINY_MODEL)


def create_tiny_clip(device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Callable, Callable]:
    """A freshly initialised tiny CLIP: ``(model, preprocess, tokenizer)`` (see :func:`create_course_clip`)."""
    return create_course_clip(TINY_MODEL, device)


def create_course_clip(
    model_name: str, device: str | torch.device = "cpu", image_size: tuple[int, int] | None = None
) -> tuple[torch.nn.Module, Callable, Callable]:
    """A freshly initialised course CLIP: ``(model, preprocess, tokenizer)``, for weights about to be loaded or trained.

    Args:
        model_name: a config in ``model_configs/`` (:data:`TINY_MODEL` or one of :data:`PHOTO_MODELS`).
        device: where to build it.
        image_size: ``(height, width)`` overriding the config's input size (``None``: the config's).

    open_clip logs "No pretrained weights loaded ... initialized randomly" here; the caller loads or pretrains the
    weights right after, so that warning would mislead (notebook 04's truly random model, loaded through
    ``load_clip(..., pretrained=None)``, still gets it).
    """
    import open_clip

    course_clip_config(model_name)  # a clear error for an unknown name
    register_course_configs()
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, device=device, force_image_size=tuple(image_size) if image_size else None
        )
    finally:
        logging.disable(previous)
    return model, preprocess, open_clip.get_tokenizer(model_name)
