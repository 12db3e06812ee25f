"""Tests of course_utils.metrics: hand-computed cases, the tie convention, chunking, references and bad input."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from course_utils import metrics as m


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force_tie_recall(sim: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Average hit@k over every tie-breaking order (all permutations of the gallery as secondary key)."""
    q, g = sim.shape
    total = 0.0
    perms = list(itertools.permutations(range(g)))
    for i in range(q):
        hits = 0
        for perm in perms:
            order = sorted(range(g), key=lambda j: (-sim[i, j], perm[j]))
            hits += bool(relevant[i, order[:k]].any())
        total += hits / len(perms)
    return total / q


# ------------------------------------------------------------------------------------------------ recall_at_k


def test_recall_at_k_hand_computed():
    sim = np.array([[0.9, 0.1, 0.2, 0.3], [0.1, 0.2, 0.9, 0.8], [0.5, 0.4, 0.3, 0.2]])
    # query 0: target at rank 1; query 1: rank 2; query 2: rank 4
    result = m.recall_at_k(sim, np.array([0, 3, 3]), ks=(1, 2, 3, 4))
    assert result == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 4: 1.0})


def test_recall_at_k_target_columns_equal_bool_matrix():
    sim = np.array([[0.9, 0.1, 0.2, 0.3], [0.1, 0.2, 0.9, 0.8]])
    mask = np.zeros((2, 4), dtype=bool)
    mask[0, 2] = mask[1, 3] = True
    assert m.recall_at_k(sim, np.array([2, 3]), ks=(1, 2, 3)) == m.recall_at_k(sim, mask, ks=(1, 2, 3))


def test_ties_single_relevant_hand_computed():
    # target tied with 2 others at the top: g = 0, t = 3 -> clip(K / 3)
    assert m.recall_at_k(np.array([[0.5, 0.5, 0.5, 0.1]]), np.array([1]), ks=(1, 2, 3)) == pytest.approx(
        {1: 1 / 3, 2: 2 / 3, 3: 1.0}
    )
    # one item strictly above, target tied with 3 others: g = 1, t = 4 -> clip((K - 1) / 4)
    sim = np.array([[0.9, 0.5, 0.5, 0.5, 0.5]])
    assert m.recall_at_k(sim, np.array([2]), ks=(1, 2, 3, 5)) == pytest.approx({1: 0.0, 2: 0.25, 3: 0.5, 5: 1.0})


def test_ties_several_relevant_hand_computed():
    # best relevant score 0.7: g = 1 above, t = 3 tied, r = 2 relevant among them (item 4 is relevant but lower)
    sim = np.array([[0.9, 0.7, 0.7, 0.7, 0.2]])
    relevant = np.array([[False, True, True, False, True]])
    # K=2: one of the 3 tied items enters the top 2 -> relevant with probability 2/3; K=3: two enter -> certain
    assert m.recall_at_k(sim, relevant, ks=(1, 2, 3, 5)) == pytest.approx({1: 0.0, 2: 2 / 3, 3: 1.0, 5: 1.0})


def test_tie_convention_matches_enumeration_of_all_tie_breaks():
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 3, size=(12, 5)).astype(np.float32)  # many ties
    relevant = rng.random((12, 5)) < 0.35
    relevant[np.arange(12), rng.integers(0, 5, 12)] = True
    for k in (1, 2, 3, 4, 5):
        assert m.recall_at_k(sim, relevant, ks=(k,))[k] == pytest.approx(_brute_force_tie_recall(sim, relevant, k))


@pytest.mark.parametrize("n_relevant", [1, 3])
def test_all_equal_scores_give_chance_exactly(n_relevant):
    q, g = 7, 50
    relevant = np.zeros((q, g), dtype=bool)
    relevant[:, :n_relevant] = True
    ks = (1, 5, 10, 47, 50)
    result = m.recall_at_k(np.zeros((q, g)), relevant, ks=ks)
    for k in ks:
        assert result[k] == pytest.approx(m.chance_recall(k, g, n_relevant), rel=1e-12, abs=1e-12)
    assert m.recall_at_k(np.ones((3, 8819)), np.arange(3), ks=(1,))[1] == 1 / 8819


@pytest.mark.parametrize("n_relevant", [2, 3, 5])
def test_all_equal_scores_match_exact_chance_to_the_documented_precision_at_8819(n_relevant):
    # Several relevant items in a tied block of 8,819 (the seed-002 gallery) go through log-gamma, whose rounding
    # _hit_probability documents as a relative error of ~2.1e-8 at this size; the reference is exact arithmetic.
    g = 8819
    relevant = np.zeros((1, g), dtype=bool)
    relevant[0, :n_relevant] = True
    ks = (1, 2, 5, 10, 100, g // 2)
    result = m.recall_at_k(np.zeros((1, g)), relevant, ks=ks)
    for k in ks:
        exact = 1 - Fraction(math.comb(g - n_relevant, k), math.comb(g, k))
        assert abs(Fraction(result[k]) - exact) <= Fraction(3, 10**8) * exact, (k, result[k], float(exact))


def test_no_ties_is_ordinary_recall():
    rng = np.random.default_rng(1)
    sim = rng.normal(size=(40, 30))
    targets = rng.integers(0, 30, 40)
    ranks = (sim > sim[np.arange(40), targets][:, None]).sum(axis=1)  # 0-based rank of the target
    result = m.recall_at_k(sim, targets, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert result[k] == pytest.approx(np.mean(ranks < k))


def test_chunked_equals_unchunked():
    rng = np.random.default_rng(2)
    sim = rng.integers(0, 5, size=(53, 31)).astype(np.float64)
    targets = rng.integers(0, 31, 53)
    relevant = rng.random((53, 31)) < 0.2
    relevant[np.arange(53), targets] = True
    for rel in (targets, relevant):
        full = m.recall_at_k(sim, rel, ks=(1, 3, 10), chunk_size=10_000)
        for chunk_size in (1, 7, 53):
            assert m.recall_at_k(sim, rel, ks=(1, 3, 10), chunk_size=chunk_size) == pytest.approx(full, abs=1e-15)


def test_accepts_torch_and_half_precision():
    rng = np.random.default_rng(3)
    sim = rng.normal(size=(20, 15)).astype(np.float16)
    targets = rng.integers(0, 15, 20)
    expected = m.recall_at_k(sim.astype(np.float32), targets)
    assert m.recall_at_k(torch.from_numpy(sim), torch.from_numpy(targets)) == expected
    assert m.recall_at_k(sim, targets) == expected


def test_recall_at_k_bad_input():
    sim = np.zeros((2, 4))
    with pytest.raises(ValueError, match="exceeds the gallery size 4"):
        m.recall_at_k(sim, np.array([0, 1]), ks=(5,))
    with pytest.raises(ValueError, match="no queries"):
        m.recall_at_k(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\)"):
        m.recall_at_k(sim, np.array([0, 4]), ks=(1,))
    with pytest.raises(ValueError, match="shape"):
        m.recall_at_k(sim, np.zeros((2, 3), dtype=bool), ks=(1,))
    with pytest.raises(ValueError, match="no relevant gallery item"):
        m.recall_at_k(sim, np.array([[True, False, False, False], [False] * 4]), ks=(1,))
    with pytest.raises(ValueError, match="NaN"):
        m.recall_at_k(np.array([[np.nan, 0.0]]), np.array([0]), ks=(1,))
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.recall_at_k(sim, np.array([0, 1]), ks=(0,))
    with pytest.raises(ValueError, match="integer"):
        m.recall_at_k(sim, np.array([0.0, 1.0]), ks=(1,))


def test_queries_without_a_relevant_item_are_reported_by_row_and_total_across_chunks():
    relevant = np.ones((10, 4), dtype=bool)
    relevant[[3, 7]] = False  # rows 3 and 7 fall in different chunks of 2 rows (chunks 1 and 3)
    with pytest.raises(ValueError, match=r"^2 of the 10 queries have no relevant gallery item \(rows 3, 7\)"):
        m.recall_at_k(np.zeros((10, 4)), relevant, ks=(1,), chunk_size=2)
    relevant[:6] = False  # 7 rows: the first five are listed
    with pytest.raises(ValueError, match=r"^7 of the 10 queries .* \(rows 0, 1, 2, 3, 4, …\)"):
        m.recall_at_k(np.zeros((10, 4)), relevant, ks=(1,), chunk_size=3)


def test_composed_recall_names_the_callers_rows_of_a_slice_of_queries():
    # a caller scoring queries 1024..1027 passes first_query_row=1024; query 1026 keeps only its excluded reference
    relevant = np.array([[False, True, False], [False, False, True], [True, False, False], [False, True, False]])
    exclude = np.array([0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"^1 of the 4 queries \(rows 1024-1027\) .* \(rows 1026\)"):
        m.composed_recall(np.zeros((4, 3)), relevant, ks=(1,), exclude=exclude, chunk_size=1, first_query_row=1024)
    with pytest.raises(ValueError, match="first_query_row must be >= 0"):
        m.composed_recall(np.zeros((4, 3)), relevant, ks=(1,), first_query_row=-1)


# ------------------------------------------------------------------------------------------------ chance


def test_chance_recall_hand_computed():
    assert m.chance_recall(1, 8819) == 1 / 8819
    assert m.chance_recall(5, 32) == 5 / 32
    assert m.chance_recall(2, 4, n_relevant=2) == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert m.chance_recall(3, 4, n_relevant=2) == 1.0
    for g, r, k in [(20, 3, 5), (100, 7, 10), (50, 2, 49)]:
        assert m.chance_recall(k, g, r) == pytest.approx(1 - math.comb(g - r, k) / math.comb(g, k), rel=1e-12)


def test_mean_chance_recall_by_hand():
    # Query 0: two relevant of 4, k = 1 -> 1/2; query 1: one of 4 -> 1/4; query 2: none -> a miss (0).
    assert m.mean_chance_recall(1, 4, [2, 1]) == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert m.mean_chance_recall(1, 4, [2, 1, 0]) == pytest.approx((1 / 2 + 1 / 4) / 3)
    with pytest.raises(ValueError, match="relevant_counts is empty"):  # was NaN, numpy's mean of nothing
        m.mean_chance_recall(1, 4, [])


def test_chance_recall_bad_input():
    with pytest.raises(ValueError, match="k must be in"):
        m.chance_recall(11, 10)
    with pytest.raises(ValueError, match="gallery_size"):
        m.chance_recall(1, 0)
    with pytest.raises(ValueError, match="n_relevant"):
        m.chance_recall(1, 10, n_relevant=0)


# ------------------------------------------------------------------------------------------------ protocols


def _paired(n: int, d: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = _unit(rng.normal(size=(n, d)))
    texts = _unit(images + noise * rng.normal(size=(n, d)))
    return images.astype(np.float32), texts.astype(np.float32)


def test_full_gallery_recall_matches_similarity_matrix():
    images, texts = _paired(120, 16, 0.8, seed=4)
    expected = m.recall_at_k(texts @ images.T, np.arange(120), ks=(1, 5, 10))
    for chunk_size in (None, 1, 17):
        result = m.full_gallery_recall(texts, images, np.arange(120), ks=(1, 5, 10), chunk_size=chunk_size)
        assert result == pytest.approx(expected, abs=1e-12)


def test_full_gallery_recall_bad_input():
    with pytest.raises(ValueError, match="dimension mismatch"):
        m.full_gallery_recall(np.ones((3, 4)), np.ones((5, 6)), np.arange(3))
    with pytest.raises(ValueError, match="query_embeddings is empty"):
        m.full_gallery_recall(np.ones((0, 4)), np.ones((5, 4)), np.arange(0))
    with pytest.raises(ValueError, match="exceeds the gallery size"):
        m.full_gallery_recall(np.ones((3, 4)), np.ones((5, 4)), np.arange(3), ks=(10,))


def test_in_batch_recall_perfect_and_degenerate():
    eye = np.eye(64, dtype=np.float32)
    assert m.in_batch_recall(eye, eye, batch_size=16, ks=(1, 5)) == {1: 1.0, 5: 1.0}
    # all scores equal -> exactly K / B
    zeros = np.zeros((64, 8), dtype=np.float32)
    assert m.in_batch_recall(zeros, zeros, batch_size=32, ks=(1, 5, 10)) == pytest.approx(
        {1: 1 / 32, 5: 5 / 32, 10: 10 / 32}, abs=1e-15
    )


def test_in_batch_recall_matches_reference_and_drops_partial_batch():
    images, texts = _paired(103, 12, 1.0, seed=5)  # 103 = 6 * 16 + 7 -> last 7 pairs dropped
    batch, seed = 16, 11
    order = np.random.default_rng(seed).permutation(103)
    hits = {1: [], 5: []}
    for b in range(103 // batch):
        idx = order[b * batch : (b + 1) * batch]
        per_batch = m.recall_at_k(texts[idx] @ images[idx].T, np.arange(batch), ks=(1, 5))
        for k in hits:
            hits[k].append(per_batch[k])
    expected = {k: float(np.mean(v)) for k, v in hits.items()}
    assert m.in_batch_recall(texts, images, batch, (1, 5), seed=seed) == pytest.approx(expected, abs=1e-12)
    # one batch holding every pair is the full gallery
    full = m.full_gallery_recall(texts, images, np.arange(103), ks=(1, 5))
    assert m.in_batch_recall(texts, images, 103, (1, 5)) == pytest.approx(full, abs=1e-12)


def test_in_batch_recall_bad_input():
    x = np.ones((10, 4))
    with pytest.raises(ValueError, match="batch_size must be in"):
        m.in_batch_recall(x, x, batch_size=11)
    with pytest.raises(ValueError, match="paired rows"):
        m.in_batch_recall(x, np.ones((9, 4)), batch_size=4, ks=(1,))
    with pytest.raises(ValueError, match="exceeds the gallery size 4"):
        m.in_batch_recall(x, x, batch_size=4, ks=(5,))


def test_retrieval_table_explains_seed_002():
    # A degenerate model (all embeddings equal) on 8,819 pairs: full-gallery R@1 is 1/8819 (the "0.0001" of the
    # slides) while in-batch R@5 at B = 32 is 5/32 -- both exactly chance.
    n = 8819
    same = np.ones((n, 4), dtype=np.float32) / 2
    table = m.retrieval_table(same, same, ks=(1, 5, 10), batch_size=32)
    assert list(table.columns) == ["R@1", "R@5", "R@10"]
    assert table.index.names == ["direction", "protocol"]
    assert set(table.index.get_level_values("direction")) == {"text→image", "image→text"}
    assert set(table.index.get_level_values("protocol")) == {
        "full gallery",
        "in-batch (32)",
        "chance (full gallery)",
        "chance (in-batch)",
    }
    for direction in ("text→image", "image→text"):
        assert table.loc[(direction, "full gallery"), "R@1"] == pytest.approx(1 / n, rel=1e-12)
        assert table.loc[(direction, "chance (full gallery)"), "R@1"] == 1 / n
        assert table.loc[(direction, "in-batch (32)"), "R@5"] == pytest.approx(5 / 32, rel=1e-12)
        assert table.loc[(direction, "chance (in-batch)"), "R@5"] == 5 / 32


def test_retrieval_table_rows_match_the_protocol_functions():
    images, texts = _paired(90, 16, 0.7, seed=6)
    table = m.retrieval_table(images, texts, ks=(1, 5), batch_size=10, seed=3)
    i2t = m.full_gallery_recall(images, texts, np.arange(90), ks=(1, 5))
    t2i_batch = m.in_batch_recall(texts, images, 10, (1, 5), seed=3)
    assert table.loc[("image→text", "full gallery"), "R@5"] == pytest.approx(i2t[5])
    assert table.loc[("text→image", "in-batch (10)"), "R@1"] == pytest.approx(t2i_batch[1])
    assert table.attrs["n_pairs"] == 90


def test_recall_vs_gallery_size():
    same = np.ones((200, 4), dtype=np.float32)
    frame = m.recall_vs_gallery_size(same, same, sizes=(10, 50, 200), k=5, repeats=3)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["gallery_size", "recall", "recall_std", "chance"]
    assert frame["recall"].to_numpy() == pytest.approx(frame["chance"].to_numpy(), rel=1e-12)
    assert frame["chance"].tolist() == [0.5, 0.1, 0.025]
    # a real (noisy) model: recall falls as the gallery grows; the full-size row equals full_gallery_recall
    images, texts = _paired(200, 16, 1.0, seed=7)
    frame = m.recall_vs_gallery_size(images, texts, sizes=(10, 200), k=5, repeats=4, seed=1)
    assert frame["recall"].iloc[0] > frame["recall"].iloc[1]
    assert frame["recall"].iloc[1] == pytest.approx(m.full_gallery_recall(texts, images, np.arange(200), (5,))[5])
    # image→text ranks the captions for each image; at full size it is the full-gallery recall of that direction
    backward = m.recall_vs_gallery_size(images, texts, sizes=(200,), k=5, repeats=1, direction=m.IMAGE_TO_TEXT)
    assert backward["recall"].iloc[0] == pytest.approx(m.full_gallery_recall(images, texts, np.arange(200), (5,))[5])
    assert backward["recall"].iloc[0] != frame["recall"].iloc[1]  # the two directions differ on this data
    # recall and recall_std are the mean and std over the seeded draws of pairs, each ranked here by hand
    rng = np.random.default_rng(1)
    per_repeat = []
    for _ in range(4):  # the 4 draws of size 10, made first
        pick = rng.choice(200, size=10, replace=False)
        scores = texts[pick] @ images[pick].T
        per_repeat.append(np.mean((scores > scores.diagonal()[:, None]).sum(axis=1) < 5))
    assert np.std(per_repeat) > 0
    assert frame["recall"].iloc[0] == pytest.approx(np.mean(per_repeat))
    assert frame["recall_std"].iloc[0] == pytest.approx(np.std(per_repeat))
    with pytest.raises(ValueError, match="must be in"):
        m.recall_vs_gallery_size(images, texts, sizes=(3,), k=5)
    with pytest.raises(ValueError, match="direction"):
        m.recall_vs_gallery_size(images, texts, sizes=(10,), direction="sideways")


# ------------------------------------------------------------------------------------------------ attributes


def test_attribute_match_recall_hand_computed():
    gallery = [
        {"colour": "red", "type": "dress"},
        {"colour": "blue", "type": "dress"},
        {"colour": "red", "type": "top"},
    ]
    query = [{"colour": "red", "type": "dress"}]
    sim = np.array([[0.1, 0.9, 0.5]])  # ranking: blue dress, red top, red dress
    assert m.attribute_match_recall(sim, query, gallery, ks=(1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 1.0}
    assert m.attribute_match_recall(sim, query, gallery, ks=(1, 2), attributes=["type"]) == {1: 1.0, 2: 1.0}
    assert m.attribute_match_recall(sim, query, gallery, ks=(1, 2), attributes=["colour"]) == {1: 0.0, 2: 1.0}


def test_same_value_mask_marks_identical_captions_and_serves_as_relevance():
    titles = ["Nike Men Black T-shirt", "Puma Women Red Shoes", "Nike Men Black T-shirt"]
    mask = m.same_value_mask(titles, titles)
    assert mask.tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    sim = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.2, 1.0], [0.3, 0.2, 0.1]])
    # queries 0 and 2 rank their twin first (hits), query 1 ranks another product first (a miss)
    assert m.recall_at_k(sim, mask, ks=(1,)) == {1: pytest.approx(2 / 3)}
    # tuples are values too (e.g. article type and colour), not rows of a matrix
    pairs = [("Tshirts", "Black"), ("Shoes", "Black"), ("Tshirts", "Black")]
    assert m.same_value_mask(pairs, pairs).tolist() == mask.tolist()


def test_attribute_match_counts_are_the_relevant_items_by_hand():
    gallery = [{"colour": "red", "type": "dress"}, {"colour": "blue", "type": "dress"}, {"colour": "red"}]
    queries = [{"colour": "red", "type": "dress"}, {"colour": "red"}, {"type": "dress", "colour": "green"}]
    assert m.attribute_match_counts(queries, gallery) == [1, 2, 0]
    assert m.attribute_match_counts(queries[::2], gallery, attributes=["type"], chunk_size=1) == [2, 2]


def test_attribute_match_recall_misses_ties_and_chunks():
    gallery = [{"colour": "red"}, {"colour": "blue"}, {"colour": "red"}, {}]
    queries = [{"colour": "green"}, {"colour": "red"}]  # green: not in gallery -> always a miss
    sim = np.zeros((2, 4))  # all tied: the red query has 2 relevant of 4 -> chance
    result = m.attribute_match_recall(sim, queries, gallery, ks=(1, 2))
    assert result == pytest.approx({1: (0 + 0.5) / 2, 2: (0 + m.chance_recall(2, 4, 2)) / 2})
    assert m.attribute_match_recall(sim, queries, gallery, ks=(1, 2), chunk_size=1) == pytest.approx(result)


def test_attribute_match_recall_bad_input():
    with pytest.raises(ValueError, match="one attribute dict per row"):
        m.attribute_match_recall(np.zeros((1, 2)), [{"a": 1}], [{"a": 1}], ks=(1,))
    with pytest.raises(ValueError, match="none of the attributes"):
        m.attribute_match_recall(np.zeros((1, 2)), [{"a": 1}], [{"a": 1}, {"a": 2}], ks=(1,), attributes=["b"])


# ------------------------------------------------------------------------------------------------ average precision


def test_average_precision_hand_computed():
    # relevant at ranks 1 and 3 of 4: (1/1 + 2/3) / 2
    assert m.average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0], bool)) == pytest.approx(5 / 6)
    assert m.average_precision(np.array([0.1, 0.9]), np.array([True, False])) == pytest.approx(0.5)
    assert m.average_precision(np.array([0.3, 0.2, 0.1]), np.array([False, False, True])) == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=200)  # continuous: no ties
    relevant = rng.random(200) < 0.1
    relevant[0] = True
    assert m.average_precision(scores, relevant) == pytest.approx(average_precision_score(relevant, scores))
    tied = np.round(scores)  # ties: same threshold convention as sklearn
    assert m.average_precision(tied, relevant) == pytest.approx(average_precision_score(relevant, tied))


def test_average_precisions_rows():
    rng = np.random.default_rng(8)
    scores = torch.from_numpy(rng.normal(size=(6, 40)))
    relevant = rng.random((6, 40)) < 0.2
    relevant[:, 3] = True
    per_query = m.average_precisions(scores, relevant)
    assert per_query.shape == (6,)
    for i in range(6):
        assert per_query[i] == pytest.approx(average_precision_score(relevant[i], scores[i].numpy()))


def test_average_precision_bad_input():
    with pytest.raises(ValueError, match="without relevant candidates"):
        m.average_precisions(np.zeros((2, 3)), np.array([[True, False, False], [False] * 3]))
    with pytest.raises(ValueError, match="shape"):
        m.average_precisions(np.zeros((2, 3)), np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="1-D"):
        m.average_precision(np.zeros((2, 3)), np.ones((2, 3), bool))


def test_attribute_specific_map_is_query_weighted():
    scores = np.array([0.3, 0.2, 0.1])
    condition_a = (np.stack([scores, scores]), np.array([[1, 0, 0], [0, 1, 0]], bool))  # APs 1 and 1/2
    condition_b = (scores[None], np.array([[0, 0, 1]], bool))  # AP 1/3
    result = m.attribute_specific_map({"collar": condition_a, "sleeve": condition_b})
    assert result["collar"] == pytest.approx(0.75)
    assert result["sleeve"] == pytest.approx(1 / 3)
    assert result["overall"] == pytest.approx((1 + 0.5 + 1 / 3) / 3)  # not the mean of 0.75 and 1/3
    with pytest.raises(ValueError, match="reserved"):
        m.attribute_specific_map({"overall": condition_b})
    with pytest.raises(ValueError, match="empty"):
        m.attribute_specific_map({})


# ------------------------------------------------------------------------------------------------ composed


def test_composed_recall_excludes_reference():
    sim = np.array([[0.9, 0.8, 0.1, 0.7]])  # the reference (column 0) scores highest
    relevant = np.array([[False, False, False, True]])
    assert m.composed_recall(sim, relevant, ks=(1, 2), exclude=np.array([0])) == {1: 0.0, 2: 1.0}
    assert m.composed_recall(sim, relevant, ks=(1, 2, 3)) == {1: 0.0, 2: 0.0, 3: 1.0}
    # the reference never counts as relevant, even when the caller marked it
    both = np.array([[True, False, False, True]])
    assert m.composed_recall(sim, both, ks=(1, 2), exclude=np.array([0])) == {1: 0.0, 2: 1.0}
    with pytest.raises(ValueError, match="no relevant gallery item"):
        m.composed_recall(sim, np.array([[True, False, False, False]]), ks=(1,), exclude=np.array([0]))
    with pytest.raises(ValueError, match="exceeds the gallery size 3"):
        m.composed_recall(sim, relevant, ks=(4,), exclude=np.array([0]))


def test_composed_recall_ties_and_chunks():
    rng = np.random.default_rng(9)
    sim = rng.integers(0, 4, size=(30, 20)).astype(np.float32)
    relevant = rng.random((30, 20)) < 0.15
    exclude = rng.integers(0, 20, 30)
    relevant[np.arange(30), (exclude + 1) % 20] = True
    expected_sim = sim.copy()
    expected_sim[np.arange(30), exclude] = -np.inf
    expected_rel = relevant.copy()
    expected_rel[np.arange(30), exclude] = False
    expected = m.recall_at_k(expected_sim, expected_rel, ks=(1, 10))
    assert m.composed_recall(sim, relevant, ks=(1, 10), exclude=exclude) == pytest.approx(expected)
    assert m.composed_recall(sim, relevant, ks=(1, 10), exclude=exclude, chunk_size=4) == pytest.approx(expected)


def test_a_recall_difference_is_a_change_only_beyond_two_standard_errors():
    # 0.66 vs 0.65 over 996 queries: SE of the difference sqrt((0.66*0.34 + 0.65*0.35) / 996) = 0.0213
    small = m.RecallDifference(0.66, 0.65, 996)
    assert small.noise == pytest.approx(2 * 0.02127, abs=1e-4)
    assert (small.beyond_noise, small.verdict) == (False, "within noise")
    assert m.RecallDifference(0.45, 0.19, 996).verdict == "a gain"
    assert m.RecallDifference(0.19, 0.45, 996).verdict == "a loss"
    assert m.RecallDifference(0.5, 0.5, 10).verdict == "within noise"  # equal: never a change
    assert str(small) == "+0.010, within noise; two standard errors 0.043"
    # more queries, less noise: the same gap becomes a change
    assert m.RecallDifference(0.66, 0.65, 100_000).verdict == "a gain"


@pytest.mark.parametrize(
    ("new", "old", "queries", "message"),
    [
        (0.5, 0.4, 0, r"RecallDifference.queries must be >= 1"),
        (0.5, 0.4, 2.5, r"RecallDifference.queries must be a whole number"),
        (1.2, 0.4, 10, r"RecallDifference.new must be a recall \(a fraction in \[0, 1\]\), got 1.2"),
        (0.5, -0.1, 10, r"RecallDifference.old must be a recall"),
        (math.nan, 0.4, 10, r"RecallDifference.new must be a recall"),
        (True, 0.4, 10, r"RecallDifference.new must be a recall"),
    ],
)
def test_a_recall_difference_refuses_what_is_not_a_recall_or_a_query_count(new, old, queries, message):
    with pytest.raises(ValueError, match=message):
        m.RecallDifference(new, old, queries)


def test_a_recall_difference_accepts_numpy_scalars_and_the_ends_of_the_range():
    # pandas cells and counts arrive as numpy scalars (notebook 07); 0 and 1 are recalls too
    assert m.RecallDifference(np.float64(1.0), 0.0, np.int64(4)).verdict == "a gain"  # noise 0: any gap counts


@pytest.mark.parametrize(
    "change, digits, shown",
    [
        (3.46, 1, "+3.5"),
        (-0.06, 1, "-0.1"),
        (-0.04, 1, "+0.0"),
        (0.04, 1, "+0.0"),
        (-0.0, 1, "+0.0"),
        (-0.0004, 3, "+0.000"),
        (-0.0006, 3, "-0.001"),
        (-0.4, 0, "+0"),
        (12.0, 0, "+12"),
    ],
)
def test_signed_shows_a_change_that_rounds_to_zero_as_plus_zero(change, digits, shown):
    assert m.signed(change, digits) == shown
    assert m.signed(change / 100, digits, "%") == shown + "%"  # the same change as a share, in per cent


@pytest.mark.parametrize(
    "value, spec, shown",
    [
        (-0.004, ".2f", "0.00"),
        (-0.004, "+.0%", "+0%"),
        (-0.4, ">6.0f", "     0"),
        (-1e-5, ".0e", "-1e-05"),
        (-0.5, ".1f", "-0.5"),
    ],
)
def test_without_negative_zero_keeps_the_format_and_drops_only_a_minus_on_zero(value, spec, shown):
    assert m.without_negative_zero(value, spec) == shown
