"""The on-disk IVF-PQ of notebook 08 at small size: shards merged on disk search like one in-RAM index."""

from __future__ import annotations

import os
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


def test_merging_and_opening_print_none_of_faiss_progress_lines(data, tmp_path, capfd):
    """FAISS's C++ prints "resizing ..." and "IO_FLAG_ONDISK_SAME_DIR: updating ..." to the process's standard output
    (a notebook would show them); the course keeps them out, and its own prints still reach the output."""
    gallery, _ = data
    train_ivfpq(gallery[:3000], tmp_path, nlist=NLIST, pq_m=PQ_M)
    add_shard(tmp_path, 0, gallery[:500], ids=np.arange(500))
    capfd.readouterr()
    merge_shards(tmp_path)
    open_ondisk(tmp_path)
    print("the course's own line")
    assert capfd.readouterr().out == "the course's own line\n"


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


def build(folder: Path, shards: list[np.ndarray], train_on: np.ndarray | None = None) -> None:
    """Train a small IVF-PQ in ``folder`` and add one shard per id array (the clustered rows with those ids)."""
    vectors = clustered(1000, seed=2)
    train_ivfpq(vectors[:600] if train_on is None else train_on, folder, nlist=4, pq_m=PQ_M)
    for shard, ids in enumerate(shards):
        add_shard(folder, shard, vectors[ids % len(vectors)], ids=ids)


def test_a_moved_folder_opens_with_its_own_lists(tmp_path):
    build(tmp_path / "built", [np.arange(0, 100), np.arange(100, 200)])
    before = merge_shards(tmp_path / "built").search(clustered(5, seed=3), 10)[1]
    (tmp_path / "built").rename(tmp_path / "moved")  # populated.index recorded the old folder's lists path
    moved = open_ondisk(tmp_path / "moved")
    assert len(moved) == 200
    np.testing.assert_array_equal(moved.search(clustered(5, seed=3), 10)[1], before)


def test_a_cut_short_or_mismatched_lists_file_is_refused_by_name(tmp_path):
    build(tmp_path / "a", [np.arange(0, 100), np.arange(100, 200)])
    build(tmp_path / "b", [np.arange(0, 150)])
    merge_shards(tmp_path / "a")
    merge_shards(tmp_path / "b")
    lists = tmp_path / "a" / "lists.ivfdata"
    whole = lists.read_bytes()
    lists.write_bytes(whole[: len(whole) // 2])  # a copy to a search node that did not finish
    with pytest.raises(
        ValueError, match=rf"{lists} is {len(whole) // 2:,} bytes but merge_shards wrote {len(whole):,}"
    ):
        open_ondisk(tmp_path / "a")
    lists.write_bytes(whole)
    assert len(open_ondisk(tmp_path / "a")) == 200
    for part in (tmp_path / "b").glob("populated.index*"):  # b's index and its record, beside a's lists
        part.replace(tmp_path / "a" / part.name)
    with pytest.raises(ValueError, match=r"populated\.index is not the index .*lists\.ivfdata was merged with"):
        open_ondisk(tmp_path / "a")
    (tmp_path / "a" / "lists.json").unlink()  # a folder merged before the record existed
    with pytest.raises(
        ValueError, match=r"lists\.json is missing or not a readable record of lists\.ivfdata .*merge_shards"
    ):
        open_ondisk(tmp_path / "a")


def test_lists_changed_at_their_own_size_are_found_by_verify(tmp_path):
    """Random bytes in place of the lists open as before (their size is checked at every open, not their bytes) and
    would return garbage ids; verify=True reads them once and refuses them by name."""
    build(tmp_path, [np.arange(0, 100), np.arange(100, 200)])
    merge_shards(tmp_path)
    assert len(open_ondisk(tmp_path, verify=True)) == 200
    lists = tmp_path / "lists.ivfdata"
    lists.write_bytes(np.random.default_rng(0).bytes(lists.stat().st_size))
    with pytest.raises(ValueError, match=rf"{lists} differs from the lists merge_shards wrote \(their SHA-256\)"):
        open_ondisk(tmp_path, verify=True)


def test_a_merge_stopped_midway_leaves_nothing_that_opens(tmp_path, monkeypatch):
    import faiss.contrib.ondisk

    build(tmp_path, [np.arange(0, 100), np.arange(100, 200)])
    merge_shards(tmp_path)

    def write_part_then_die(index, shards, lists):
        Path(lists).write_bytes(b"\0" * 64)
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss.contrib.ondisk, "merge_ondisk", write_part_then_die)
    with pytest.raises(KeyboardInterrupt):
        merge_shards(tmp_path)
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match=r"populated\.index not found"):
        open_ondisk(tmp_path)
    (tmp_path / "lists.json").write_text("{}")  # a record of no merge
    merge_shards(tmp_path)
    assert len(open_ondisk(tmp_path)) == 200


def test_merge_refuses_a_shard_of_another_training(tmp_path):
    build(tmp_path / "old", [np.arange(200, 300)], train_on=clustered(600, seed=4))
    build(tmp_path / "new", [np.arange(0, 100), np.arange(100, 200)])
    for suffix in (".index", ".json"):  # a leftover of the old build, numbered after the new shards
        (tmp_path / "old" / f"shard-00000{suffix}").rename(tmp_path / "new" / f"shard-00002{suffix}")
    with pytest.raises(ValueError, match=r"shard-00002\.index was encoded with another trained\.index"):
        merge_shards(tmp_path / "new")
    with pytest.raises(ValueError, match=r"still holds 3 shard\(s\) of an earlier build \(shard-00000\.index"):
        train_ivfpq(clustered(600, seed=2), tmp_path / "new", nlist=4, pq_m=PQ_M)


def test_a_shard_encoded_while_trained_index_was_rewritten_is_refused(tmp_path, monkeypatch):
    """add_shard hashed trained.index after encoding with it: rewritten meanwhile, the record named the new quantiser
    and the merge took codes of the old one. Hashed before it is read, the mismatch is refused."""
    from course_utils import index_ondisk

    build(tmp_path, [])
    load_trained = index_ondisk._load_trained

    def rewritten_once_read(folder):
        trained = load_trained(folder)
        train_ivfpq(clustered(600, seed=4), folder, nlist=4, pq_m=PQ_M)  # another training, mid-way
        return trained

    monkeypatch.setattr(index_ondisk, "_load_trained", rewritten_once_read)
    add_shard(tmp_path, 0, clustered(100, seed=5), ids=np.arange(100))
    monkeypatch.setattr(index_ondisk, "_load_trained", load_trained)
    with pytest.raises(ValueError, match=r"shard-00000\.index was encoded with another trained\.index"):
        merge_shards(tmp_path)


def test_merge_refuses_overlapping_ids_and_damaged_or_unrecorded_shards(tmp_path):
    build(tmp_path, [np.arange(0, 100), np.arange(50, 150)])
    with pytest.raises(
        ValueError, match=r"shard-00000\.index \(ids 0\.\.99\) and shard-00001\.index \(ids 50\.\.149\) overlap"
    ):
        merge_shards(tmp_path)
    add_shard(tmp_path, 1, clustered(100, seed=5), ids=np.arange(100, 200))
    with open(tmp_path / "shard-00001.index", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ValueError, match=r"shard-00001\.index is missing or differs from the SHA-256"):
        merge_shards(tmp_path)
    (tmp_path / "shard-00001.json").unlink()
    with pytest.raises(
        ValueError,
        match=r"shard-00001\.json is missing or not a readable shard record .*rerun add_shard for shard-00001\.index",
    ):
        merge_shards(tmp_path)
    add_shard(tmp_path, 1, clustered(100, seed=5), ids=np.arange(100, 200))
    assert len(merge_shards(tmp_path)) == 200


@pytest.mark.parametrize(
    ("ids", "message"),
    [(None, "ids are required"), (np.arange(-1, 9), r"ids must be >= 0"), (np.zeros(10, dtype=np.int64), "ids repeat")],
)
def test_add_shard_refuses_ids_a_search_cannot_return(tmp_path, ids, message):
    build(tmp_path, [])
    with pytest.raises(ValueError, match=message):
        add_shard(tmp_path, 0, clustered(10, seed=6), ids=ids)


def test_npy_rows_moves_every_byte_when_the_system_moves_a_few_per_call(data, tmp_path, monkeypatch):
    gallery, _ = data
    pwrite, pread = os.pwrite, os.pread
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: pwrite(fd, bytes(data[:7]), offset))
    monkeypatch.setattr(os, "pread", lambda fd, size, offset: pread(fd, min(size, 7), offset))
    written = NpyRows.create(tmp_path / "v.npy", (50, DIM), np.float16)
    written.write(0, gallery[:50])
    written.close()
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), gallery[:50].astype(np.float16))
    rows = NpyRows(tmp_path / "v.npy")
    np.testing.assert_array_equal(rows[np.arange(50)], gallery[:50].astype(np.float16))
    rows.close()


def test_npy_rows_names_the_file_for_a_read_only_write_and_a_truncated_file(data, tmp_path):
    gallery, _ = data
    with NpyRows.create(tmp_path / "v.npy", (50, DIM), np.float16) as written:
        written.write(0, gallery[:50])
    with NpyRows(tmp_path / "v.npy") as rows:
        with pytest.raises(
            ValueError, match=r"v\.npy was opened read-only; open it with NpyRows\(path, writable=True\)"
        ):
            rows.write(0, gallery[:1])
        os.truncate(tmp_path / "v.npy", (tmp_path / "v.npy").stat().st_size - 10)  # cut inside the last row
        assert rows[np.array([48])].shape == (1, DIM)
        with pytest.raises(ValueError, match=r"v\.npy ends inside row 49 .* truncated"):
            rows[np.array([49])]
    with pytest.raises(OSError):
        rows[np.array([0])]  # the with block closed the file
    with pytest.raises(ValueError, match=r"v\.npy is not a readable \.npy file"):
        NpyRows(tmp_path / "v.npy")


class FixedCandidates:
    """An approximate index stub that finds only ids 2 and 0 of four, padding with -1 as FAISS does."""

    dim = 2

    def __len__(self) -> int:
        return 4

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(queries), 4), np.float32), np.tile([2, -1, 0, -1], (len(queries), 1))


def test_reranking_fewer_candidates_than_k_pads_with_minus_one():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], dtype=np.float32)
    scores, ids = RerankedIndex(FixedCandidates(), vectors, candidates=4).search(np.array([[1.0, 0.0]]), 3)
    np.testing.assert_array_equal(ids, [[0, 2, -1]])  # exact scores 1.0 (id 0) and 0.6 (id 2); one slot empty
    np.testing.assert_allclose(scores, [[1.0, 0.6, -np.inf]], atol=1e-6)


@pytest.mark.parametrize("candidates", [0, -5, 2.5, None])
def test_reranked_index_refuses_candidates_that_are_not_a_whole_number_of_at_least_1(candidates):
    """``candidates=0`` re-scored ``k`` candidates silently: notebook 08 labelled such rows "re-rank 0"."""
    vectors = np.eye(4, 2, dtype=np.float32)
    with pytest.raises(ValueError) as refused:
        RerankedIndex(FixedCandidates(), vectors, candidates=candidates)
    assert str(refused.value).startswith(f"candidates must be a whole number >= 1 (approximate neighbours re-scored "
                                         f"exactly per query), got {candidates!r}")  # fmt: skip


def test_reranked_index_refuses_a_k_above_its_candidates_naming_both():
    """With ``k`` above ``candidates`` the search re-scored ``k`` candidates: more than the index was built for."""
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], dtype=np.float32)
    searcher = RerankedIndex(FixedCandidates(), vectors, candidates=2)
    with pytest.raises(ValueError, match=r"k=3 is more than the candidates=2 .*candidates >= 3"):
        searcher.search(np.array([[1.0, 0.0]]), 3)
    _, ids = searcher.search(np.array([[1.0, 0.0]]), 2)  # k == candidates is allowed
    np.testing.assert_array_equal(ids, [[0, 2]])
