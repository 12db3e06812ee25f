"""Compositors for composed image+text retrieval: (reference image features, modification text features) -> query.

Notebook 06 puts them side by side on the same frozen CLIP features. Every compositor maps ``image (B, d)`` and
``text (B, d)`` (L2-normalised CLIP features) to a query ``(B, d)``, L2-normalised, that is compared with the
gallery's CLIP image features. Each ``forward`` is a few lines so the notebook can print it.

- :class:`ImageOnly`, :class:`TextOnly`, :class:`Sum` — parameter-free baselines.
- :class:`ConcatMLP` — an MLP on the concatenation.
- :class:`TIRG` — Vo et al., CVPR 2019: a gated image feature plus a residual computed from both.
- :class:`ComplexRotation` — ComposeAE (Anwaar et al., WACV 2021) / seed 004's ComposeTransformers: the image
  gives real coefficients, the text gives angles, the query is the image rotated in complex space.
- :class:`Combiner` — CLIP4Cir (Baldrati et al., 2022): projections, a combined feature, and a learned mixing
  weight between text and image.

Training (``course_utils.tasks.composed.composed_batch_loss``) uses the losses of :mod:`course_utils.losses`:
the batch-based classification loss (TIRG, CLIP4Cir, and ComposeAE on Fashion200k) or seed 004's soft triplet
loss (a simplification of TIRG's, see :func:`course_utils.losses.soft_triplet_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout -> Linear``: the small network most learned compositors use."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


class Compositor(nn.Module):
    """Base class: ``forward(image (B, d), text (B, d)) -> (B, d)`` L2-normalised query.

    Every compositor is built as ``cls(dim, ...)`` with the feature size ``d``, so one call builds any of them;
    the parameter-free baselines take ``dim`` and need nothing from it.
    """

    learned = True  # False for the parameter-free baselines (nothing to train)

    def __init__(self, dim: int):
        super().__init__()


class ImageOnly(Compositor):
    """Ignore the text: retrieve what looks like the reference (a lower bound every method must beat)."""

    learned = False

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(image, dim=-1)


class TextOnly(Compositor):
    """Ignore the image: retrieve what the modification text describes ("is blue" -> anything blue)."""

    learned = False

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(text, dim=-1)


class Sum(Compositor):
    """Add the two CLIP features: the zero-training baseline of CLIP4Cir, possible because CLIP's spaces are aligned."""

    learned = False

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(image + text, dim=-1)


class ConcatMLP(Compositor):
    """An MLP on ``[image, text]``: the simplest learned composition (no built-in preference for the image)."""

    def __init__(self, dim: int, hidden: int = 512, dropout: float = 0.1):
        super().__init__(dim)
        self.net = mlp(2 * dim, hidden, dim, dropout)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(torch.cat([image, text], dim=-1)), dim=-1)


class TIRG(Compositor):
    """Text-Image Residual Gating: keep the parts of the image the text does not touch, add what it asks for.

    ``query = w_gate * sigmoid(gate([x, t])) * x + w_res * residual([x, t])`` with learned scalars
    ``w_gate`` (init 1) and ``w_res`` (init 0.1, so training starts close to the image).
    This departs from Vo et al.'s released code, which starts ``w_res`` at 10 and puts BatchNorm (not dropout)
    in both networks; notebook 06's TIRG row, set beside the published TIRG numbers, comes from this variant.
    """

    def __init__(self, dim: int, hidden: int = 512, dropout: float = 0.1):
        super().__init__(dim)
        self.gate = mlp(2 * dim, hidden, dim, dropout)
        self.residual = mlp(2 * dim, hidden, dim, dropout)
        self.weights = nn.Parameter(torch.tensor([1.0, 0.1]))  # (w_gate, w_res)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        both = torch.cat([image, text], dim=-1)
        gated = torch.sigmoid(self.gate(both)) * image  # which image dimensions to keep
        query = self.weights[0] * gated + self.weights[1] * self.residual(both)  # plus the text-driven change
        return F.normalize(query, dim=-1)


class ComplexRotation(Compositor):
    """ComposeAE / ComposeTransformers: the text rotates the image in complex space.

    The image gives real coefficients ``r`` (a complex vector of phase 0 or pi: ``r`` is an MLP output, its sign
    is free), the text gives angles ``delta``; the composed vector is ``r * exp(i * delta)`` and ``rho`` (a ReLU
    then a linear layer; ComposeAE's starts with BatchNorm and a ReLU) brings ``[Re, Im]`` back to image space.
    ComposeAE's convolutional mapping (added to ``rho``'s output) and its decoders that reconstruct the image and
    text features (a reconstruction loss) are left out.
    ``conjugate=True`` rotates by ``-delta``: applied to the *target* it should give back the reference — the
    rotational-symmetry constraint of ComposeAE (used by :func:`composed_batch_loss` with ``symmetry_weight``).
    """

    def __init__(self, dim: int, hidden: int = 512, dropout: float = 0.1):
        super().__init__(dim)
        self.magnitude = mlp(dim, hidden, dim, dropout)  # image -> r
        self.angle = mlp(dim, hidden, dim, dropout)  # text -> delta (radians)
        self.rho = nn.Sequential(nn.ReLU(), nn.Linear(2 * dim, dim))  # complex -> image space

    def forward(self, image: torch.Tensor, text: torch.Tensor, conjugate: bool = False) -> torch.Tensor:
        r, delta = self.magnitude(image), self.angle(text)
        if conjugate:
            delta = -delta
        real, imaginary = r * torch.cos(delta), r * torch.sin(delta)  # r * e^{i delta}
        return F.normalize(self.rho(torch.cat([real, imaginary], dim=-1)), dim=-1)


class Combiner(Compositor):
    """CLIP4Cir's Combiner: project both, combine, and mix the result with a learned weighted sum of the inputs.

    ``query = out(combined) + lam * text + (1 - lam) * image`` where ``lam`` in (0, 1) is predicted per query
    from the projections, so the network decides how much of the text and of the image to pass straight through.
    Unlike CLIP4Cir, which gives the mixing branch ``hidden_dim`` units and uses Dropout(0.5) throughout, the mixing
    branch here has ``hidden // 4`` units and no dropout, and the other layers use ``dropout`` (0.1 by default).
    """

    def __init__(self, dim: int, hidden: int = 512, dropout: float = 0.1):
        super().__init__(dim)
        self.image_projection = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.text_projection = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.combine = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, dim)
        self.mixing = nn.Sequential(
            nn.Linear(2 * hidden, hidden // 4), nn.ReLU(), nn.Linear(hidden // 4, 1), nn.Sigmoid()
        )

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        projected = torch.cat([self.image_projection(image), self.text_projection(text)], dim=-1)
        lam = self.mixing(projected)  # (B, 1) learned mixing weight
        query = self.out(self.combine(projected)) + lam * text + (1 - lam) * image
        return F.normalize(query, dim=-1)


COMPOSITORS: dict[str, type[Compositor]] = {
    "image only": ImageOnly,
    "text only": TextOnly,
    "sum": Sum,
    "concat + MLP": ConcatMLP,
    "TIRG": TIRG,
    "ComplexRotation (ComposeAE)": ComplexRotation,
    "Combiner (CLIP4Cir)": Combiner,
}


def make_compositor(name: str, dim: int, hidden: int = 512, dropout: float = 0.1, seed: int = 0) -> Compositor:
    """Build one of :data:`COMPOSITORS` by name, its weights initialised from ``seed``."""
    if name not in COMPOSITORS:
        raise ValueError(f"unknown compositor {name!r}; choose one of {list(COMPOSITORS)}")
    cls = COMPOSITORS[name]
    if not cls.learned:
        return cls(dim)
    torch.manual_seed(seed)
    return cls(dim, hidden=hidden, dropout=dropout)


@torch.inference_mode()
def compose(compositor: nn.Module, image: torch.Tensor, text: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Composed queries for many (image, text) feature pairs in eval mode: ``(q, d)`` -> ``(q, d)`` L2-normalised."""
    compositor.eval()
    chunks = [compositor(image[i : i + batch_size], text[i : i + batch_size]) for i in range(0, len(image), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, image.shape[1])
