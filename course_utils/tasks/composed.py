"""Task: composed image + text retrieval (notebook 06): reference image + modification text -> target.

Fashion200k convention (TIRG, ComposeAE): the gallery is every test item; each query ranks the gallery *without
its own reference image*; a hit is a retrieved item that *matches* the target. What "matches" means depends on
the dataset (:data:`DEFAULT_MATCH`): Fashion200k counts any image with the target's caption, the procedural
catalogue any item with exactly the target's attributes, FashionIQ only the target itself.

Also here: the training and validation triplets of datasets that ship only test queries (:func:`split_triplets`,
:func:`composed_triplets`), a ``Dataset`` over precomputed CLIP features so compositors train in seconds on a CPU
(:class:`TripletFeatureDataset`), the compositors' training loss (:func:`composed_batch_loss`; the modules are in
``course_utils.models.compositors``) and chunked recall@K (:func:`composed_recall_at_k`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.fashion_product import COLOUR_SWAP, COLOUR_SWAP_WITHIN
from ..data.records import Catalogue, CompositionTriplet, Item
from ..data.triplets import attribute_swap_triplets, fashion200k_phrase
from ..losses import composed_classification_loss, soft_triplet_loss
from ..metrics import composed_recall, mean_chance_recall

#: DeepFashion-MultiModal has no colour labels and no triplets: its composed queries swap the top's pattern ("replace
#: striped with floral") between photos of the same gender and shop category.
PATTERN_SWAP, PATTERN_SWAP_WITHIN = "upper_pattern", ("gender", "category")
#: How a gallery item matches a query's target, per dataset: ``"attributes"`` (all attributes equal),
#: ``"caption"`` (same first caption), ``"item"`` (the target itself) or a tuple of attribute names.
DEFAULT_MATCH: dict[str, str | tuple[str, ...]] = {
    "synthetic": "attributes",
    "fashion200k": "caption",
    "fashion-product-small": COLOUR_SWAP_WITHIN + (COLOUR_SWAP,),
    "deepfashion-multimodal": PATTERN_SWAP_WITHIN + (PATTERN_SWAP,),
    "fashioniq": "item",
}


def default_match(dataset: str) -> str | tuple[str, ...]:
    """The match rule of ``dataset`` (:data:`DEFAULT_MATCH`), as notebook 06 and ``evaluate --task composed`` read it.

    Raises:
        ValueError: for a dataset registered (``register_catalogue``) without a rule, saying where to add one.
    """
    if dataset not in DEFAULT_MATCH:
        raise ValueError(
            f"dataset {dataset!r} has no composed-retrieval match rule; add one to "
            "course_utils.tasks.composed.DEFAULT_MATCH ('attributes', 'caption', 'item' or attribute names)"
        )
    return DEFAULT_MATCH[dataset]


def match_key(item: Item, match: str | Sequence[str]) -> tuple | str:
    """The value two items must share to count as the same target under rule ``match``."""
    if match == "attributes":
        return tuple(sorted(item.attributes.items()))
    if match == "caption":
        return " ".join(item.captions[0].split()) if item.captions else item.item_id
    if match == "item":
        return item.item_id
    if isinstance(match, str):
        raise ValueError(f"unknown match rule {match!r}; use 'attributes', 'caption', 'item' or attribute names")
    return tuple(item.attributes.get(name) for name in match)


def match_groups(catalogue: Catalogue, match: str | Sequence[str]) -> torch.Tensor:
    """``(n,) int64``: items with equal group ids match each other (ids numbered in order of first appearance)."""
    ids: dict = {}
    return torch.tensor([ids.setdefault(match_key(item, match), len(ids)) for item in catalogue], dtype=torch.long)


@dataclass
class ComposedQueries:
    """Composed queries on a gallery: which row is each query's reference and target, and who matches whom.

    Attributes:
        gallery: the items ranked (usually the test split); row i is ``gallery[i]``.
        triplets: one per query.
        reference_rows, target_rows: ``(q,) int64`` gallery rows of each query's reference and target.
        groups: ``(g,) int64`` match groups of the gallery items (see :func:`match_groups`).
        match: the match rule used.
        dropped: triplets left out because their reference or target is not in the gallery.
    """

    gallery: Catalogue
    triplets: list[CompositionTriplet]
    reference_rows: torch.Tensor
    target_rows: torch.Tensor
    groups: torch.Tensor
    match: str | tuple[str, ...]
    dropped: int = 0
    texts: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.texts = [t.modification for t in self.triplets]

    def __len__(self) -> int:
        return len(self.triplets)

    def relevance(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """``(q, g) bool`` for queries ``start:stop``: gallery item matches the target and is not the reference."""
        rows = slice(start, stop)
        relevant = self.groups[self.target_rows[rows]][:, None] == self.groups[None, :]
        relevant[torch.arange(relevant.shape[0]), self.reference_rows[rows]] = False
        return relevant

    def relevant_counts(self) -> torch.Tensor:
        """``(q,) int64``: gallery items matching each query's target (the reference never does)."""
        sizes = torch.bincount(self.groups, minlength=int(self.groups.max()) + 1)
        counts = sizes[self.groups[self.target_rows]]
        counts -= (self.groups[self.reference_rows] == self.groups[self.target_rows]).long()
        return counts


def composed_queries(
    gallery: Catalogue, triplets: Sequence[CompositionTriplet], match: str | Sequence[str] = "attributes"
) -> ComposedQueries:
    """Build the protocol's queries on ``gallery`` from ``triplets`` (those outside the gallery are counted, not used).

    Args:
        gallery: the items to rank (reference images are in it and are excluded per query at scoring time).
        triplets: reference id, modification text, target id.
        match: the match rule (see :data:`DEFAULT_MATCH`).
    """
    match = match if isinstance(match, str) else tuple(match)
    ids = set(gallery.ids)
    kept = [t for t in triplets if t.reference_id in ids and t.target_id in ids]
    return ComposedQueries(
        gallery=gallery,
        triplets=kept,
        reference_rows=torch.tensor([gallery.position(t.reference_id) for t in kept], dtype=torch.long),
        target_rows=torch.tensor([gallery.position(t.target_id) for t in kept], dtype=torch.long),
        groups=match_groups(gallery, match),
        match=match,
        dropped=len(triplets) - len(kept),
    )


def composed_recall_at_k(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    queries: ComposedQueries,
    ks: Sequence[int] = (1, 10, 50, 100),
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Recall@K of composed queries, the reference image excluded from each ranking (Fashion200k protocol).

    Args:
        query_features: ``(q, d)`` L2-normalised composed queries, row i for ``queries.triplets[i]``.
        gallery_features: ``(g, d)`` L2-normalised image features of ``queries.gallery``.
        queries: the protocol (reference rows and relevance).
        ks: cut-offs.
        chunk_size: queries scored at once (Fashion200k has 33k queries x 30k images); does not change the result.

    Returns:
        ``{K: recall}`` under :mod:`course_utils.metrics`' tie convention.
    """
    if len(queries) == 0:
        raise ValueError("no composed queries: a recall over none is undefined; pass at least one triplet")
    if len(query_features) != len(queries):
        raise ValueError(f"{len(query_features)} query features for {len(queries)} queries")
    totals = dict.fromkeys(ks, 0.0)
    for start in range(0, len(queries), chunk_size):
        stop = min(start + chunk_size, len(queries))
        similarity = query_features[start:stop] @ gallery_features.T
        recalls = composed_recall(
            similarity,
            queries.relevance(start, stop),
            ks,
            exclude=queries.reference_rows[start:stop],
            first_query_row=start,  # errors name the query's row in the whole set
        )
        for k in ks:
            totals[k] += recalls[k] * (stop - start)
    return {k: totals[k] / len(queries) for k in ks}


def chance_composed_recall(queries: ComposedQueries, ks: Sequence[int] = (1, 10, 50, 100)) -> dict[int, float]:
    """Recall@K of a random ranking of the ``g - 1`` non-reference items, averaged over the queries."""
    gallery_size = len(queries.gallery) - 1
    counts = queries.relevant_counts().tolist()
    return {k: mean_chance_recall(k, gallery_size, counts) for k in ks}


def top_k_excluding(
    query_features: torch.Tensor, gallery_features: torch.Tensor, exclude_rows: torch.Tensor, k: int = 5
) -> torch.Tensor:
    """``(q, k) int64`` gallery rows of the best matches of each query, its reference row removed."""
    similarity = query_features @ gallery_features.T
    similarity[torch.arange(len(similarity)), exclude_rows] = float("-inf")
    return similarity.topk(k, dim=1).indices


class TripletFeatureDataset(Dataset):
    """Training samples on precomputed, frozen CLIP features: reference image, modification text, target image.

    Args:
        image_features: ``(n, d)`` image features of ``queries.gallery`` (here: the train split).
        text_features: ``(q, d)`` features of ``queries.texts``.
        queries: triplets on that catalogue (:func:`composed_queries`); its match groups tell the loss which
            in-batch targets are interchangeable (not negatives).
    """

    def __init__(self, image_features: torch.Tensor, text_features: torch.Tensor, queries: ComposedQueries):
        if len(text_features) != len(queries):
            raise ValueError(f"{len(text_features)} text features for {len(queries)} triplets")
        self.image_features, self.text_features, self.queries = image_features, text_features, queries
        self.references, self.targets = queries.reference_rows.tolist(), queries.target_rows.tolist()
        self.groups = queries.groups.tolist()  # plain ints: indexing a tensor per sample is slow

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, index: int) -> dict:
        reference, target = self.references[index], self.targets[index]
        return {
            "image": self.image_features[reference],
            "text": self.text_features[index],
            "target": self.image_features[target],
            "target_group": self.groups[target],
            "reference_group": self.groups[reference],
        }


def caption_swap_triplets(items: Sequence[Item], seed: int, per_reference: int = 1) -> list[CompositionTriplet]:
    """Training triplets for Fashion200k (as TIRG builds them): captions of equal length that differ in one word.

    Captions equal except at word position p share the key "caption with word p replaced by ``*``". Each
    reference draws up to ``per_reference`` distinct swaps (key, new word) uniformly, then a target image with
    that word, phrased "replace <old> with <new>". The seed makes the choice reproducible.
    """
    rng = random.Random(seed)
    words_of = {item.item_id: item.captions[0].split() if item.captions else [] for item in items}
    buckets: dict[tuple, dict[str, list[Item]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        words = words_of[item.item_id]
        for p in range(len(words)):
            buckets[(p, *words[:p], "*", *words[p + 1 :])][words[p]].append(item)
    triplets = []
    for reference in items:
        words = words_of[reference.item_id]
        swaps = [
            (key, new)
            for p in range(len(words))
            for key in [(p, *words[:p], "*", *words[p + 1 :])]
            for new in buckets[key]
            if new != words[p]
        ]
        for key, new in rng.sample(swaps, min(per_reference, len(swaps))):
            target = rng.choice(buckets[key][new])
            old = words[key[0]]
            triplets.append(
                CompositionTriplet(
                    reference.item_id,
                    fashion200k_phrase("word", old, new),
                    target.item_id,
                    {"word": (old, new)},
                    "fashion200k",
                )
            )
    return triplets


def split_triplets(split: Catalogue, dataset: str, seed: int = 0) -> list[CompositionTriplet]:
    """Composed triplets on one split by the rule that makes a dataset's training triplets (notebook 06 makes its
    train and val triplets with it).

    - ``synthetic``, ``fashioniq``: the catalogue's own triplets on the split.
    - ``fashion200k``: captions differing in one word (:func:`caption_swap_triplets`, as TIRG trains).
    - ``fashion-product-small``: colour swaps (:data:`~course_utils.data.fashion_product.COLOUR_SWAP` within
      ``COLOUR_SWAP_WITHIN``), the rule of the loader's test swaps.
    - ``deepfashion-multimodal``: pattern swaps of the top (:data:`PATTERN_SWAP` within ``PATTERN_SWAP_WITHIN``).
    """
    if dataset == "fashion200k":
        return caption_swap_triplets(split.items, seed)
    if dataset == "fashion-product-small":
        return attribute_swap_triplets(split.items, COLOUR_SWAP, COLOUR_SWAP_WITHIN, seed)
    if dataset == "deepfashion-multimodal":
        return attribute_swap_triplets(split.items, PATTERN_SWAP, PATTERN_SWAP_WITHIN, seed)
    return list(split.triplets)


def composed_triplets(
    train: Catalogue, test: Catalogue, dataset: str, seed: int = 0
) -> tuple[list[CompositionTriplet], list[CompositionTriplet]]:
    """(training triplets, test triplets) of a dataset under the course's conventions: the training triplets by
    :func:`split_triplets`; the test triplets the dataset's own test queries (Fashion200k's TIRG queries, the
    loaders' test triplets), except on ``deepfashion-multimodal``, whose loader has none: :func:`split_triplets` on
    the test split.
    """
    own_test_triplets = dataset != "deepfashion-multimodal"
    test_triplets = list(test.triplets) if own_test_triplets else split_triplets(test, dataset, seed)
    return split_triplets(train, dataset, seed), test_triplets


def validation_queries(
    catalogue: Catalogue, dataset: str, seed: int = 0, match: str | Sequence[str] = "attributes", k: int = 10
) -> ComposedQueries | None:
    """The composed queries of the catalogue's ``val`` split, by :func:`split_triplets` on its items and ranked
    among them: where notebook 06 picks the learned compositor to keep, so that the test queries only measure it.

    ``None`` when there is nothing to pick on: the catalogue has no ``val`` split (Fashion200k), the rule makes no
    triplet there, or the split has too few items to rank ``k`` others besides a query's reference.
    """
    if not any(item.split == "val" for item in catalogue):
        return None
    split = catalogue.split("val")
    queries = composed_queries(split, split_triplets(split, dataset, seed), match)
    return queries if len(queries) and len(split) > k else None


# --- training a compositor ------------------------------------------------------------------------------------------


def composed_batch_loss(
    loss: str = "classification", scale: float = 20.0, symmetry_weight: float = 0.0
) -> Callable[[nn.Module, dict], torch.Tensor]:
    """The per-batch loss of :func:`course_utils.train.fit` for a compositor trained on precomputed features.

    Args:
        loss: ``"classification"`` (each query must pick its target among the batch's targets; TIRG, CLIP4Cir)
            or ``"soft_triplet"`` (seed 004's; :func:`course_utils.losses.soft_triplet_loss`).
        scale: inverse temperature of the classification loss (cosine similarities are multiplied by it).
        symmetry_weight: weight of ComposeAE's rotational-symmetry term (only for :class:`ComplexRotation`):
            the target rotated back by the conjugate text must retrieve the reference.

    Returns:
        ``batch_loss(model, batch)`` for a batch with ``image``, ``text``, ``target`` ``(B, d)`` features and
        ``target_group``, ``reference_group`` ``(B,)`` (items of one group match each other; see
        :class:`TripletFeatureDataset`).
    """
    if loss not in ("classification", "soft_triplet"):
        raise ValueError(f"loss must be 'classification' or 'soft_triplet', got {loss!r}")

    def criterion(queries: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        if loss == "classification":
            return composed_classification_loss(queries, targets, scale, groups)
        return soft_triplet_loss(queries, targets, groups)

    def batch_loss(model: nn.Module, batch: dict) -> torch.Tensor:
        value = criterion(model(batch["image"], batch["text"]), batch["target"], batch["target_group"])
        if symmetry_weight:
            back = model(batch["target"], batch["text"], conjugate=True)  # target rotated back by -delta
            value = value + symmetry_weight * criterion(back, batch["image"], batch["reference_group"])
        return value

    return batch_loss
