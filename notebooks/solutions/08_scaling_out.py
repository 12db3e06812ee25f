"""Worked solutions to the exercises of notebook 08 (scaling out: data-parallel training, sharded embedding, a vector
database and an index bigger than RAM).

Executed on the ``ci`` profile by ``tests/test_solutions.py`` (``pytest -m solutions``), in one process: the
solutions reproduce what each rank computes, so no ``torchrun`` is needed to check them.

Exercise 1 (code, global vs local negatives). ``ranks_losses`` splits one global batch over ``world_size`` ranks and
computes, for the same features, the global-batch loss, the mean of the ranks' losses with every rank's features
gathered (``clip_contrastive_loss_local``, notebook 08's) and the mean of the ranks' losses on their own slice
only (``clip_contrastive_loss`` per slice, no gather). The gathered mean *is* the global loss, so the averaged
gradients are the 1-process gradients and the 2-process weights stay where the 1-process ones go (up to float
rounding). Without the gather each rank's loss is another function: every caption competes only with its own
slice's images, a softmax over ``b`` instead of ``B`` columns. Row by row the log-sum-exp over a subset of the
columns is smaller, so the local loss is *lower* than the global one for the same features whenever
``world_size > 1`` — an easier task, whose gradients differ, so the 2-process weights drift away from the 1-process
ones step after step. With 32 of 1,024 pairs per GPU, the gathered loss contrasts each image with 1,023 captions,
the local one with 31: more, and harder, negatives make the better embedding (the reason CLIP trains with a
32,768 batch gathered over its GPUs, and why open_clip's ``gather_with_grad`` exists).

Exercise 2 (code, uneven shards). ``uneven_shards`` embeds ranks 0 and 2 of 3, merges, then embeds rank 1 with
another batch size and merges again. The first merge raises ``FileNotFoundError`` naming the missing rank ("shards
of ranks [1] (of 3) are missing; rerun those ranks"). The second is caught by the manifests: every manifest
records its ``batch_size``, and merge refuses manifests that disagree on it, naming each value's files. It must:
each rank's rows are whole batches (``shard_rows``), so shards of two batch sizes would not tile the catalogue.

Exercise 3 (code, push the filter down). ``FashionRetriever`` needs one embedding per catalogue item, so the sweep
works one level down, on the index calls themselves. ``filter_near_share`` picks an attribute filter that keeps
about a given share of the catalogue's items (1 in 10 with ``colour`` alone, 1 in 100 with ``colour`` and
``category`` together on the drawings); ``pushed_filter_sweep`` builds, at each size, that many perturbed copies of
the catalogue embeddings (notebook 08's ``perturbed``), each carrying its source item's attributes, writes them into
a fresh ``MilvusIndex`` (``add`` seals them, so the search takes the sealed path) and times, one query at a time,
``MilvusIndex.search(query, k, filters)`` against an exact search over the same rows with the same mask (every score
computed, the rows the filter rejects set to -inf, then ``torch.topk``: how notebook 07's retriever filters). Both
return the same top-k ids. What each pays: the exact search scores every row whatever the filter keeps, so its time
grows with all the rows; Milvus evaluates the filter inside the engine, where an engine *could* skip the rows that
fail it, but Milvus Lite 3 runs in this process, in Python, behind a local gRPC server that every search crosses (a
fixed cost per call), and loops over every stored row on each search before it ranks, so its time grows with all the
rows too. The course's own measurement, README › Scaling out › *Milvus Lite against exact search*
(``benchmarks/bench_milvus.py``, on its own collections of random vectors, with filters keeping 1 row in 10 and 1
in 100), found Milvus Lite slower than exact search at every size and filter it measured, and with exact search's
top-k: no crossing. With a filter its ratio to exact search was smaller at the larger size, but two sizes are no
trend to extrapolate a crossing from. Read the small sweep here the same way: the ``Milvus / exact`` column across
its sizes, per filter, is this machine's answer, not a constant. A crossing, if there is one, is a property of
another engine: a Milvus server with an approximate index (``index_type="HNSW"``), which no course run measured; run
the same sweep against its URI to find out.

Exercise 4 (code, codes vs re-ranking). ``codes_vs_reranking`` builds an IVF-PQ index per ``pq_m`` over the same
vectors and searches it with and without exact re-ranking of the top ``rerank`` candidates. Bytes per vector are
``pq_m`` (8-bit codes) against ``4 x dim`` for float32. At a fixed ``pq_m`` recall can only grow with ``rerank``:
the candidate sets are nested, and an item of the true top 10 that is among the candidates is always kept by the
exact re-scoring. A smaller code plus re-ranking beats a larger code when the true neighbours still rank within the
top ``rerank`` by their coarse codes: the codes then only have to *find* candidates, and the exact vectors (on disk,
read for the candidates only) order them. It stops paying when the codes are too coarse to bring the neighbours
into the candidates at all, or when reading the candidates' rows costs more time than the query may take.

Exercise 5 (paper). The same command on each of the 2 machines (the c10d rendezvous, served from the first, hands
out the ranks; no ``--node-rank`` needed)::

    torchrun --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint machine0:29500 \\
        -m course_utils.train_contrastive --batch-size 1024 ...

``--batch-size`` is the *global* batch, so each of the 8 GPUs holds 1,024 / 8 = 128 pairs; with the features
gathered, each image's loss contrasts its caption with the other 1,023 captions of the global batch (and each
caption with 1,023 images). Without the gather (exercise 1) it would be 127.
"""

from __future__ import annotations

import collections
import itertools
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import course_utils as cu
import course_utils.embed_shards
import course_utils.index_ondisk
import course_utils.vector_db


def ranks_losses(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, world_size: int
) -> dict[str, float]:
    """Exercise 1: the global-batch loss, and the mean of ``world_size`` ranks' losses with and without the gather."""
    per_rank = len(image_features) // world_size
    gathered, own_slice = [], []
    for rank in range(world_size):
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        gathered.append(
            cu.losses.clip_contrastive_loss_local(
                image_features[rows], text_features[rows], image_features, text_features, logit_scale, rank * per_rank
            )
        )
        own_slice.append(cu.losses.clip_contrastive_loss(image_features[rows], text_features[rows], logit_scale))
    return {
        "global batch": float(cu.losses.clip_contrastive_loss(image_features, text_features, logit_scale)),
        "ranks, gathered": float(torch.stack(gathered).mean()),
        "ranks, own slice only": float(torch.stack(own_slice).mean()),
    }


def uneven_shards(bundle, catalogue, folder: Path, batch_size: int = 32) -> dict[str, str]:
    """Exercise 2: what ``merge_shards`` says with rank 1 of 3 missing, then with rank 1 run at another batch size."""
    said = {}
    for rank in (0, 2):
        cu.embed_shards.embed_shard(bundle, catalogue, folder, rank, 3, batch_size=batch_size)
    try:
        cu.embed_shards.merge_shards(folder, catalogue)
    except FileNotFoundError as err:
        said["rank 1 missing"] = str(err)
    cu.embed_shards.embed_shard(bundle, catalogue, folder, 1, 3, batch_size=batch_size // 2)
    try:
        cu.embed_shards.merge_shards(folder, catalogue)
    except ValueError as err:
        said["rank 1 at another batch size"] = str(err)
    return said


def filter_near_share(
    attributes: Sequence[Mapping[str, str]], share: float, names: Sequence[str] = ("colour", "category")
) -> dict[str, str]:
    """Exercise 3: the filter on one of ``names``, or on two of them together, whose matching share of the rows'
    ``attributes`` is closest to ``share`` (ties: the first in sorted order)."""
    best: tuple[float, dict[str, str]] | None = None
    for size in (1, 2):
        for combination in itertools.combinations(names, size):
            counts = collections.Counter(tuple(row[name] for name in combination) for row in attributes)
            for values, count in sorted(counts.items()):
                gap = abs(count / len(attributes) - share)
                if best is None or gap < best[0]:
                    best = (gap, dict(zip(combination, values)))
    return best[1]


def pushed_filter_sweep(
    source: np.ndarray,
    attributes: Sequence[Mapping[str, str]],
    uri: str,
    filters: Sequence[Mapping[str, str]],
    sizes: Sequence[int] = (2000, 6000, 18000),
    queries: int = 20,
    k: int = 10,
    perturbation: float = 0.3,
    seed: int = 0,
) -> pd.DataFrame:
    """Exercise 3: median ms of a filtered ``MilvusIndex.search`` and of an exact masked search over the same rows.

    Args:
        source: (n, d) float32 catalogue embeddings, L2-normalised.
        attributes: n dicts, row i's attributes (the copies of row i carry them).
        uri: a Milvus Lite file (``.db``) or server; one collection per size is written there.
        filters: the filters to time (``{}``: none).
        sizes: rows of perturbed copies per collection.
        queries: single queries timed per row of the table (perturbed copies too, another draw).
        k: results per query.
        perturbation: noise norm of the copies, as notebook 08's ``perturbation``.
        seed: seeds the copies.

    Returns:
        One row per (size, filter): matching rows, both medians, their ratio, and the share of queries whose Milvus
        top-k ids are the exact search's.
    """
    rng = np.random.default_rng(seed)
    dim = source.shape[1]

    def copies(n: int) -> tuple[np.ndarray, list[Mapping[str, str]]]:
        rows, vectors = cu.index.perturbed_copies(source, n, perturbation, rng)
        return vectors.astype(np.float32), [attributes[r] for r in rows]

    probes = torch.from_numpy(copies(queries)[0])
    table = []
    for n in sizes:
        vectors, rows = copies(n)
        index = cu.vector_db.MilvusIndex.create(
            uri, dim, sorted(attributes[0]), collection=f"copies_{n}", overwrite=True
        )
        try:
            index.add(vectors, attributes=rows)  # sealed: the search path a served collection takes
            gallery = torch.from_numpy(vectors)
            for wanted in filters:
                allowed = torch.tensor([all(row.get(a) == v for a, v in wanted.items()) for row in rows])
                index.search(probes[:1], k, dict(wanted) or None)  # warm-up, untimed
                milvus_ms, exact_ms, same = [], [], 0
                for query in probes:
                    start = time.perf_counter()
                    found = index.search(query[None], k, dict(wanted) or None)[1][0]
                    milvus_ms.append(1000 * (time.perf_counter() - start))
                    start = time.perf_counter()
                    scores = gallery @ query
                    scores[~allowed] = -torch.inf
                    exact = torch.topk(scores, min(k, int(allowed.sum()))).indices
                    exact_ms.append(1000 * (time.perf_counter() - start))
                    same += set(found[found >= 0].tolist()) == set(exact.tolist())
                milvus, exact_median = statistics.median(milvus_ms), statistics.median(exact_ms)
                table.append(
                    {
                        "rows": n,
                        "filter": ", ".join(f"{a}={v}" for a, v in wanted.items()) or "none",
                        "matching rows": int(allowed.sum()),
                        "Milvus median ms": milvus,
                        "exact median ms": exact_median,
                        "Milvus / exact": milvus / exact_median,
                        "same top-k": same / len(probes),
                    }
                )
        finally:
            index.close()
    return pd.DataFrame(table)


def codes_vs_reranking(
    vectors: np.ndarray,
    queries: np.ndarray,
    pq_ms=(8, 16, 32, 64),
    reranks=(0, 20, 50, 200),
    nlist: int = 16,
    nprobe: int = 4,
    k: int = 10,
) -> pd.DataFrame:
    """Exercise 4: recall@k of IVF-PQ per code size (``pq_m`` bytes per vector) and number of candidates re-ranked
    exactly (0: the codes' own order), at a fixed ``nprobe``."""
    exact = cu.index.ExactIndex(vectors.shape[1])
    exact.add(vectors)
    truth = exact.search(queries, k)[1]
    rows = []
    for pq_m in pq_ms:
        codes = cu.index.FaissIndex(vectors.shape[1], kind="ivfpq", nlist=nlist, nprobe=nprobe, pq_m=pq_m)
        codes.add(vectors)
        for rerank in reranks:
            searcher = cu.index_ondisk.RerankedIndex(codes, vectors, rerank) if rerank else codes
            found = searcher.search(queries, k)[1]
            recall = np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)])
            rows.append({"pq_m": pq_m, "bytes per vector": pq_m, "rerank": rerank, f"recall@{k}": recall})
    return pd.DataFrame(rows)
