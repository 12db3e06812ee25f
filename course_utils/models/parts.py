"""Which parameters a training stage may change.

``set_trainable`` switches ``requires_grad``: the two-stage recipe of ``course_utils.tasks.retrieval`` (notebook 02)
freezes CLIP to train its heads, then the heads to train CLIP, and ``conditional.CRL`` (notebook 05) freezes one
of its two parts per stage. ``train.fit`` and seed 002's re-initialisation leave frozen parameters alone.
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
