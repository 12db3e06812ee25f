"""Parts of a CLIP model and freezing them: which parameters a training stage may change (notebooks 02, 05).

``set_trainable`` switches ``requires_grad``; ``image_tower`` / ``text_tower`` name the two encoders of an open_clip
or OpenAI CLIP model, so recipes can freeze one tower and train the other.
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
