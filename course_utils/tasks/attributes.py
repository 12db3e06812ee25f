"""Task: attribute-specific retrieval with conditional embeddings (notebook 05, ASEN protocol).

The modules (:class:`~course_utils.models.conditional.CRL`, :class:`~course_utils.models.conditional.ASENStyleHead`)
are in ``course_utils.models.conditional``; this task holds CRL's recipe (seed 000) and the evaluation:

* CRL's bases: descriptive words per criterion -> CLIP text tower with a prompt -> L2-normalised word embeddings
  -> PCA to a common size ``k`` (:func:`embed_descriptors`, :func:`pca_basis`, :func:`build_criterion_bases`);
* triplets as CRL's ``TripletSampler`` draws them and the triplet loss with margin 0.3
  (:func:`sample_condition_triplets`, :class:`ConditionTripletDataset`, :func:`triplet_batch_loss`);
* training in two stages (:func:`train_crl_stage`);
* evaluation: ASEN's attribute-specific mAP (:func:`embed_under_condition`, :func:`evaluate_attribute_retrieval`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.protocols import ConditionSplit
from ..data.records import Catalogue, CorruptImage
from ..data.synthetic import ATTRIBUTE_ORDER
from ..embed import encode_texts
from ..losses import triplet_margin_loss
from ..metrics import attribute_specific_map
from ..models.conditional import CRL
from ..train import TrainConfig, TrainHistory, fit

TRIPLET_MARGIN = 0.3  # CRL's SOLVER.MARGIN
# The attributes each dataset is searched under (ASEN's conditions).
DEFAULT_CONDITIONS = {
    "synthetic": list(ATTRIBUTE_ORDER),
    "fashion-product-small": ["articleType", "baseColour", "season", "usage", "gender"],
    "deepfashion-multimodal": ["category", "sleeve_length", "neckline", "upper_fabric", "upper_pattern"],
}


def default_conditions(dataset: str, catalogue: Catalogue) -> list[str]:
    """The conditions ``catalogue``, loaded as ``dataset``, is searched under: the dataset's
    :data:`DEFAULT_CONDITIONS`, or every attribute of the catalogue for a dataset that has none (e.g. Fashion200k)."""
    return list(DEFAULT_CONDITIONS.get(dataset) or catalogue.attribute_names)


# --- CRL: the conditional bases -----------------------------------------------------------------------------------


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
    from sklearn.decomposition import PCA  # imported where it is used: importing course_utils need not load it

    m, d = word_embeddings.shape
    if not 1 <= n_components <= min(m, d):
        raise ValueError(f"n_components={n_components} must be between 1 and min(words={m}, dim={d})")
    if m == n_components:
        return word_embeddings.float().clone()
    reduced = PCA(n_components=n_components, svd_solver="full").fit_transform(word_embeddings.double().numpy().T)
    return torch.from_numpy(reduced.T.copy()).float()


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


# --- triplets and training ----------------------------------------------------------------------------------------


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


# --- evaluation ---------------------------------------------------------------------------------------------------


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
