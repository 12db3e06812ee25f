"""Worked solutions to the exercises of notebook 07 (the retrieval demo and ``FashionRetriever``).

Executed on the ``ci`` profile by ``tests/test_solutions.py`` (``pytest -m solutions``).

Exercise 1 (code, batch search). ``batch_matches_single`` runs ``batch_search`` over many queries in one pass and
checks every query's results against ``search_by_text`` run alone: same items in the same order. Batching only
changes how the matrix products are grouped, never the ranking.

Exercise 2 (code, filters). ``filtered_search`` asks for red items only; every row must be red, and there can
be fewer than ``top_k`` rows when the gallery holds fewer red items. A filter is applied *before* the top-k cut,
so it never returns a top-k with the red items missing.

Exercise 3 (code, exact vs FAISS). ``index_agreement`` builds the retriever with an exact index and with FAISS
indexes (flat, IVF, HNSW) over the same gallery embeddings and measures how many of the exact top 10 each returns.
A flat FAISS index is exact too, so it must agree (overlap 1). IVF and HNSW are approximate: they *may* miss some
of the exact top 10, and whether they do depends on the gallery and their settings, so read your overlaps before
claiming a trade. IVF visits ``nprobe`` of its ``nlist`` lists (print ``retriever.index.nlist`` and ``.nprobe``):
the retriever sets ``nlist`` to the gallery size // 39, so on a small gallery such as ``ci``'s the default
``nprobe=16`` is at least ``nlist``; IVF then visits every list, an exhaustive search that agrees fully and says
nothing about its approximation (raise ``nlist`` or lower ``nprobe`` to see it miss). HNSW's recall depends on
``ef_search`` and ``hnsw_m``. Speed shows only in the index search alone (the text tower costs the same for every
index): on a few hundred vectors exact search is one small matrix product, so the approximate indexes pay off
only where scanning every vector costs more than visiting a few lists or graph nodes, on galleries far larger than
this one (exercise 5 estimates where).

Exercise 4 (predict). On a gallery of a few hundred items the queries that run a tower are the slowest: a text
query (text tower), an upload (decoding plus the image tower) and a composed query (text tower plus the
compositor); ranking a few hundred vectors costs less than one forward pass. The conditional query re-projects
*every* gallery embedding onto the condition's basis on each call, so its time grows with the gallery size (times
the basis size) while a tower's cost does not: on a large enough gallery it becomes the slowest. The latency table
of a larger ``test_size`` shows where the lines cross on your machine.

Exercise 5 (open). HNSW (Malkov and Yashunin, IEEE TPAMI 2020, arXiv 2016) and FAISS (Johnson, Douze and Jégou,
"Billion-scale similarity search with GPUs", IEEE Trans. Big Data 2019) serve approximate nearest neighbours at
scale. At what gallery size does an exact search of 512-d vectors stop answering within 100 ms on one CPU core?
(Hint: the read bandwidth bounds it. A 512-d float32 vector is 2 KiB; at the ~10 GB/s read bandwidth
measured on the course machines, 100 ms reads about half a million vectors, and the matrix product makes it
fewer.)
"""

from __future__ import annotations

import course_utils as cu


def batch_matches_single(retriever, queries: list[str], top_k: int = 8) -> bool:
    """Exercise 1: ``batch_search`` returns, per query, exactly ``search_by_text``'s items in order."""
    batched = retriever.batch_search(queries, top_k=top_k)
    return all(
        batched[batched["query"] == q]["item_id"].tolist() == retriever.search_by_text(q, top_k)["item_id"].tolist()
        for q in queries
    )


def filtered_search(retriever, query: str = "striped shirt", top_k: int = 8, **filters: str):
    """Exercise 2: the top-k for ``query`` among the items that match ``filters`` (e.g. ``colour="red"``)."""
    return retriever.search_by_text(query, top_k, **filters)


def index_agreement(
    bundle, gallery, queries: list[str], kinds=("flat", "ivf", "hnsw"), k: int = 10
) -> dict[str, float]:
    """Exercise 3: mean share of the exact top-k that each FAISS index returns for the same queries."""
    exact = cu.retriever.FashionRetriever(bundle, gallery, index="exact")
    truth = exact.batch_search(queries, top_k=k)
    overlap = {}
    for kind in kinds:
        approximate = cu.retriever.FashionRetriever(bundle, gallery, index=kind, image_embeddings=exact.embeddings)
        found = approximate.batch_search(queries, top_k=k)
        overlap[kind] = sum(
            len(set(found[found["query"] == q]["item_id"]) & set(truth[truth["query"] == q]["item_id"]))
            for q in queries
        ) / (k * len(queries))
    return overlap
