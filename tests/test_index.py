"""Tests of course_utils.index: exact vs FAISS agreement, precision, chunking, persistence and bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from course_utils.cache import write_atomic
from course_utils.index import INDEX_KINDS, ExactIndex, FaissIndex, build_index, perturbed_copies

DIM = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return _unit(rng.normal(size=(3000, DIM))), _unit(rng.normal(size=(40, DIM)))


def _well_separated(gallery: np.ndarray, queries: np.ndarray, k: int, gap: float = 1e-4) -> np.ndarray:
    """Queries whose top-(k+1) exact scores differ pairwise by more than ``gap`` (so any exact method agrees)."""
    scores = np.sort(queries.astype(np.float64) @ gallery.T.astype(np.float64), axis=1)[:, ::-1][:, : k + 1]
    return np.flatnonzero(np.min(-np.diff(scores, axis=1), axis=1) > gap)


def _reference(gallery: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries.astype(np.float64) @ gallery.T.astype(np.float64)), axis=1, kind="stable")[:, :k]


def test_exact_matches_faiss_flat_and_reference(data):
    gallery, queries = data
    keep = _well_separated(gallery, queries, k=10)
    assert len(keep) >= 30  # the seeded data is well separated for most queries
    exact, flat = ExactIndex(DIM), FaissIndex(DIM, kind="flat")
    exact.add(gallery)
    flat.add(gallery)
    exact_scores, exact_ids = exact.search(queries[keep], 10)
    flat_scores, flat_ids = flat.search(queries[keep], 10)
    np.testing.assert_array_equal(exact_ids, flat_ids)
    np.testing.assert_array_equal(exact_ids, _reference(gallery, queries[keep], 10))
    np.testing.assert_allclose(exact_scores, flat_scores, atol=1e-5)
    assert exact_scores.dtype == np.float32 and exact_ids.dtype == np.int64
    assert exact_scores.shape == exact_ids.shape == (len(keep), 10)
    assert np.all(np.diff(exact_scores, axis=1) <= 0)  # descending


def test_single_query_path_equals_batched(data):
    gallery, queries = data
    index = ExactIndex(DIM)
    index.add(torch.from_numpy(gallery))
    batch_scores, batch_ids = index.search(queries, 5)
    for i in range(5):
        scores, ids = index.search(queries[i], 5)  # (d,) query -> (1, k)
        assert ids.shape == (1, 5)
        np.testing.assert_array_equal(ids[0], batch_ids[i])
        np.testing.assert_allclose(scores[0], batch_scores[i], atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_chunked_equals_unchunked(data, dtype):
    gallery, queries = data
    keep = _well_separated(gallery, queries, k=7, gap=1e-3)
    whole = ExactIndex(DIM, dtype=dtype, chunk_size=1_000_000)
    whole.add(gallery)
    expected_scores, expected_ids = whole.search(queries[keep], 7)
    for chunk_size in (1, 7, 1000, 2999):
        chunked = ExactIndex(DIM, dtype=dtype, chunk_size=chunk_size)
        chunked.SINGLE_QUERY_CHUNK = chunk_size  # single queries too go through several chunks and the merge
        chunked.add(gallery[:1234])
        chunked.add(gallery[1234:])  # several add calls
        for q in (queries[keep], queries[keep[0]]):
            scores, ids = chunked.search(q, 7)
            n = ids.shape[0]
            np.testing.assert_array_equal(ids, expected_ids[:n])
            np.testing.assert_allclose(scores, expected_scores[:n], atol=1e-6)


def test_float16_close_to_float32(data):
    gallery, queries = data
    fp32, fp16 = ExactIndex(DIM), build_index("exact-fp16", DIM)
    fp32.add(gallery)
    fp16.add(gallery)
    scores32, ids32 = fp32.search(queries, 10)
    scores16, ids16 = fp16.search(queries, 10)
    assert fp16.vectors.dtype == torch.float16 and scores16.dtype == np.float32
    np.testing.assert_allclose(scores16, scores32, atol=2e-3)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids16, ids32, strict=True)])
    assert overlap >= 0.95


def test_custom_ids_are_returned(data):
    gallery, queries = data
    ids = np.arange(len(gallery), dtype=np.int64) * 10 + 7
    for index in (ExactIndex(DIM), FaissIndex(DIM, kind="flat")):
        index.add(gallery[:100], ids=ids[:100])
        index.add(gallery[100:], ids=ids[100:])
        _, found = index.search(queries, 3)
        np.testing.assert_array_equal(found, ids[_reference(gallery, queries, 3)])
        with pytest.raises(ValueError, match="give them on this call too"):
            index.add(gallery[:2])


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_save_load_round_trip(tmp_path, data, kind):
    gallery, queries = data
    options = {"nlist": 16, "nprobe": 16} if kind == "ivf" else {}
    index = build_index(kind, DIM, **options)
    index.add(gallery, ids=np.arange(len(gallery)) + 5)
    scores, ids = index.search(queries, 4)
    path = tmp_path / f"{kind}.index"
    index.save(path)
    loaded = type(index).load(path)
    assert len(loaded) == len(index) and loaded.dim == DIM
    loaded_scores, loaded_ids = loaded.search(queries, 4)
    np.testing.assert_array_equal(loaded_ids, ids)
    np.testing.assert_allclose(loaded_scores, scores, atol=1e-6)
    if isinstance(index, FaissIndex):
        assert (tmp_path / f"{kind}.index.json").exists()
        assert loaded.nprobe == index.nprobe and loaded.ef_search == index.ef_search


def test_ivf_with_all_lists_probed_is_exact(data):
    gallery, queries = data
    keep = _well_separated(gallery, queries, k=10)
    ivf = build_index("ivf", DIM, nlist=8, nprobe=8)
    assert not ivf.is_trained
    ivf.add(gallery)  # trains on the added vectors
    assert ivf.is_trained and len(ivf) == len(gallery)
    _, ids = ivf.search(queries[keep], 10)
    np.testing.assert_array_equal(ids, _reference(gallery, queries[keep], 10))
    with pytest.raises(ValueError, match="at least nlist=64"):
        FaissIndex(DIM, kind="ivf", nlist=64).train(gallery[:10])


def test_hnsw_finds_most_neighbours(data):
    gallery, queries = data
    hnsw = build_index("hnsw", DIM, hnsw_m=16, ef_search=128)
    hnsw.add(gallery)
    _, ids = hnsw.search(queries, 10)
    reference = _reference(gallery, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, reference, strict=True)])
    assert recall >= 0.9


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_bad_input_errors(data, kind):
    gallery, queries = data
    index = build_index(kind, DIM, **({"nlist": 4} if kind == "ivf" else {}))
    with pytest.raises(ValueError, match="index is empty"):
        index.search(queries, 1)
    with pytest.raises(ValueError, match="dimension mismatch"):
        index.add(np.ones((5, DIM + 1), dtype=np.float32))
    index.add(gallery[:20])
    with pytest.raises(ValueError, match=r"k=21 must be in \[1, 20\]"):
        index.search(queries, 21)
    with pytest.raises(ValueError, match="dimension mismatch"):
        index.search(np.ones((2, DIM - 1), dtype=np.float32), 1)
    with pytest.raises(ValueError, match="queries is empty"):
        index.search(np.ones((0, DIM), dtype=np.float32), 1)


def test_build_index_unknown_kind_lists_choices():
    with pytest.raises(ValueError, match=r"unknown index kind 'annoy'.*'exact'.*'hnsw'"):
        build_index("annoy", DIM)
    assert isinstance(build_index("exact", DIM), ExactIndex)
    assert build_index("exact", DIM, chunk_size=5).chunk_size == 5
    with pytest.raises(ValueError, match="dtype must be one of"):
        ExactIndex(DIM, dtype="int8")


def test_exact_index_owns_its_vectors(data):
    gallery, queries = data
    vectors = gallery.copy()
    index = ExactIndex(DIM)
    index.add(vectors)
    expected = index.search(queries, 3)
    vectors[:] = 0  # the caller reuses its buffer
    np.testing.assert_array_equal(index.search(queries, 3)[1], expected[1])


@pytest.mark.parametrize("kind", ["exact", "flat"])
def test_a_failed_save_keeps_the_previous_file_whole(kind, tmp_path, monkeypatch):
    import faiss

    vectors = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    index = build_index(kind, 8)
    index.add(vectors)
    path = tmp_path / "gallery.index"
    index.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    monkeypatch.setattr(faiss, "serialize_index", crash)
    index.add(vectors[:5])
    with pytest.raises(OSError, match=rf"cannot write the index to {re.escape(str(path))}: disk full; "):
        index.save(path)
    assert path.read_bytes() == before  # the old index is intact: a reader never sees half a file
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("gallery.index")) == []


class _Killed(BaseException):
    """A save stopped by a crash or kill: not an error ``save`` handles."""


def _stop_after(monkeypatch, writes: int) -> None:
    """Make ``save`` stop, as a killed process would, once ``writes`` of its files are whole on disk (the index and
    its ids through ``index.write_atomic``, the settings last through ``json_files.write_json``'s)."""
    import course_utils.index as index_module
    import course_utils.json_files as json_files_module

    finished = []

    def write_then_stop(path, write):
        if len(finished) == writes:
            raise _Killed
        write_atomic(path, write)
        finished.append(path)

    monkeypatch.setattr(index_module, "write_atomic", write_then_stop)
    monkeypatch.setattr(json_files_module, "write_atomic", write_then_stop)


def _unit_vectors(n: int, seed: int) -> np.ndarray:
    return _unit(np.random.default_rng(seed).normal(size=(n, DIM)))


@pytest.mark.parametrize("writes", [1, 2])
def test_a_save_killed_part_way_is_refused_by_load_naming_the_index(tmp_path, monkeypatch, writes):
    """Default ids saved, then a custom-ids save of other vectors killed after its index (1) or its ids (2): the old
    settings no longer vouch for the new index file, so load names it instead of returning the wrong ids."""
    path = tmp_path / "gallery.index"
    first = FaissIndex(DIM)
    first.add(_unit_vectors(50, seed=1))
    first.save(path)
    second = FaissIndex(DIM)
    second.add(_unit_vectors(60, seed=2), ids=np.arange(60) + 1000)
    _stop_after(monkeypatch, writes)
    with pytest.raises(_Killed):
        second.save(path)
    expected = re.escape(f"{path} is not the file gallery.index.json was saved with") + ".*save the index again"
    with pytest.raises(ValueError, match=expected):
        FaissIndex.load(path)


def test_ids_of_another_save_are_refused_by_load_naming_the_ids_file(tmp_path, monkeypatch):
    """The same vectors saved with ids 1000.., then with ids 2000.. killed after the ids: the index bytes are
    unchanged, so only the ids file's recorded SHA-256 tells that it belongs to another save."""
    path, vectors = tmp_path / "gallery.index", _unit_vectors(50, seed=1)
    for start, writes in ((1000, None), (2000, 2)):
        index = FaissIndex(DIM)
        index.add(vectors, ids=np.arange(50) + start)
        if writes is None:
            index.save(path)
            continue
        _stop_after(monkeypatch, writes)
        with pytest.raises(_Killed):
            index.save(path)
    with pytest.raises(
        ValueError, match=re.escape(f"{path}.ids.npy is not the file gallery.index.json was saved with")
    ):
        FaissIndex.load(path)


def test_settings_record_the_vector_count_and_are_checked(tmp_path):
    path, settings_path = tmp_path / "gallery.index", tmp_path / "gallery.index.json"
    index = FaissIndex(DIM)
    index.add(_unit_vectors(50, seed=1))
    index.save(path)
    settings = json.loads(settings_path.read_text())
    assert settings["ntotal"] == 50
    settings_path.write_text(json.dumps({**settings, "ntotal": 49}))
    with pytest.raises(ValueError, match=re.escape(f"{path} holds 50 vectors but {settings_path} says 49")):
        FaissIndex.load(path)


def test_an_index_saved_before_checksums_were_recorded_still_loads(tmp_path):
    path, settings_path = tmp_path / "gallery.index", tmp_path / "gallery.index.json"
    vectors = _unit_vectors(50, seed=1)
    index = FaissIndex(DIM)
    index.add(vectors, ids=np.arange(50) + 1000)
    index.save(path)
    settings = json.loads(settings_path.read_text())
    old_keys = {key: value for key, value in settings.items() if key not in ("ntotal", "index_sha256", "ids_sha256")}
    assert len(old_keys) == len(settings) - 3
    settings_path.write_text(json.dumps(old_keys))
    _, ids = FaissIndex.load(path).search(vectors[[0, 44, 4]], 1)
    np.testing.assert_array_equal(ids[:, 0], [1000, 1044, 1004])  # each vector finds itself, by its custom id


@pytest.mark.parametrize("kind", ["exact", "flat"])
def test_a_negative_id_is_refused_since_searches_mark_missing_results_with_it(kind):
    """Stored under -1, the best match came back as a "missing" slot and the retriever dropped it without a word."""
    index = build_index(kind, 4)
    with pytest.raises(ValueError, match=r"ids must be >= 0 \(a search marks a missing result with -1\), got -1"):
        index.add(np.eye(4, dtype=np.float32), ids=np.array([-1, 5, 6, 7]))
    assert len(index) == 0


def test_perturbed_copies_are_seeded_unit_vectors_near_their_rows():
    source = np.eye(4, 8, dtype=np.float32)
    rows, vectors = perturbed_copies(source, 50, 0.3, np.random.default_rng(7))
    again = perturbed_copies(source, 50, 0.3, np.random.default_rng(7))
    assert np.array_equal(rows, again[0]) and np.array_equal(vectors, again[1])
    assert vectors.shape == (50, 8) and vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1)
    assert (vectors @ source.T).argmax(axis=1).tolist() == rows.tolist()  # each copy stays nearest its own row


@pytest.mark.parametrize(("knob", "value"), [("nprobe", 1.5), ("nprobe", 0), ("ef_search", 2.0), ("ef_search", True)])
def test_a_search_knob_that_is_not_a_whole_number_from_1_is_refused_by_name(knob, value):
    """``int()`` ran nprobe 1.5 as 1, so a sweep labelled 1.5 measured nprobe 1."""
    index = build_index("ivf", DIM, nlist=8, nprobe=8)
    with pytest.raises(ValueError, match=rf"{knob} must be a whole number >= 1 .*got {value!r}"):
        setattr(index, knob, value)
    with pytest.raises(ValueError, match=rf"{knob} must be a whole number >= 1"):
        build_index("ivf", DIM, nlist=8, **{knob: value})
