"""Issue 15, item 4: non-finite vectors and queries are refused, naming the row, by every index and the retriever;
the exact and FAISS indexes accept (and refuse) the same inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_utils.index import ExactIndex, FaissIndex, build_index

KINDS = ["exact", "exact-fp16", "flat", "hnsw"]


def unit_vectors(n: int = 8, d: int = 4, seed: int = 0) -> np.ndarray:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1).numpy()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_a_non_finite_row_is_refused_on_add_naming_the_row(kind, bad):
    vectors = unit_vectors()
    vectors[5, 2] = bad
    index = build_index(kind, 4)
    with pytest.raises(ValueError, match=r"vectors row 5 contains NaN or inf \(1 of 8 rows do: \[5\]\)"):
        index.add(vectors)
    assert len(index) == 0  # nothing half-added


@pytest.mark.parametrize("kind", KINDS)
def test_a_nan_query_is_refused_naming_the_row(kind):
    index = build_index(kind, 4)
    index.add(unit_vectors())
    queries = unit_vectors(3, seed=1)
    queries[2, 0] = math.nan
    with pytest.raises(ValueError, match=r"queries row 2 contains NaN or inf"):
        index.search(queries, 2)


def test_several_bad_rows_are_all_listed():
    vectors = unit_vectors(10)
    vectors[[1, 4, 9]] = math.nan
    with pytest.raises(ValueError, match=r"row 1 .*3 of 10 rows do: \[1, 4, 9\]"):
        ExactIndex(4).add(vectors)


def test_huge_but_finite_rows_are_accepted():
    """Row sums overflow to inf here, yet every value is finite: the exact check must not refuse them."""
    vectors = np.full((2, 4), 3e38, dtype=np.float32)
    index = ExactIndex(4)
    index.add(vectors)
    assert len(index) == 2


@pytest.mark.parametrize(
    "convert",
    [
        lambda v: v.astype(np.float64),
        lambda v: torch.from_numpy(v),
        lambda v: torch.from_numpy(v).half(),
        lambda v: np.asfortranarray(v),
    ],
    ids=["float64", "tensor", "float16-tensor", "fortran-order"],
)
def test_exact_and_faiss_accept_the_same_inputs_and_agree(convert):
    gallery, queries = unit_vectors(20, seed=2), unit_vectors(3, seed=3)
    exact, faiss_flat = ExactIndex(4), FaissIndex(4, kind="flat")
    exact.add(convert(gallery))
    faiss_flat.add(convert(gallery))
    exact_scores, exact_ids = exact.search(convert(queries), 5)
    faiss_scores, faiss_ids = faiss_flat.search(convert(queries), 5)
    np.testing.assert_array_equal(exact_ids, faiss_ids)
    np.testing.assert_allclose(exact_scores, faiss_scores, atol=1e-6)
    # one (d,) query is accepted by both as a batch of one
    np.testing.assert_array_equal(exact.search(convert(queries)[0], 2)[1], faiss_flat.search(convert(queries)[0], 2)[1])


@pytest.mark.parametrize("kind", ["exact", "flat"])
@pytest.mark.parametrize("k", [2.5, True, "3", None])
def test_k_must_be_a_whole_number_for_every_index(kind, k):
    index = build_index(kind, 4)
    index.add(unit_vectors())
    with pytest.raises(ValueError, match=r"k must be a whole number of neighbours \(an int\), got"):
        index.search(unit_vectors(1), k)


@pytest.mark.parametrize("kind", ["exact", "flat"])
def test_numpy_integer_k_is_accepted(kind):
    index = build_index(kind, 4)
    index.add(unit_vectors())
    assert index.search(unit_vectors(1), np.int64(3))[1].shape == (1, 3)


def test_retriever_refuses_nan_gallery_embeddings_naming_the_item(make_retriever):
    embeddings = F.normalize(torch.rand(4, 3), dim=1)
    embeddings[2] = math.nan
    with pytest.raises(ValueError, match=r"image_embeddings row 2 \(blue\) contains NaN or inf"):
        make_retriever(embeddings)


def test_retriever_refuses_a_nan_composed_query(make_retriever):
    retriever = make_retriever()
    retriever.compositor = lambda image, text: torch.full_like(image, math.nan)
    with pytest.raises(ValueError, match=r"query embedding row 0 contains NaN or inf"):
        retriever.search_composed("red", "make it blue", top_k=2)


def test_retriever_refuses_a_nan_query_on_the_filtered_path_too(make_retriever):
    """Filters rank with a matmul outside the index; the query is checked there as well."""
    retriever = make_retriever()
    with pytest.raises(ValueError, match=r"query embedding row 0 contains NaN"):
        retriever._rank(torch.full((1, 3), math.nan), 2, {"colour": "red"})


def test_retriever_refuses_nan_conditional_embeddings(make_retriever):
    retriever = make_retriever()
    retriever.conditional_encoder = lambda embeddings, condition: embeddings * math.nan
    with pytest.raises(ValueError, match=r"conditional query embedding row 0 contains NaN"):
        retriever.search_conditional("red", "colour", top_k=2)


@pytest.mark.parametrize("index", ["exact", "flat"])
def test_retriever_with_finite_vectors_still_ranks_by_hand(make_retriever, index):
    frame = make_retriever(index=index).search_by_text("blue jacket", top_k=2)
    assert list(frame["item_id"]) == ["blue", "grey"]
    assert frame["score"].iloc[0] == pytest.approx(1.0)
    assert frame["score"].iloc[1] == pytest.approx(1 / math.sqrt(3), abs=1e-6)
