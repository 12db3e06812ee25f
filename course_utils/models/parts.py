"""Which parameters a training stage may change.

``set_trainable`` switches ``requires_grad``: the two-stage recipe of ``course_utils.tasks.retrieval`` (notebook 02)
freezes CLIP to train its heads, then the heads to train CLIP, and ``conditional.CRL`` (notebook 05) freezes one
of its two parts per stage. ``image_tower`` / ``text_tower`` name the two encoders of an open_clip or OpenAI CLIP
model, and ``freeze_image_tower`` / ``freeze_text_tower`` / ``count_trainable`` use them; no recipe calls these
yet, the tests of ``train.fit`` and of the re-initialisation use them to freeze a tower.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def set_trainable(modules: torch.nn.Module | Iterable, trainable: bool) -> None:
    """Switch ``requires_grad`` for every parameter of the given modules/parameters."""
    items = [modules] if isinstance(modules, (torch.nn.Module, torch.nn.Parameter)) else list(modules)
    for item in items:
        params = [item] if isinstance(item, torch.nn.Parameter) else item.parameters()
        for p in params:
            p.requires_grad_(trainable)


def image_tower(model: torch.nn.Module) -> list:
    """The image encoder of an open_clip / OpenAI CLIP model."""
    return [model.visual]


def text_tower(model: torch.nn.Module) -> list:
    """The text encoder of an open_clip / OpenAI CLIP model (transformer, embeddings, final norm, projection)."""
    return [model.transformer, model.token_embedding, model.positional_embedding, model.ln_final, model.text_projection]


def freeze_image_tower(model: torch.nn.Module) -> None:
    """Stop the image encoder from training."""
    set_trainable(image_tower(model), False)


def freeze_text_tower(model: torch.nn.Module) -> None:
    """Stop the text encoder from training."""
    set_trainable(text_tower(model), False)


def count_trainable(model: torch.nn.Module) -> int:
    """Number of scalars that would be trained."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
