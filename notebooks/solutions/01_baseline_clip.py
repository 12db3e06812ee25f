"""Worked solutions to the exercises of notebook 01 (baseline: zero-shot retrieval and chance levels).

Executed on the ``ci`` profile by ``tests/test_solutions.py`` (``pytest -m solutions``), so they never rot.
``make student`` leaves this folder out of the student copy.

Exercise 1 (predict, then run). Chance Recall@10 is 10 / gallery size: 0.02 on a 500-item gallery, 0.005 on
2,000 items. The model's recall also falls as the gallery grows (more look-alikes compete for the top 10), but
much more slowly than chance: the ratio model / chance grows with the gallery. ``recall_curve`` measures it.

Exercise 2 (code). ``my_in_batch_recall`` below: shuffle the pairs with the same seed, cut them into batches,
rank inside each batch. It agrees with ``cu.metrics.in_batch_recall`` to float precision.

Exercise 3 (code, seed 002's gallery question). Under the 8,819-item reading, R@10 = 0.0020 is about 18 hits where
a random ranking expects 10 (1.8x chance). A random ranking's hit count is binomial (8,819 queries, each a hit with
probability 10 / 8,819), and it reaches 18 or more with probability 0.014: above chance, but only just, and tiny.
Under the "entire dataset (e.g., 40,000 items)" reading -- all 44,096 images of DeepFashion-MultiModal -- chance is
10 / 44,096 = 0.00023 and 0.0020 is 8.8x chance, 88 hits where luck gives 10 (a tail probability near 1e-51): far
from random, though still a weak model. Which reading is right changes the verdict. The seed splits its pairs 8:2
with ``random_split`` (about 8,820 test items) and reviews queries "of the test dataset", which points to the first
reading; its inference slide says "entire dataset", which points to the second. The honest answer: we cannot tell
from what was published, so report both.

Exercise 4 (code). On the drawings, matching on colour alone is a looser criterion than category + colour: every
item that matches on both also matches on colour, so colour-only attribute-match recall can only be higher or equal.
The same holds on any catalogue (on Fashion Product Images: ``baseColour`` against ``articleType`` + ``baseColour``).

Exercise 5 (code, the query's own item). ``attribute_recall_without_own_item`` below ranks the gallery with each
query's own item at -inf and counts the chance level over the ``n - 1`` items left, with one relevant item fewer
per query. The drop from the table's attribute-match recall is what the own item carried: every query whose top K
held its own item and no other match loses its hit, unless the (K+1)-th item, which moves up into the top K, matches.
A query whose attribute values no other gallery item has can no longer be hit at all (no relevant item left: a miss,
and chance 0 for it). The recall without the own item is never higher for a query: a top K that did not hold the own
item is unchanged, and one that did was already a hit (the own item always matches).
On real photos the same comparison is ``attribute-match-others`` in ``benchmarks/bench_photo_pretrain.py``: there,
without the own item, attribute-match R@10 fell to about the exact-item recall (benchmarks/README.md has the runs).

Exercise 6 (open). CLIP (Radford et al., 2021) reports zero-shot retrieval on the Flickr30k (1K test images) and
MSCOCO (5K) test sets; ALBEF and BLIP use the same splits. Fixing the gallery size is what makes recall numbers
comparable across papers: a number without its gallery size (and chance level) cannot be compared.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import binom

import course_utils as cu


def recall_curve(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, sizes: list[int], seed: int = 0
) -> dict[int, tuple[float, float]]:
    """Exercise 1: ``{gallery size: (model R@10, chance R@10)}`` on random sub-galleries."""
    curve = cu.metrics.recall_vs_gallery_size(image_embeddings, text_embeddings, sizes, k=10, repeats=3, seed=seed)
    return {int(s): (float(r), cu.metrics.chance_recall(10, int(s))) for s, r in zip(curve.gallery_size, curve.recall)}


def my_in_batch_recall(
    queries: torch.Tensor, gallery: torch.Tensor, batch_size: int = 32, ks: tuple[int, ...] = (1, 5, 10), seed: int = 0
) -> dict[int, float]:
    """Exercise 2: in-batch Recall@K written out: shuffle, cut into batches, rank within each batch.

    ``queries[i]`` and ``gallery[i]`` are a pair, both (n, d) L2-normalised; the last partial batch is dropped.
    """
    order = np.random.default_rng(seed).permutation(len(queries))
    hits = {k: 0 for k in ks}
    n_batches = len(queries) // batch_size
    for b in range(n_batches):
        rows = torch.from_numpy(order[b * batch_size : (b + 1) * batch_size])
        similarity = queries[rows] @ gallery[rows].T  # (B, B): query i's own item is column i
        own = similarity.diagonal().unsqueeze(1)
        rank = (similarity > own).sum(dim=1)  # items scored above the correct one
        for k in ks:
            hits[k] += int((rank < k).sum())
    return {k: hits[k] / (n_batches * batch_size) for k in ks}


def seed002_readings(recall_at_10: float = 0.0020) -> dict[str, dict[str, float]]:
    """Exercise 3: what R@10 = 0.0020 means under each reading of seed 002's gallery size.

    Each reading has one query per gallery item; ``P(random ≥ hits)`` is the binomial upper tail: the probability
    that a random ranking gets at least as many queries right.
    """
    readings = {"test split, 8,819 items": 8819, "whole dataset, 44,096 items": 44_096}
    answers = {}
    for name, size in readings.items():
        chance = cu.metrics.chance_recall(10, size)
        hits = round(recall_at_10 * size)
        answers[name] = {
            "gallery": size,
            "chance R@10": chance,
            "times chance": recall_at_10 / chance,
            "hits": hits,
            "P(random ≥ hits)": float(binom.sf(hits - 1, size, chance)),
        }
    return answers


def attribute_recall(similarity: torch.Tensor, catalogue, attributes: list[str]) -> dict[int, float]:
    """Exercise 4: attribute-match recall when "similar" means sharing ``attributes``."""
    gallery = [dict(item.attributes) for item in catalogue]
    wanted = [{a: v for a, v in item.attributes.items() if a in attributes} for item in catalogue]
    return cu.metrics.attribute_match_recall(similarity, wanted, gallery)


def attribute_recall_without_own_item(
    similarity: torch.Tensor, catalogue, attributes: list[str]
) -> tuple[dict[int, float], dict[int, float]]:
    """Exercise 5: attribute-match recall and its chance with each query's own item (column i of row i) out of the
    ranking."""
    without_own = similarity.clone().fill_diagonal_(-torch.inf)  # ranked last: never in the top K
    recall = attribute_recall(without_own, catalogue, attributes)
    gallery = [dict(item.attributes) for item in catalogue]
    wanted = [{a: v for a, v in item.attributes.items() if a in attributes} for item in catalogue]
    others = [count - 1 for count in cu.metrics.attribute_match_counts(wanted, gallery)]  # the own item always matches
    chance = {k: cu.metrics.mean_chance_recall(k, len(catalogue) - 1, others) for k in recall}
    return recall, chance
