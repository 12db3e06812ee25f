"""Conditional embedding modules for attribute-specific retrieval (notebook 05): CRL and an ASEN-style head.

One image should have a different embedding depending on what you ask about it: under *colour* a navy shirt
is close to navy trousers, under *category* it is close to a red shirt. Two ways to get there:

- **CRL** (Conditional Representation Learning, NeurIPS 2025; seed 000): conditional vector = image feature x a
  criterion's basis of descriptive-word embeddings, L2-normalised (:func:`conditional_projection`); one MLP per
  criterion (:class:`CriterionHeads`); stage 1 trains the MLPs on frozen CLIP features, stage 2 fine-tunes the
  image tower with the MLPs frozen (:meth:`CRL.set_stage`).
- **ASEN-style** (Ma et al., AAAI 2020): a learned condition embedding steers a spatial attention over the
  image's patch tokens and a channel gate (:class:`ASENStyleHead`); here on the frozen CLIP's token grid.

Building the bases, sampling triplets, training and the ASEN mAP are in ``course_utils.tasks.attributes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .parts import set_trainable


def conditional_projection(image_features: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """CRL's conditional representation: coordinates of each image feature on a criterion's basis.

    Args:
        image_features: ``(n, d)`` CLIP image features.
        basis: ``(k, d)`` one criterion's basis for every row, or ``(n, k, d)`` one basis per row
            (``bases[criterion]`` when a batch mixes criteria).

    Returns:
        ``(n, k)``, L2-normalised: ``normalize(image_features @ basisᵀ)``.
    """
    if basis.ndim == 2:
        coordinates = image_features @ basis.T
    else:
        coordinates = torch.einsum("nd,nkd->nk", image_features, basis)
    return F.normalize(coordinates, dim=-1)


class CriterionHeads(nn.Module):
    """One MLP per criterion (Linear -> BatchNorm -> ReLU -> Linear), CRL's ``AttributeProjectionModel``.

    Args:
        n_criteria: number of criteria ``C``.
        in_dim: input size (the basis size ``k``).
        out_dim: output size.
        hidden_dim: default ``(in_dim + out_dim) // 2`` as in CRL.
    """

    def __init__(self, n_criteria: int, in_dim: int, out_dim: int, hidden_dim: int | None = None):
        super().__init__()
        hidden = hidden_dim or (in_dim + out_dim) // 2
        self.out_dim = out_dim
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
            for _ in range(n_criteria)
        )

    def forward(self, x: torch.Tensor, criterion: torch.Tensor) -> torch.Tensor:
        """``(n, in_dim)`` inputs and ``(n,)`` criterion indices -> ``(n, out_dim)``, L2-normalised.

        Each row goes through its criterion's MLP. In training mode a criterion with a single row in the
        batch is skipped (BatchNorm needs two) and its output left at zero, as CRL does.
        """
        rows, outputs = [], []
        for index, head in enumerate(self.heads):
            selected = (criterion == index).nonzero().squeeze(1)
            if len(selected) == 0 or (self.training and len(selected) == 1):
                continue
            rows.append(selected)
            outputs.append(head(x[selected]))
        if not outputs:
            return x.new_zeros(len(x), self.out_dim)
        values = torch.cat(outputs)
        out = values.new_zeros(len(x), self.out_dim).index_copy(0, torch.cat(rows), values)
        return F.normalize(out, dim=-1)


class CRL(nn.Module):
    """CRL's conditional embedder: optional image tower -> basis projection -> optional criterion heads.

    Args:
        bases: ``(C, k, d)`` fixed criterion bases (a buffer: never trained).
        heads: per-criterion MLPs; ``None`` gives the training-free projection alone.
        image_tower: CLIP's image encoder (``clip.visual``), needed to embed images and for stage 2.
    """

    def __init__(self, bases: torch.Tensor, heads: CriterionHeads | None = None, image_tower: nn.Module | None = None):
        super().__init__()
        self.register_buffer("bases", bases.float().clone())
        self.heads = heads
        self.image_tower = image_tower
        self.stage = 0  # 0: nothing frozen on purpose; 1 / 2: see set_stage

    def set_stage(self, stage: int) -> None:
        """Freeze what CRL freezes. Stage 1: image tower frozen, heads train. Stage 2: heads frozen, tower trains.

        The frozen part also stays in eval mode during training (its BatchNorm statistics do not move).
        """
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 (train heads) or 2 (train image tower), got {stage}")
        if self.heads is None:
            raise ValueError("CRL has no heads to train or freeze")
        if stage == 2 and self.image_tower is None:
            raise ValueError("stage 2 fine-tunes the image tower; build CRL with image_tower=clip.visual")
        self.stage = stage
        set_trainable(self.heads, stage == 1)
        if self.image_tower is not None:
            set_trainable(self.image_tower, stage == 2)
        self.train(self.training)

    def train(self, mode: bool = True) -> CRL:
        super().train(mode)
        frozen = {1: self.image_tower, 2: self.heads}.get(self.stage)
        if frozen is not None:
            frozen.eval()
        return self

    def embed_features(self, image_features: torch.Tensor, criterion: torch.Tensor) -> torch.Tensor:
        """``(n, d)`` CLIP features and ``(n,)`` criterion indices -> ``(n, k or out_dim)``, L2-normalised."""
        projected = conditional_projection(image_features, self.bases[criterion])
        return projected if self.heads is None else self.heads(projected, criterion)

    def forward(self, images: torch.Tensor, criterion: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W)`` preprocessed images -> conditional embeddings (needs ``image_tower``)."""
        if self.image_tower is None:
            raise ValueError("this CRL has no image tower; call embed_features on precomputed features")
        return self.embed_features(F.normalize(self.image_tower(images).float(), dim=-1), criterion)


class ASENStyleHead(nn.Module):
    """ASEN's attribute-specific embedding on patch tokens: condition-guided spatial attention + channel gate.

    Follows ASEN's ``AttnEmbedding`` (the 1x1 convolution on the feature map becomes a Linear on tokens), except
    that the BatchNorm ASEN applies to the image side before the ``tanh`` (``img_bn1``) is left out.

    Args:
        n_conditions: number of conditions; each gets a learned embedding.
        token_dim: width ``c`` of the patch tokens.
        embed_dim: output size.
        condition_dim: size of the condition embedding.
        common_dim: size of the space where tokens and condition meet for the spatial attention.
        reduction: channel-gate bottleneck ratio.
    """

    def __init__(
        self,
        n_conditions: int,
        token_dim: int,
        embed_dim: int = 128,
        condition_dim: int = 64,
        common_dim: int = 64,
        reduction: int = 4,
    ):
        super().__init__()
        self.condition_embedding = nn.Embedding(n_conditions, condition_dim)
        self.token_to_common = nn.Linear(token_dim, common_dim)
        self.condition_to_common = nn.Linear(condition_dim, common_dim)
        self.condition_to_gate = nn.Linear(condition_dim, condition_dim)
        self.gate = nn.Sequential(
            nn.Linear(token_dim + condition_dim, token_dim // reduction),
            nn.ReLU(),
            nn.Linear(token_dim // reduction, token_dim),
            nn.Sigmoid(),
        )
        self.output = nn.Linear(token_dim, embed_dim)

    def attention(self, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``(n, L, c)`` tokens, ``(n,)`` condition indices -> ``(n, L)`` spatial attention (rows sum to 1)."""
        keys = torch.tanh(self.token_to_common(tokens))  # (n, L, common)
        query = torch.tanh(self.condition_to_common(self.condition_embedding(condition)))  # (n, common)
        scores = torch.einsum("nlc,nc->nl", keys, query) / keys.shape[-1] ** 0.5
        return scores.softmax(dim=-1)

    def embed_features(self, tokens: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``(n, L, c)`` patch tokens, ``(n,)`` condition indices -> ``(n, embed_dim)``, L2-normalised."""
        pooled = torch.einsum("nl,nlc->nc", self.attention(tokens, condition), tokens)  # attention-weighted sum
        gate_input = F.relu(self.condition_to_gate(self.condition_embedding(condition)))
        gated = pooled * self.gate(torch.cat([pooled, gate_input], dim=-1))  # condition-specific channel gate
        return F.normalize(self.output(gated), dim=-1)

    forward = embed_features
