"""Conditional embeddings for attribute-specific retrieval (notebook 05): CRL and an ASEN-style baseline.

One image should have a different embedding depending on what you ask about it: under *colour* a navy shirt
is close to navy trousers, under *category* it is close to a red shirt. Two ways to get there:

- **CRL** (Conditional Representation Learning, NeurIPS 2025; seed 000), as its fashion code does it:
  descriptive words per criterion -> CLIP text tower with a prompt -> L2-normalised word embeddings
  -> PCA to a common size ``k`` (the smallest word count, so batches can mix criteria) -> basis ``(k, d)``;
  conditional vector = image feature x basisᵀ, L2-normalised (:func:`conditional_projection`); one MLP per
  criterion (:class:`CriterionHeads`); triplet loss with margin 0.3; stage 1 trains the MLPs on frozen CLIP
  features, stage 2 fine-tunes the image tower with the MLPs frozen (:meth:`CRL.set_stage`).
- **ASEN-style** (Ma et al., AAAI 2020): a learned condition embedding steers a spatial attention over the
  image's patch tokens and a channel gate (:class:`ASENStyleHead`); here on the frozen CLIP's token grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data.adapters import collate_skipping_unreadable
from ..data.protocols import ConditionSplit
from ..data.records import Catalogue, CorruptImage
from ..embed import encode_texts
from ..losses import triplet_margin_loss
from ..metrics import attribute_specific_map
from ..train import TrainConfig, TrainHistory, fit, set_trainable

TRIPLET_MARGIN = 0.3  # CRL's SOLVER.MARGIN


# --- CRL: the conditional basis -----------------------------------------------------------------------------------


def embed_descriptors(bundle, words: Sequence[str], template: str = "a photo of a {word} garment") -> torch.Tensor:
    """Embed a criterion's descriptive words with CLIP's text tower, each inside ``template``.

    Returns:
        ``(len(words), embed_dim) float32`` on the CPU, L2-normalised (cached like every text embedding).
    """
    return encode_texts(bundle, [template.format(word=word) for word in words], progress=False)


def pca_basis(word_embeddings: torch.Tensor, n_components: int) -> torch.Tensor:
    """Reduce ``m`` word embeddings to ``n_components`` basis vectors, as CRL's ``text_embedding.py`` does.

    CRL runs scikit-learn's PCA on the *transposed* matrix: the ``d`` embedding coordinates are the samples and
    the ``m`` words the features, so each new basis vector is a mix of (centred) word embeddings. A list that
    already has ``n_components`` words is kept as it is.

    Args:
        word_embeddings: ``(m, d)`` L2-normalised word embeddings, ``m >= n_components``.
        n_components: common basis size ``k`` (CRL: the smallest word count over criteria).

    Returns:
        ``(n_components, d) float32`` basis (rows are not unit-norm: their norms are PCA's singular values).
    """
    from sklearn.decomposition import PCA

    m, d = word_embeddings.shape
    if not 1 <= n_components <= min(m, d):
        raise ValueError(f"n_components={n_components} must be between 1 and min(words={m}, dim={d})")
    if m == n_components:
        return word_embeddings.float().clone()
    reduced = PCA(n_components=n_components, svd_solver="full").fit_transform(word_embeddings.double().numpy().T)
    return torch.from_numpy(reduced.T.copy()).float()


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


@dataclass
class CriterionBases:
    """The stacked bases of every criterion (same ``k``, so a batch may mix criteria).

    Attributes:
        criteria: criterion names; ``bases[i]`` belongs to ``criteria[i]``.
        bases: ``(C, k, d) float32``.
        word_counts: how many words each criterion's list had before PCA.
    """

    criteria: list[str]
    bases: torch.Tensor
    word_counts: dict[str, int]

    def index(self, criterion: str) -> int:
        if criterion not in self.criteria:
            raise KeyError(f"no basis for criterion {criterion!r}; have {self.criteria}")
        return self.criteria.index(criterion)

    def __getitem__(self, criterion: str) -> torch.Tensor:
        return self.bases[self.index(criterion)]


def build_criterion_bases(
    bundle, descriptors: dict[str, list[str]], templates: dict[str, str] | str, n_components: int | None = None
) -> CriterionBases:
    """Embed every criterion's words and reduce them to one common size (:func:`pca_basis`).

    Args:
        bundle: the CLIP bundle whose text tower embeds the words.
        descriptors: ``{criterion: [word, ...]}`` (see ``course_utils.data.descriptors``).
        templates: one prompt with a ``{word}`` slot, or one per criterion.
        n_components: common size ``k``; default the smallest word count (capped at the embedding size).
    """
    if not descriptors:
        raise ValueError("descriptors is empty; pass {criterion: [word, ...]}")
    counts = {criterion: len(words) for criterion, words in descriptors.items()}
    k = n_components or min(min(counts.values()), bundle.embed_dim)
    bases = []
    for criterion, words in descriptors.items():
        template = templates if isinstance(templates, str) else templates[criterion]
        bases.append(pca_basis(embed_descriptors(bundle, words, template), k))
    return CriterionBases(list(descriptors), torch.stack(bases), counts)


# --- CRL: heads and the two-stage model -----------------------------------------------------------------------------


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


# --- ASEN-style baseline ----------------------------------------------------------------------------------------------


class ASENStyleHead(nn.Module):
    """ASEN's attribute-specific embedding on patch tokens: condition-guided spatial attention + channel gate.

    Follows ASEN's ``AttnEmbedding`` (the 1x1 convolution on the feature map becomes a Linear on tokens).

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


def patch_tokens(
    bundle, catalogue: Catalogue, block_from_end: int = 2, batch_size: int = 256, progress: bool = True
) -> torch.Tensor:
    """The patch tokens of every item image (after the final LayerNorm), the feature map of ASEN-style heads.

    The default is the penultimate block: CLIP pools the class token, so the last block's outputs at the patch
    positions feed nothing and are never trained, while the penultimate tokens are what the class token attends
    to. Needs an open_clip ViT (``visual.forward_intermediates``).

    Args:
        bundle: the CLIP bundle.
        catalogue: items to encode.
        block_from_end: 1 = last transformer block, 2 = penultimate, ...
        batch_size: images per forward pass.
        progress: show a tqdm bar.

    Returns:
        ``(len(catalogue), L, c) float32`` on the CPU: ``L`` patches (64 for the tiny CLIP, 49 for ViT-B-32).
    """
    visual = bundle.model.visual
    if not hasattr(visual, "forward_intermediates"):
        raise TypeError("patch_tokens needs an open_clip ViT image tower (visual.forward_intermediates)")
    from ..data.adapters import ImageTextDataset

    loader = DataLoader(
        ImageTextDataset(catalogue, bundle.preprocess), batch_size=batch_size, collate_fn=collate_skipping_unreadable
    )
    chunks = []
    with torch.inference_mode():
        for batch in tqdm(loader, desc="patch tokens", disable=not progress, leave=False):
            if batch["skipped"]:
                raise CorruptImage(f"unreadable images {batch['skipped'][:5]}; call catalogue.drop_unreadable_images()")
            out = visual.forward_intermediates(
                batch["image"].to(bundle.device),
                indices=block_from_end,
                normalize_intermediates=True,
                intermediates_only=True,
                output_fmt="NLC",
            )
            chunks.append(out["image_intermediates"][0].float().cpu())  # oldest of the last n blocks
    return torch.cat(chunks)


# --- triplets and training ---------------------------------------------------------------------------------------------


def sample_condition_triplets(
    catalogue: Catalogue, conditions: Sequence[str], n_triplets: int, seed: int = 0
) -> torch.Tensor:
    """Draw (anchor, positive, negative, condition) as CRL's ``TripletSampler`` does.

    Each triplet picks a condition uniformly, then two different values of it uniformly (rare values are drawn
    as often as common ones), the anchor and positive among the items with the first value and the negative
    among the items with the second.

    Returns:
        ``(n_triplets, 4) int64``: positions in ``catalogue`` of anchor, positive, negative, and the condition index.
    """
    rng = np.random.default_rng(seed)
    groups = []
    for condition in conditions:
        by_value: dict[str, list[int]] = {}
        for position, item in enumerate(catalogue):
            if condition in item.attributes:
                by_value.setdefault(item.attributes[condition], []).append(position)
        anchors = [v for v, members in by_value.items() if len(members) >= 2]
        if not anchors or len(by_value) < 2:
            raise ValueError(
                f"condition {condition!r} needs a value with 2 items and a second value to sample triplets"
            )
        groups.append((by_value, anchors))
    rows = np.empty((n_triplets, 4), dtype=np.int64)
    for row in range(n_triplets):
        c = int(rng.integers(len(groups)))
        by_value, anchors = groups[c]
        positive_value = anchors[rng.integers(len(anchors))]
        others = [v for v in by_value if v != positive_value]
        negative_value = others[rng.integers(len(others))]
        anchor, positive = rng.choice(by_value[positive_value], size=2, replace=False)
        negative = by_value[negative_value][rng.integers(len(by_value[negative_value]))]
        rows[row] = (anchor, positive, negative, c)
    return torch.from_numpy(rows)


class ConditionTripletDataset(Dataset):
    """Serves triplets from :func:`sample_condition_triplets`; with ``catalogue`` and ``preprocess`` also images.

    Items: ``{"anchor", "positive", "negative", "condition"}`` (positions, index) and, with images,
    ``"anchor_image"``, ``"positive_image"``, ``"negative_image"`` (``(3, H, W)`` tensors).
    """

    def __init__(self, triplets: torch.Tensor, catalogue: Catalogue | None = None, preprocess: Callable | None = None):
        if (catalogue is None) != (preprocess is None):
            raise ValueError("pass both catalogue and preprocess (to serve images) or neither")
        self.triplets, self.catalogue, self.preprocess = triplets, catalogue, preprocess

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict:
        anchor, positive, negative, condition = (int(v) for v in self.triplets[index])
        sample = {"anchor": anchor, "positive": positive, "negative": negative, "condition": condition}
        if self.catalogue is not None:
            for role, position in (("anchor", anchor), ("positive", positive), ("negative", negative)):
                item = self.catalogue[position]
                try:
                    sample[f"{role}_image"] = self.preprocess(item.image)
                except (CorruptImage, FileNotFoundError):
                    return {"skipped": item.item_id}
        return sample


def triplet_batch_loss(
    features: torch.Tensor | None = None, margin: float = TRIPLET_MARGIN
) -> Callable[[nn.Module, dict], torch.Tensor]:
    """The per-batch loss for :func:`course_utils.train.fit`: embed anchor, positive and negative, triplet loss.

    Args:
        features: precomputed inputs indexed by catalogue position — CLIP features ``(n, d)`` for CRL stage 1,
            patch tokens ``(n, L, c)`` for the ASEN-style head; ``None`` embeds the batch's images (stage 2).
        margin: triplet margin (CRL: 0.3).

    The three roles go through the model as one batch, so each criterion's BatchNorm sees at least 3 rows.
    """

    def batch_loss(model: nn.Module, batch: dict) -> torch.Tensor:
        device = next(model.parameters()).device
        criterion = batch["condition"].repeat(3).to(device)
        if features is not None:
            positions = torch.cat([batch["anchor"], batch["positive"], batch["negative"]])
            embeddings = model.embed_features(features[positions].to(device), criterion)
        else:
            images = torch.cat([batch["anchor_image"], batch["positive_image"], batch["negative_image"]]).to(device)
            embeddings = model(images, criterion)
        anchor, positive, negative = embeddings.chunk(3)
        return triplet_margin_loss(anchor, positive, negative, margin)

    return batch_loss


def train_crl_stage(
    model: CRL,
    stage: int,
    triplets: torch.Tensor,
    config: TrainConfig,
    features: torch.Tensor | None = None,
    catalogue: Catalogue | None = None,
    preprocess: Callable | None = None,
    margin: float = TRIPLET_MARGIN,
    progress: bool = True,
) -> TrainHistory:
    """Run one CRL stage with :func:`course_utils.train.fit`.

    Stage 1 trains the heads on precomputed, frozen CLIP ``features`` of ``catalogue``'s items; stage 2 fine-tunes
    the image tower on ``catalogue``'s images (``preprocess``) with the heads frozen.
    """
    model.set_stage(stage)
    if stage == 1:
        if features is None:
            raise ValueError("stage 1 trains on frozen CLIP features: pass features=(n, d) of the triplets' catalogue")
        return fit(
            model, ConditionTripletDataset(triplets), triplet_batch_loss(features, margin), config, progress=progress
        )
    if catalogue is None or preprocess is None:
        raise ValueError("stage 2 fine-tunes the image tower on images: pass catalogue and preprocess")
    return fit(
        model,
        ConditionTripletDataset(triplets, catalogue, preprocess),
        triplet_batch_loss(None, margin),
        config,
        progress=progress,
    )


# --- evaluation -----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def embed_under_condition(
    model: nn.Module, features: torch.Tensor, condition: int, batch_size: int = 1024
) -> torch.Tensor:
    """Embed precomputed ``features`` (CLIP features or patch tokens) under one condition, in eval mode.

    Returns:
        ``(n, out)`` float32 on the CPU, L2-normalised.
    """
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    chunks = []
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size].to(device)
        criterion = torch.full((len(chunk),), condition, dtype=torch.long, device=device)
        chunks.append(model.embed_features(chunk, criterion).float().cpu())
    return torch.cat(chunks)


def evaluate_attribute_retrieval(
    embed: Callable[[list[int], str], torch.Tensor], protocol: dict[str, ConditionSplit], catalogue: Catalogue
) -> dict[str, float]:
    """ASEN's attribute-specific mAP of one method.

    Args:
        embed: ``embed(positions, condition) -> (n, e)`` L2-normalised embeddings of ``catalogue``'s items at
            ``positions`` under ``condition`` (a global embedding simply ignores the condition).
        protocol: from ``cu.data.attribute_retrieval_protocol(catalogue, ...)``.
        catalogue: the catalogue the protocol was built on.

    Returns:
        ``{condition: mAP, ..., "overall": query-weighted mAP}`` (fractions, not %).
    """
    per_condition = {}
    for condition, split in protocol.items():
        queries = embed([catalogue.position(i) for i in split.query_ids], condition)
        candidates = embed([catalogue.position(i) for i in split.candidate_ids], condition)
        per_condition[condition] = (queries @ candidates.T, split.relevance())  # cosine scores, relevance
    return attribute_specific_map(per_condition)
