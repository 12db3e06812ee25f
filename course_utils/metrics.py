"""Retrieval metrics: recall@K under a fair tie convention, chance levels, in-batch vs full-gallery protocols, mAP.

Introduced in notebook 01 (baseline retrieval) and reused by every later notebook. All functions accept torch
tensors or numpy arrays and return plain Python floats, numpy arrays or pandas DataFrames. The module is long but
one idea: every ranking metric of the course shares the input checks and the tie convention below, so a protocol
can never count ties or chance differently from another.

Tie convention (recall):
    Ties in the ranking are broken uniformly at random, *in expectation*. For a query, let ``s*`` be the highest
    score of any relevant gallery item, ``g`` the number of items scored strictly above ``s*``, ``t`` the number of
    items scored exactly ``s*`` (relevant or not, the relevant ones included) and ``r`` the number of relevant items
    among those ``t``. A uniformly random order of the tied block places ``m = clip(K - g, 0, t)`` of its items in
    the top K, so the hit probability at K is the hypergeometric

        P(hit@K) = 1 - C(t - r, m) / C(t, m),

    which for a single relevant item (``r = 1``) is ``clip((K - g) / t, 0, 1)``. Relevant items scored below ``s*``
    never matter: either the whole tied block fits in the top K (then a relevant item is already in it) or the
    block fills the top K. Recall@K is the mean of these probabilities over queries. Consequences: a degenerate
    model (all scores equal) scores the chance level ``chance_recall(K, gallery_size, n_relevant)`` (this is what
    the random-init ablation of notebook 04 needs) -- bit for bit with one relevant item per query, and to the
    precision stated in :func:`_hit_probability` with several -- and with no ties it is ordinary recall@K.

Tie convention (average precision):
    As ``sklearn.metrics.average_precision_score``: tied items form one threshold, and every relevant item in a
    tied block gets the precision measured at the end of the block. Without ties this is the ASEN/CRL definition
    (sort descending, AP = mean over relevant items of the precision at that item's rank).

Protocols:
    *Full gallery*: every query ranks the whole gallery (seed 002's test split, about 8,820 images: chance R@1 ≈
    0.00011).
    *In-batch*: pairs are shuffled and cut into batches of ``B``; each query only ranks the ``B`` items of its batch
    (chance R@5 = 5/32 ≈ 0.16 at B = 32). Numbers from the two protocols are not comparable; ``retrieval_table``
    prints both next to their chance levels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .checks import is_whole_number

ArrayLike = np.ndarray | torch.Tensor

#: How many query rows an error message lists before "…".
_ROWS_SHOWN = 5

#: Upper bound on the number of (query, gallery) cells processed at once; keeps memory at ~100 MB per chunk.
MAX_CELLS_PER_CHUNK = 1 << 23

TEXT_TO_IMAGE = "text→image"
IMAGE_TO_TEXT = "image→text"


# ----------------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------------


def _as_cpu_tensor(x: ArrayLike | Sequence) -> torch.Tensor:
    """``x`` as a CPU tensor of its own dtype, detached from autograd; no copy for a CPU tensor or numpy array."""
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()


def _as_float_tensor(x: ArrayLike | Sequence, name: str) -> torch.Tensor:
    """Convert to a CPU float tensor (float16/bfloat16 upcast to float32, float64 kept) without copying if possible."""
    tensor = _as_cpu_tensor(x)
    if not torch.is_floating_point(tensor):
        tensor = tensor.to(torch.float32)
    elif tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.to(torch.float32)
    if torch.isnan(tensor).any():
        raise ValueError(f"{name} contains NaN; check the embeddings (e.g. a zero vector normalised to NaN)")
    return tensor


def _as_similarity(similarity: ArrayLike) -> torch.Tensor:
    sim = _as_float_tensor(similarity, "similarity")
    if sim.ndim != 2:
        raise ValueError(f"similarity must be (n_queries, gallery_size), got shape {tuple(sim.shape)}")
    if sim.shape[0] == 0:
        raise ValueError("similarity has no queries (shape (0, g)); pass at least one query row")
    if sim.shape[1] == 0:
        raise ValueError("similarity has an empty gallery (shape (q, 0)); pass at least one gallery column")
    return sim


def _as_embeddings(x: ArrayLike, name: str) -> torch.Tensor:
    emb = _as_float_tensor(x, name)
    if emb.ndim != 2:
        raise ValueError(f"{name} must be (n, d), got shape {tuple(emb.shape)}")
    if emb.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass at least one embedding")
    return emb


def _check_same_dim(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"dimension mismatch: {name_a} has d={a.shape[1]} but {name_b} has d={b.shape[1]}; "
            "embed both with the same model"
        )


def _check_whole(value: object, name: str) -> int:
    """``value`` as an int; ``ValueError`` for floats (2.5 would be floored silently), bools and other types."""
    if not is_whole_number(value):
        raise ValueError(f"{name} must be a whole number (an int), got {value!r} ({type(value).__name__})")
    return int(value)


def _check_ks(ks: Iterable[int] | int, gallery_size: int) -> tuple[int, ...]:
    ks = tuple(ks) if isinstance(ks, Iterable) else (ks,)
    ks = tuple(_check_whole(k, "each k in ks") for k in ks)
    if not ks:
        raise ValueError("ks is empty; pass e.g. ks=(1, 5, 10)")
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > gallery_size:
            raise ValueError(f"k={k} exceeds the gallery size {gallery_size}; pass ks <= {gallery_size}")
    return ks


def _as_targets(targets: ArrayLike | Sequence[int], n_queries: int, gallery_size: int) -> torch.Tensor:
    tgt = _as_cpu_tensor(targets)
    if tgt.ndim != 1 or tgt.shape[0] != n_queries:
        raise ValueError(f"targets must be ({n_queries},) gallery columns, got shape {tuple(tgt.shape)}")
    if torch.is_floating_point(tgt) or tgt.dtype == torch.bool:
        raise ValueError(f"targets must be integer gallery columns, got dtype {tgt.dtype}")
    tgt = tgt.to(torch.int64)
    if n_queries and (tgt.min() < 0 or tgt.max() >= gallery_size):
        raise ValueError(f"targets must lie in [0, {gallery_size}), got range [{int(tgt.min())}, {int(tgt.max())}]")
    return tgt


def _as_bool_mask(relevant: torch.Tensor, name: str = "relevant") -> torch.Tensor:
    """A bool tensor from bool or 0/1 values; ``ValueError`` for graded values (0.5 is not "relevant")."""
    if relevant.dtype == torch.bool:
        return relevant
    if relevant.is_complex():
        raise ValueError(f"{name} must be boolean or 0/1, got dtype {relevant.dtype}")
    graded = (relevant != 0) & (relevant != 1)
    if graded.any():
        where = tuple(int(i) for i in torch.nonzero(graded)[0])
        raise ValueError(
            f"{name} must be boolean (or 0/1), got {relevant[where].item()!r} at {list(where)}; threshold graded "
            f"relevance first, e.g. {name} >= 0.5"
        )
    return relevant.to(torch.bool)


def _target_mask(targets: torch.Tensor, gallery_size: int) -> torch.Tensor:
    """``(q, g) bool`` relevance of ``(q,) int64`` target columns: row i is True at column ``targets[i]`` only."""
    mask = torch.zeros((targets.shape[0], gallery_size), dtype=torch.bool)
    mask[torch.arange(targets.shape[0]), targets] = True
    return mask


def _as_relevance(relevant: ArrayLike, shape: tuple[int, int]) -> torch.Tensor:
    """Turn (q,) target columns or a (q, g) boolean matrix into a (q, g) bool tensor."""
    rel = _as_cpu_tensor(relevant)
    if rel.ndim == 1:
        return _target_mask(_as_targets(rel, shape[0], shape[1]), shape[1])
    if rel.ndim == 2:
        if tuple(rel.shape) != shape:
            raise ValueError(f"relevant must have the similarity's shape {shape}, got {tuple(rel.shape)}")
        return _as_bool_mask(rel)
    raise ValueError(f"relevant must be (q,) target columns or a (q, g) bool matrix, got shape {tuple(rel.shape)}")


def _rows_per_chunk(gallery_size: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    return max(1, MAX_CELLS_PER_CHUNK // max(1, gallery_size))


# ----------------------------------------------------------------------------------------------------------------
# Core: hit probabilities under the tie convention
# ----------------------------------------------------------------------------------------------------------------


def _hit_probability(t: torch.Tensor, r: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``1 - C(t - r, m) / C(t, m)`` elementwise (float64): a relevant item among m drawn from t of which r relevant.

    ``m / t`` (one correctly rounded division) when ``r == 1``. Otherwise via log-gamma, whose rounding error grows
    with the tied block: ``1 - exp(log_miss)`` cancels when the hit probability is small. Measured against exact
    fractions (r in 2..20, m from 1 to t - 30), the worst relative error is ~6e-13 at t = 50, ~1.3e-10 at t = 1,000,
    ~2.1e-8 at t = 8,819 (the seed-002 gallery), ~7e-6 at t = 1e5 and ~2.4e-4 at t = 1e6 (absolute error at most
    ~2e-11 at t = 8,819 and ~2e-9 at t = 1e6). Far below what a recall over a few thousand queries can resolve,
    but not exact: compare such values with a tolerance.
    """
    t, r, m = t.to(torch.float64), r.to(torch.float64), m.to(torch.float64)
    log_miss = torch.lgamma(t - r + 1) - torch.lgamma((t - r - m).clamp(min=0) + 1) - torch.lgamma(t + 1)
    log_miss = log_miss + torch.lgamma(t - m + 1)
    hit = 1.0 - torch.exp(log_miss)
    hit = torch.where(m > t - r, torch.ones_like(hit), hit)  # more drawn than non-relevant items: certain hit
    hit = torch.where(m <= 0, torch.zeros_like(hit), hit)
    single = m.clamp(min=0) / t.clamp(min=1)
    return torch.where(r == 1, single, hit)


def hit_probabilities(similarity: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """Per-query probability that a relevant item is in the top K under uniformly random tie-breaking.

    Args:
        similarity: (q, g) float scores, higher is better.
        relevant: (q, g) bool; rows without any relevant item get probability 0.
        ks: the cut-offs K.

    Returns:
        (q, len(ks)) float64 probabilities (see the module docstring for the formula).
    """
    masked = similarity.masked_fill(~relevant, -math.inf)
    best = masked.max(dim=1, keepdim=True).values  # (q, 1) score s* of the best relevant item
    has_relevant = relevant.any(dim=1)
    above = (similarity > best).sum(dim=1)  # g
    tied_mask = similarity == best
    tied = tied_mask.sum(dim=1)  # t
    tied_relevant = (tied_mask & relevant).sum(dim=1)  # r
    columns = []
    for k in ks:
        drawn = (k - above).clamp(min=0).minimum(tied)  # m
        hit = _hit_probability(tied, tied_relevant, drawn)
        columns.append(torch.where(has_relevant, hit, torch.zeros_like(hit)))
    return torch.stack(columns, dim=1)


def _recall_from_chunks(
    chunks: Iterable[tuple[torch.Tensor, torch.Tensor]],
    ks: Sequence[int],
    require_relevant: bool,
    first_query_row: int = 0,
) -> dict[int, float]:
    """Sum hit probabilities over (similarity, relevant) chunks of queries and divide by the number of queries.

    With ``require_relevant``, every chunk is checked before raising, so the error gives the total count of queries
    without a relevant item and their rows counted from ``first_query_row`` (the caller's row of the first query).
    """
    totals = torch.zeros(len(ks), dtype=torch.float64)
    n_queries = 0
    missing_rows: list[int] = []
    for sim, rel in chunks:
        if require_relevant:
            missing_rows += (first_query_row + n_queries + (~rel.any(dim=1)).nonzero().flatten()).tolist()
        totals += hit_probabilities(sim, rel, ks).sum(dim=0)
        n_queries += sim.shape[0]
    if missing_rows:
        shown = ", ".join(str(row) for row in missing_rows[:_ROWS_SHOWN])
        if len(missing_rows) > _ROWS_SHOWN:
            shown += ", …"
        scope = f"{n_queries} queries"
        if first_query_row:
            scope += f" (rows {first_query_row}-{first_query_row + n_queries - 1})"
        raise ValueError(
            f"{len(missing_rows)} of the {scope} have no relevant gallery item (rows {shown}); drop them or add "
            "their targets to the gallery"
        )
    return {k: float(totals[i] / n_queries) for i, k in enumerate(ks)}


def _similarity_chunks(
    similarity: torch.Tensor, relevant: ArrayLike, chunk_size: int | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    q, g = similarity.shape
    rows = _rows_per_chunk(g, chunk_size)
    rel_tensor = _as_cpu_tensor(relevant)
    if rel_tensor.ndim == 1:
        targets = _as_targets(rel_tensor, q, g)
        for start in range(0, q, rows):
            yield similarity[start : start + rows], _target_mask(targets[start : start + rows], g)
    else:
        mask = _as_relevance(rel_tensor, (q, g))
        for start in range(0, q, rows):
            yield similarity[start : start + rows], mask[start : start + rows]


# ----------------------------------------------------------------------------------------------------------------
# Recall@K
# ----------------------------------------------------------------------------------------------------------------


def recall_at_k(
    similarity: ArrayLike,
    relevant: ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Recall@K (fraction of queries with a relevant item in the top K), ties broken randomly in expectation.

    Args:
        similarity: (q, g) scores, higher is better (e.g. cosine similarities).
        relevant: (q,) int target column per query, or a (q, g) bool matrix of relevant gallery items.
        ks: cut-offs; each must be <= g.
        chunk_size: queries processed at once (default: as many as fit ~8M cells); the result does not depend on it.

    Returns:
        ``{K: recall}`` with recalls in [0, 1].

    Raises:
        ValueError: empty input, shape mismatch, K > g, NaN scores, or a query without any relevant item.
    """
    sim = _as_similarity(similarity)
    ks = _check_ks(ks, sim.shape[1])
    return _recall_from_chunks(_similarity_chunks(sim, relevant, chunk_size), ks, require_relevant=True)


def chance_recall(k: int, gallery_size: int, n_relevant: int = 1) -> float:
    """Recall@K of a random ranking: ``1 - C(g - r, k) / C(g, k)`` (exact hypergeometric).

    Args:
        k: cut-off, 1 <= k <= gallery_size.
        gallery_size: number of ranked items g.
        n_relevant: number of relevant items r per query (1 for paired retrieval).

    Returns:
        The probability that at least one of the r relevant items is among k drawn at random; k / g when r = 1.
    """
    k, gallery_size = _check_whole(k, "k"), _check_whole(gallery_size, "gallery_size")
    n_relevant = _check_whole(n_relevant, "n_relevant")
    if gallery_size < 1:
        raise ValueError(f"gallery_size must be >= 1, got {gallery_size}")
    if not 1 <= k <= gallery_size:
        raise ValueError(f"k must be in [1, gallery_size={gallery_size}], got {k}")
    if not 1 <= n_relevant <= gallery_size:
        raise ValueError(f"n_relevant must be in [1, gallery_size={gallery_size}], got {n_relevant}")
    if n_relevant == 1:
        return k / gallery_size
    if k > gallery_size - n_relevant:
        return 1.0
    miss = 1.0
    for i in range(k):  # C(g - r, k) / C(g, k) = prod_i (g - r - i) / (g - i)
        miss *= (gallery_size - n_relevant - i) / (gallery_size - i)
    return 1.0 - miss


def mean_chance_recall(k: int, gallery_size: int, relevant_counts: Sequence[int]) -> float:
    """Recall@K of a random ranking averaged over queries that each have their own number of relevant items.

    A query with no relevant item in the gallery counts as a miss (0), as in :func:`attribute_match_recall`.

    Args:
        k: cut-off.
        gallery_size: number of ranked items g.
        relevant_counts: relevant items per query.
    """
    counts = [int(r) for r in relevant_counts]
    if not counts:
        raise ValueError("relevant_counts is empty: a mean over no queries is undefined; pass at least one query")
    return float(np.mean([chance_recall(k, gallery_size, r) if r else 0.0 for r in counts]))


def full_gallery_recall(
    query_embeddings: ArrayLike,
    gallery_embeddings: ArrayLike,
    targets: ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Recall@K of every query against the whole gallery, with similarities computed chunk by chunk.

    Args:
        query_embeddings: (q, d) float, L2-normalised (cosine similarity = dot product).
        gallery_embeddings: (g, d) float, L2-normalised.
        targets: (q,) int gallery column of each query's match (``arange(n)`` for paired data).
        ks: cut-offs, each <= g.
        chunk_size: queries per similarity chunk (default: bounded to ~8M cells).

    Returns:
        ``{K: recall}``; swap the arguments for the other direction.
    """
    queries = _as_embeddings(query_embeddings, "query_embeddings")
    gallery = _as_embeddings(gallery_embeddings, "gallery_embeddings")
    _check_same_dim(queries, gallery, "query_embeddings", "gallery_embeddings")
    dtype = torch.promote_types(queries.dtype, gallery.dtype)
    queries, gallery = queries.to(dtype), gallery.to(dtype)
    ks = _check_ks(ks, gallery.shape[0])
    tgt = _as_targets(targets, queries.shape[0], gallery.shape[0])
    rows = _rows_per_chunk(gallery.shape[0], chunk_size)

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, queries.shape[0], rows):
            yield queries[start : start + rows] @ gallery.T, _target_mask(tgt[start : start + rows], gallery.shape[0])

    return _recall_from_chunks(chunks(), ks, require_relevant=True)


def in_batch_recall(
    text_embeddings: ArrayLike,
    image_embeddings: ArrayLike,
    batch_size: int = 32,
    ks: Sequence[int] = (1, 5, 10),
    seed: int = 0,
) -> dict[int, float]:
    """Recall@K where each query only ranks the items of its own mini-batch (the protocol of seed 002's slides).

    Pairs ``(text_embeddings[i], image_embeddings[i])`` are shuffled with ``seed`` and cut into consecutive batches
    of ``batch_size``; the last partial batch is dropped (so every query faces the same gallery size and the chance
    level is exactly ``K / batch_size``). Inside a batch, each row of ``text_embeddings`` is a query and the batch's
    rows of ``image_embeddings`` are its gallery; pass images first for image→text. All batches have the same size,
    so the average over batches weighted by queries is the mean over all kept queries.

    Args:
        text_embeddings: (n, d) query side, L2-normalised.
        image_embeddings: (n, d) gallery side, row i paired with query i.
        batch_size: in-batch gallery size B, 1 <= B <= n.
        ks: cut-offs, each <= batch_size.
        seed: seed of the shuffle.

    Returns:
        ``{K: recall}`` over the ``(n // B) * B`` kept queries.
    """
    queries = _as_embeddings(text_embeddings, "text_embeddings")
    gallery = _as_embeddings(image_embeddings, "image_embeddings")
    _check_same_dim(queries, gallery, "text_embeddings", "image_embeddings")
    if queries.shape[0] != gallery.shape[0]:
        raise ValueError(
            f"in-batch recall needs paired rows: got {queries.shape[0]} queries and {gallery.shape[0]} gallery items"
        )
    n = queries.shape[0]
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n_pairs={n}], got {batch_size}")
    ks = _check_ks(ks, batch_size)
    dtype = torch.promote_types(queries.dtype, gallery.dtype)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    n_batches = n // batch_size
    kept = order[: n_batches * batch_size]
    batches_per_chunk = max(1, MAX_CELLS_PER_CHUNK // (batch_size * batch_size))
    eye = torch.eye(batch_size, dtype=torch.bool)

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, n_batches, batches_per_chunk):
            stop = min(n_batches, start + batches_per_chunk)
            idx = kept[start * batch_size : stop * batch_size]
            q = queries[idx].to(dtype).view(stop - start, batch_size, -1)
            g = gallery[idx].to(dtype).view(stop - start, batch_size, -1)
            sim = torch.bmm(q, g.transpose(1, 2)).reshape(-1, batch_size)
            yield sim, eye.repeat(stop - start, 1)

    return _recall_from_chunks(chunks(), ks, require_relevant=True)


def retrieval_table(
    image_embeddings: ArrayLike,
    text_embeddings: ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """Both directions × {full gallery, in-batch, and their chance levels}: the table that explains seed 002.

    Seed 002 reported R@1 = 0.0001 on its test split (about 8,820 images) next to R@5 ≈ 0.59 in batches of 32: the
    first is chance (1/8820 ≈ 0.00011), the second is a different, far easier protocol. Printing each number beside
    its chance level makes that visible.

    Args:
        image_embeddings: (n, d) L2-normalised; row i is paired with ``text_embeddings[i]``.
        text_embeddings: (n, d) L2-normalised.
        ks: cut-offs, each <= batch_size.
        batch_size: in-batch gallery size B.
        seed: seed of the in-batch shuffle.

    Returns:
        DataFrame indexed by (direction, protocol) with direction in {"text→image", "image→text"} and protocol in
        {"full gallery", "in-batch (B)", "chance (full gallery)", "chance (in-batch)"} (B replaced by its value),
        columns ``R@K``, values in [0, 1].
    """
    images = _as_embeddings(image_embeddings, "image_embeddings")
    texts = _as_embeddings(text_embeddings, "text_embeddings")
    if images.shape[0] != texts.shape[0]:
        raise ValueError(f"need paired rows: got {images.shape[0]} images and {texts.shape[0]} texts")
    n = images.shape[0]
    ks = _check_ks(ks, min(n, batch_size))
    targets = torch.arange(n)
    rows: dict[tuple[str, str], dict[int, float]] = {}
    for direction, queries, gallery in ((TEXT_TO_IMAGE, texts, images), (IMAGE_TO_TEXT, images, texts)):
        rows[(direction, "full gallery")] = full_gallery_recall(queries, gallery, targets, ks)
        rows[(direction, f"in-batch ({batch_size})")] = in_batch_recall(queries, gallery, batch_size, ks, seed)
        rows[(direction, "chance (full gallery)")] = {k: chance_recall(k, n) for k in ks}
        rows[(direction, "chance (in-batch)")] = {k: chance_recall(k, batch_size) for k in ks}
    table = pd.DataFrame.from_dict(
        {key: {f"R@{k}": value for k, value in recalls.items()} for key, recalls in rows.items()}, orient="index"
    )
    table.index = pd.MultiIndex.from_tuples(table.index, names=["direction", "protocol"])
    table.attrs.update(n_pairs=n, batch_size=batch_size, seed=seed)
    return table


def recall_vs_gallery_size(
    image_embeddings: ArrayLike,
    text_embeddings: ArrayLike,
    sizes: Sequence[int],
    k: int = 10,
    repeats: int = 5,
    seed: int = 0,
    direction: str = TEXT_TO_IMAGE,
) -> pd.DataFrame:
    """Recall@k on random sub-galleries of several sizes: how the same model looks better on smaller galleries.

    For each size s and repeat, s pairs are drawn without replacement; each of their queries ranks the s items of
    the other modality (so its own pair is always in its sub-gallery).

    Args:
        image_embeddings: (n, d) L2-normalised; row i paired with ``text_embeddings[i]``.
        text_embeddings: (n, d) L2-normalised.
        sizes: sub-gallery sizes, each in [k, n].
        k: cut-off.
        repeats: random sub-galleries per size.
        seed: seed of the draws.
        direction: "text→image" (texts are queries) or "image→text".

    Returns:
        DataFrame with columns gallery_size, recall (mean over repeats), recall_std, chance (= k / size), one row
        per size, for a figure.
    """
    images = _as_embeddings(image_embeddings, "image_embeddings")
    texts = _as_embeddings(text_embeddings, "text_embeddings")
    _check_same_dim(images, texts, "image_embeddings", "text_embeddings")
    if images.shape[0] != texts.shape[0]:
        raise ValueError(f"need paired rows: got {images.shape[0]} images and {texts.shape[0]} texts")
    if direction not in (TEXT_TO_IMAGE, IMAGE_TO_TEXT):
        raise ValueError(f"direction must be {TEXT_TO_IMAGE!r} or {IMAGE_TO_TEXT!r}, got {direction!r}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if len(sizes) == 0:
        raise ValueError("sizes is empty; pass e.g. sizes=(32, 100, 1000)")
    n = images.shape[0]
    queries, gallery = (texts, images) if direction == TEXT_TO_IMAGE else (images, texts)
    rng = np.random.default_rng(seed)
    records = []
    for size in sizes:
        size = int(size)
        if not k <= size <= n:
            raise ValueError(f"gallery size {size} must be in [k={k}, n_pairs={n}]")
        recalls = []
        for _ in range(repeats):
            idx = torch.from_numpy(rng.choice(n, size=size, replace=False))
            recalls.append(full_gallery_recall(queries[idx], gallery[idx], torch.arange(size), (k,))[k])
        records.append(
            {
                "gallery_size": size,
                "recall": float(np.mean(recalls)),
                "recall_std": float(np.std(recalls)),
                "chance": chance_recall(k, size),
            }
        )
    return pd.DataFrame.from_records(records)


def attribute_match_recall(
    similarity: ArrayLike,
    query_attributes: Sequence[dict[str, Any]],
    gallery_attributes: Sequence[dict[str, Any]],
    ks: Sequence[int] = (1, 5, 10),
    attributes: Sequence[str] | None = None,
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Recall@K where a hit is any top-K item that has all of the query's attributes (e.g. colour and category).

    A query's required attributes are its keys (restricted to ``attributes`` when given); a gallery item matches
    when it has the same value for each of them. A query with no matching item in the gallery counts as a miss.

    Args:
        similarity: (q, g) scores.
        query_attributes: q dicts, e.g. ``{"colour": "red", "category": "dress"}``.
        gallery_attributes: g dicts.
        ks: cut-offs, each <= g.
        attributes: attribute names to require (default: all keys of each query).
        chunk_size: queries per chunk (default: bounded to ~8M cells).

    Returns:
        ``{K: recall}`` under the module's tie convention.
    """
    sim = _as_similarity(similarity)
    q, g = sim.shape
    if len(query_attributes) != q or len(gallery_attributes) != g:
        raise ValueError(
            f"need one attribute dict per row and column: similarity is {tuple(sim.shape)}, got "
            f"{len(query_attributes)} query and {len(gallery_attributes)} gallery dicts"
        )
    ks = _check_ks(ks, g)
    query_t, gallery_t = _attribute_codes(query_attributes, gallery_attributes, attributes)
    rows = _rows_per_chunk(g * gallery_t.shape[1], chunk_size)

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, q, rows):
            yield sim[start : start + rows], _attribute_matches(query_t[start : start + rows], gallery_t)

    return _recall_from_chunks(chunks(), ks, require_relevant=False)


def same_value_mask(query_values: Sequence[Any], gallery_values: Sequence[Any]) -> torch.Tensor:
    """``(q, g) bool``: gallery item j has the same value as query i (e.g. an identical caption or title) — the
    relevance of recall that counts every item of identical caption as a hit (:func:`recall_at_k` takes it)."""
    query, gallery = _object_vector(query_values), _object_vector(gallery_values)
    return torch.from_numpy(query[:, None] == gallery[None, :])


def _object_vector(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (``np.asarray`` would turn a list of tuples into a 2-D array)."""
    vector = np.empty(len(values), dtype=object)
    vector[:] = list(values)
    return vector


def attribute_match_counts(
    query_attributes: Sequence[dict[str, Any]],
    gallery_attributes: Sequence[dict[str, Any]],
    attributes: Sequence[str] | None = None,
    chunk_size: int | None = None,
) -> list[int]:
    """How many gallery items match each query under :func:`attribute_match_recall`'s rule (its relevant items,
    e.g. for :func:`mean_chance_recall`). Arguments as there."""
    query_t, gallery_t = _attribute_codes(query_attributes, gallery_attributes, attributes)
    rows = _rows_per_chunk(len(gallery_attributes) * gallery_t.shape[1], chunk_size)
    return [
        int(count)
        for start in range(0, len(query_attributes), rows)
        for count in _attribute_matches(query_t[start : start + rows], gallery_t).sum(dim=1)
    ]


def _attribute_codes(
    query_attributes: Sequence[dict[str, Any]],
    gallery_attributes: Sequence[dict[str, Any]],
    attributes: Sequence[str] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attribute values as integer codes per attribute: ``(q, a)`` query codes and ``(g, a)`` gallery codes; a
    value missing from a gallery item is -1, an attribute a query does not require is -2."""
    names = sorted({key for attrs in query_attributes for key in attrs}) if attributes is None else list(attributes)
    if not names:
        raise ValueError("no attributes to match: the query dicts are empty and `attributes` was not given")
    gallery_codes = np.full((len(gallery_attributes), len(names)), -1, dtype=np.int64)
    query_codes = np.full((len(query_attributes), len(names)), -2, dtype=np.int64)
    for a, name in enumerate(names):
        vocabulary: dict[Any, int] = {}
        for j, attrs in enumerate(gallery_attributes):
            if name in attrs:
                gallery_codes[j, a] = vocabulary.setdefault(attrs[name], len(vocabulary))
        for i, attrs in enumerate(query_attributes):
            if name in attrs:
                query_codes[i, a] = vocabulary.get(attrs[name], len(vocabulary))  # unseen value: matches nothing
    unconstrained = np.flatnonzero((query_codes == -2).all(axis=1))
    if len(unconstrained):
        raise ValueError(
            f"{len(unconstrained)} queries have none of the attributes {names} (first: query "
            f"{int(unconstrained[0])}); drop them or choose other `attributes`"
        )
    return torch.from_numpy(query_codes), torch.from_numpy(gallery_codes)


def _attribute_matches(query_codes: torch.Tensor, gallery_codes: torch.Tensor) -> torch.Tensor:
    """``(q, g) bool``: gallery item j has every attribute value query i requires."""
    query_codes = query_codes[:, None, :]
    return ((query_codes == gallery_codes[None]) | (query_codes == -2)).all(dim=2)


def composed_recall(
    similarity: ArrayLike,
    relevant: ArrayLike,
    ks: Sequence[int] = (1, 10, 50, 100),
    exclude: ArrayLike | None = None,
    chunk_size: int | None = None,
    first_query_row: int = 0,
) -> dict[int, float]:
    """Recall@K for composed (reference image + modification text) retrieval, Fashion200k convention.

    A hit is a top-K item that matches the target (e.g. has the target's caption; the caller builds ``relevant``).
    The query's own reference image is removed from the ranking: its score is set to -inf and it is never relevant.

    Args:
        similarity: (q, g) scores of composed queries against the gallery.
        relevant: (q, g) bool matrix (or (q,) target columns).
        ks: cut-offs, each <= g - 1 when ``exclude`` is given, else <= g.
        exclude: (q,) int gallery column of each query's reference image, or None.
        chunk_size: queries per chunk (default: bounded to ~8M cells).
        first_query_row: the caller's row of this similarity's first query, when the caller scores its queries in
            slices (as ``tasks.composed.composed_recall_at_k``), so that errors name the caller's rows.

    Returns:
        ``{K: recall}`` under the module's tie convention.

    Raises:
        ValueError: bad shapes, K too large, or a query left without a relevant item after the exclusion (its row,
            counted from ``first_query_row``, is named).
    """
    sim = _as_similarity(similarity)
    q, g = sim.shape
    rel = _as_relevance(relevant, (q, g))
    if exclude is not None:
        excluded = _as_targets(exclude, q, g)
        rows = torch.arange(q)
        sim = sim.clone()
        sim[rows, excluded] = -math.inf
        rel = rel.clone()
        rel[rows, excluded] = False
        ks = _check_ks(ks, g - 1)
    else:
        ks = _check_ks(ks, g)
    if _check_whole(first_query_row, "first_query_row") < 0:
        raise ValueError(f"first_query_row must be >= 0, got {first_query_row}")
    chunks = _similarity_chunks(sim, rel, chunk_size)
    return _recall_from_chunks(chunks, ks, require_relevant=True, first_query_row=first_query_row)


# ----------------------------------------------------------------------------------------------------------------
# Average precision (attribute-specific retrieval: ASEN, ASEN++, CRL)
# ----------------------------------------------------------------------------------------------------------------


def _average_precision_rows(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """(q, c) scores and bool relevance -> (q,) AP, tied blocks scored at their end (as sklearn)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    sorted_relevant = np.take_along_axis(relevant, order, axis=1)
    q, c = scores.shape
    positions = np.broadcast_to(np.arange(c), (q, c))
    # A position ends a tied block when the next score differs (or it is the last one).
    is_end = np.ones((q, c), dtype=bool)
    is_end[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    block_end = np.where(is_end, positions, c)
    block_end = np.minimum.accumulate(block_end[:, ::-1], axis=1)[:, ::-1]  # next block end at or after each position
    hits = np.cumsum(sorted_relevant, axis=1)
    precision_at_block_end = np.take_along_axis(hits, block_end, axis=1) / (block_end + 1)
    n_relevant = sorted_relevant.sum(axis=1)
    return (precision_at_block_end * sorted_relevant).sum(axis=1) / n_relevant


def average_precisions(scores: ArrayLike, relevant: ArrayLike) -> np.ndarray:
    """Average precision of each query over its full ranking (the building block of mAP).

    Args:
        scores: (q, c) scores of q queries against c candidates, higher is better.
        relevant: (q, c) bool, which candidates are relevant; each query needs at least one.

    Returns:
        (q,) float64 per-query AP; ``.mean()`` is the mAP.
    """
    s = _as_float_tensor(scores, "scores").numpy()
    rel = _as_bool_mask(_as_cpu_tensor(relevant)).numpy()
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (n_queries, n_candidates) matrix, got shape {s.shape}")
    if rel.shape != s.shape:
        raise ValueError(f"relevant must have the scores' shape {s.shape}, got {rel.shape}")
    missing = np.flatnonzero(~rel.any(axis=1))
    if len(missing):
        raise ValueError(
            f"AP is undefined for {len(missing)} queries without relevant candidates (first: query "
            f"{int(missing[0])}); drop them before computing mAP"
        )
    return _average_precision_rows(s, rel)


def average_precision(scores: ArrayLike, relevant: ArrayLike) -> float:
    """Average precision of one query: mean over relevant items of the precision at that item's rank.

    Args:
        scores: (c,) scores of the candidates.
        relevant: (c,) bool, at least one True.

    Returns:
        AP in (0, 1]; equals ``sklearn.metrics.average_precision_score(relevant, scores)``, ties included.
    """
    s = _as_float_tensor(scores, "scores")
    rel = _as_cpu_tensor(relevant)
    if s.ndim != 1 or rel.ndim != 1:
        raise ValueError(
            f"average_precision takes one query: scores and relevant must be 1-D, got {tuple(s.shape)} and "
            f"{tuple(rel.shape)}; use average_precisions for (q, c) matrices"
        )
    return float(average_precisions(s[None], rel[None])[0])


def attribute_specific_map(per_condition: dict[str, tuple[ArrayLike, ArrayLike]]) -> dict[str, float]:
    """mAP per condition (attribute) and overall, as reported by ASEN, ASEN++ and CRL.

    Args:
        per_condition: ``{condition: (scores (q_c, c_c), relevant (q_c, c_c) bool)}``, e.g. one entry per attribute
            ("collar design", "sleeve length", ...).

    Returns:
        ``{condition: mAP, ..., "overall": sum of all per-query APs / total number of queries}`` (query-weighted).
    """
    if not per_condition:
        raise ValueError("per_condition is empty; pass {condition: (scores, relevant)}")
    if "overall" in per_condition:
        raise ValueError('"overall" is reserved for the query-weighted mean; rename that condition')
    result: dict[str, float] = {}
    ap_sum, n_queries = 0.0, 0
    for condition, (scores, relevant) in per_condition.items():
        aps = average_precisions(scores, relevant)
        result[condition] = float(aps.mean())
        ap_sum += float(aps.sum())
        n_queries += len(aps)
    result["overall"] = ap_sum / n_queries
    return result


def without_negative_zero(value: float, spec: str) -> str:
    """``format(value, spec)``, except that a value the format rounds to zero reads as zero (``+0.0`` or ``0.0``),
    never ``-0.0``: a loss that the digits do not show (what Python 3.11's ``z`` option does; the course also allows
    3.10, which lacks it).
    """
    text = format(value, spec)
    rounds_to_zero = not any(digit in text for digit in "123456789")
    return format(0.0, spec) if "-" in text and rounds_to_zero else text


def signed(change: float, digits: int = 1, kind: str = "f") -> str:
    """A change with its sign, to ``digits`` decimals, for prose: ``+3.5``, ``-0.1``, and ``+0.0`` for a change that
    rounds to zero from either side. ``kind="%"``: a relative change as a percentage (``-0.004`` -> ``+0%``)."""
    return without_negative_zero(change, f"+.{digits}{kind}")


@dataclass(frozen=True)
class RecallDifference:
    """``new - old``: two recalls (or shares of queries) over ``queries`` queries each, read against their noise.

    One run's recall over ``n`` queries is a binomial proportion with standard error ``sqrt(p (1 - p) / n)``; the
    difference of two has the root of their summed variances. A difference beyond two of those standard errors is
    a change (``verdict`` "a gain" or "a loss"); anything smaller is "within noise". Two recalls measured on the
    same queries are correlated, so reading them as independent makes the rule cautious: it calls fewer changes.
    The notebooks use it to word a comparison; a claim the course makes rests on several seeds (``findings``).
    """

    new: float
    old: float
    queries: int

    def __post_init__(self) -> None:
        for field in ("new", "old"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"RecallDifference.{field} must be a recall (a fraction in [0, 1]), got {value!r}; "
                    "pass fractions, not percentages"
                )
        if _check_whole(self.queries, "RecallDifference.queries") < 1:
            raise ValueError(
                f"RecallDifference.queries must be >= 1 (the queries each recall is over), got {self.queries}"
            )

    @property
    def difference(self) -> float:
        return self.new - self.old

    @property
    def noise(self) -> float:
        """Two standard errors of the difference."""
        variance = self.new * (1 - self.new) + self.old * (1 - self.old)
        return 2 * math.sqrt(variance / self.queries)

    @property
    def beyond_noise(self) -> bool:
        return abs(self.difference) > self.noise

    @property
    def verdict(self) -> str:
        """ "a gain", "a loss" or "within noise"."""
        if not self.beyond_noise:
            return "within noise"
        return "a gain" if self.difference > 0 else "a loss"

    def __str__(self) -> str:
        return f"{signed(self.difference, 3)}, {self.verdict}; two standard errors {self.noise:.3f}"
