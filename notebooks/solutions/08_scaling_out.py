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

Exercise 3 (code, push the filter down). ``filtered_latency`` times ``search_by_text`` with a filter on any
retriever, the exact one or ``milvus_retriever``'s, which must return the same items. What decides where the
curves cross: the exact retriever scores every gallery vector and then masks (its time grows with the whole
gallery, not with the matching share), while Milvus evaluates the filter inside the engine, where an engine can skip
the rows that fail it (whether and how much it skips depends on the engine and its index type), and it pays a fixed
cost per call (each search crosses Milvus Lite's local gRPC server; notebook 08's table shows that cost at a few
thousand items). Milvus Lite 3 runs in the kernel, in Python, and on each search loops over every stored row in
Python before it ranks (which rows are visible: not overwritten, not deleted) whatever the filter keeps, so its time
grows with all the rows too; ``benchmarks/bench_milvus.py`` times both, with filters keeping 1 row in 10 and 1 in
100, as the collection grows (README › Scaling out has its last kept run). Insert with ``MilvusIndex.add`` (or
``add(..., seal=False)`` and a sealing ``add`` after): rows left unsealed are searched by a slower path, which would
time the engine's ingestion, not its search. To find a crossing on another engine, insert growing numbers of
perturbed copies of the embeddings (notebook 08's ``perturbed``) with their attributes into a ``MilvusIndex`` and
into an ``ExactIndex``, and time both at each size: it is a measurement of your machine and engine, not a
constant.

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

import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import course_utils as cu
import course_utils.embed_shards
import course_utils.index_ondisk


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


def filtered_latency(retriever, queries: list[str], top_k: int = 10, **filters) -> tuple[float, list[list[str]]]:
    """Exercise 3: the median milliseconds of ``search_by_text`` with ``filters`` over ``queries``, and the item ids
    each query found (so two retrievers can be checked to agree)."""
    times, found = [], []
    for query in queries:
        start = time.perf_counter()
        results = retriever.search_by_text(query, top_k, **filters)
        times.append(1000 * (time.perf_counter() - start))
        found.append(list(results["item_id"]))
    return statistics.median(times), found


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
