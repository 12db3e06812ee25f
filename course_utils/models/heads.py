"""Heads on a CLIP model and seed 002's re-initialisation (notebooks 02 and 04).

:class:`ResidualMLPHead` and :class:`HeadedClip` are seed 000's "MLP layer on the output of CLIP", trained by the
two-stage recipe in ``course_utils.tasks.retrieval``; :func:`normal_init_` is seed 002's random re-initialisation
that notebook 04 trains from scratch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
