"""The on-disk IVF-PQ of notebook 08 at small size: shards merged on disk search like one in-RAM index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from course_utils.index import ExactIndex, FaissIndex
from course_utils.index_ondisk import NpyRows, RerankedIndex, add_shard, merge_shards, open_ondisk, train_ivfpq

DIM, N, NLIST, PQ_M = 32, 6000, 16, 8


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 20 fixed centres (a point's neighbours are mostly in its own cluster)."""
    centres = np.random.default_rng(99).normal(size=(20, DIM))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 20, n)] + 0.5 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(N, seed=0), clustered(30, seed=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ivfpq")


@pytest.fixture(scope="module")
def ondisk(data, folder) -> FaissIndex:
    gallery, _ = data
    train_ivfpq(gallery[:3000], folder, nlist=NLIST, pq_m=PQ_M)
    for shard, rows in enumerate(np.array_split(np.arange(N), 3)):  # shards built independently
        add_shard(folder, shard, gallery[rows], ids=rows)
    merged = merge_shards(folder)
    assert (folder / "lists.ivfdata").stat().st_size >= N * (PQ_M + 8)  # codes + ids live in the file
    return merged


def test_merged_on_disk_index_equals_one_in_ram_index(data, ondisk):
    gallery, queries = data
    in_ram = FaissIndex(DIM, kind="ivfpq", nlist=NLIST, pq_m=PQ_M)
    in_ram.train(gallery[:3000])
    in_ram.add(gallery)
    assert len(ondisk) == N
    for nprobe in (1, 4, NLIST):
        ondisk.nprobe = in_ram.nprobe = nprobe
        scores, ids = ondisk.search(queries, 10)
        ram_scores, ram_ids = in_ram.search(queries, 10)
        np.testing.assert_array_equal(ids, ram_ids)
        np.testing.assert_allclose(scores, ram_scores, atol=1e-6)


def test_reopened_index_gives_the_same_answers(data, ondisk, folder, tmp_path):
    _, queries = data
    ondisk.nprobe = 4
    reopened = open_ondisk(folder, nprobe=4)
    np.testing.assert_array_equal(reopened.search(queries, 10)[1], ondisk.search(queries, 10)[1])
    with pytest.raises(FileNotFoundError, match="populated.index"):
        open_ondisk(tmp_path)


def test_reranking_every_candidate_is_exact_search(data, ondisk):
    gallery, queries = data
    ondisk.nprobe = NLIST
    exact = ExactIndex(DIM)
    exact.add(gallery)
    exact_scores, exact_ids = exact.search(queries, 10)
    scores, ids = RerankedIndex(ondisk, gallery, candidates=N).search(queries, 10)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def test_reranking_a_few_candidates_beats_the_codes(data, ondisk):
    gallery, queries = data
    ondisk.nprobe = 4
    exact = ExactIndex(DIM)
    exact.add(gallery)
    truth = exact.search(queries, 10)[1]

    def recall(ids: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]))

    codes_only = recall(ondisk.search(queries, 10)[1])
    reranked = recall(RerankedIndex(ondisk, gallery, candidates=100).search(queries, 10)[1])
    assert reranked > codes_only and reranked >= 0.9


def test_training_refuses_too_few_vectors(tmp_path):
    with pytest.raises(ValueError, match="at least 256"):
        train_ivfpq(clustered(100, 0), tmp_path, nlist=4, pq_m=PQ_M)
    with pytest.raises(FileNotFoundError, match="train_ivfpq first"):
        add_shard(tmp_path / "empty", 0, clustered(10, 0), ids=np.arange(10))


def test_npy_rows_reads_the_rows_asked_for(data, tmp_path):
    gallery, _ = data
    written = NpyRows.create(tmp_path / "v.npy", gallery.shape, np.float16)
    written.write(0, gallery[:100])
    written.write(100, gallery[100:])
    with pytest.raises(ValueError, match="cannot write"):
        written.write(N - 1, gallery[:2])
    written.close()
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), gallery.astype(np.float16))  # a valid .npy file
    rows = NpyRows(tmp_path / "v.npy")
    assert len(rows) == N and rows.shape == (N, DIM)
    np.testing.assert_array_equal(rows[np.array([5, 0, N - 1])], gallery[[5, 0, N - 1]].astype(np.float16))
    with pytest.raises(IndexError, match="outside"):
        rows[np.array([N])]
    rows.close()
