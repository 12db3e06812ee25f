"""The Milvus backend of the retriever (notebook 08): filters run in the engine and give exact search's answers."""

from __future__ import annotations

import copy
import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("pymilvus", reason="pymilvus + milvus-lite are in requirements.txt; install them")

from course_utils.embed import encode_images  # noqa: E402
from course_utils.retriever import FashionRetriever  # noqa: E402
from course_utils.vector_db import (  # noqa: E402
    DEFAULT_COLLECTION,
    MilvusIndex,
    VectorDatabaseError,
    filter_expression,
    milvus_retriever,
)

QUERIES = ["black cotton coat", "red striped dress", "short sleeve shirt"]
FILTERS = [{"colour": "black"}, {"category": "outerwear", "sleeve": "short"}, {"colour": "teal"}]


@pytest.fixture(scope="module")
def gallery(small_catalogue):
    return small_catalogue.split("test")  # 160 items


@pytest.fixture(scope="module")
def embeddings(tiny_bundle, gallery):
    return encode_images(tiny_bundle, gallery, use_cache=False, progress=False)


@pytest.fixture(scope="module")
def exact(tiny_bundle, gallery, embeddings):
    return FashionRetriever(tiny_bundle, gallery, index="exact", image_embeddings=embeddings)


def same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a["item_id"]) == list(b["item_id"])
    assert a["score"].to_numpy() == pytest.approx(b["score"].to_numpy(), abs=1e-5)


def test_filter_expression_quotes_values():
    assert filter_expression({"colour": "red", "sleeve": "long"}) == 'colour == "red" and sleeve == "long"'
    assert filter_expression({"colour": 're"d'}) == 'colour == "re\\"d"'  # a quote cannot end the string
    with pytest.raises(ValueError, match="field name"):
        filter_expression({"colour or 1": "red"})


def test_a_filter_on_any_value_a_catalogue_may_hold_finds_its_own_row_only(tmp_path):
    """Values outside ASCII used to be written as JSON's \\u escapes, which Milvus's parser refuses; the engine error
    then advised deleting the database."""
    values = ["écru", "中文", "😀", 'say "hi"', "back\\slash", "a\nb", "tab\tx", "x' or colour != '", "red"]
    vectors = np.eye(len(values), 16, dtype=np.float32)
    index = MilvusIndex.create(str(tmp_path / "values.db"), 16, ["colour"])
    try:
        index.add(vectors, attributes=[{"colour": value} for value in values])
        for row, value in enumerate(values):
            _, ids = index.search(vectors[:1], 3, {"colour": value})
            assert [int(i) for i in ids[0] if i >= 0] == [row], value
    finally:
        index.close()
    with pytest.raises(ValueError, match=r"filter colour='bell\\x07': the control character '\\x07' cannot be written"):
        filter_expression({"colour": "bell\x07"})


def test_milvus_matches_exact_search_with_and_without_filters(tiny_bundle, gallery, embeddings, exact, tmp_path):
    uri = str(tmp_path / "catalogue.db")
    milvus = milvus_retriever(tiny_bundle, gallery, uri, image_embeddings=embeddings)
    try:
        for query in QUERIES:
            same_results(milvus.search_by_text(query, top_k=10), exact.search_by_text(query, top_k=10))
            for filters in FILTERS:
                expected = exact.search_by_text(query, top_k=10, **filters)
                found = milvus.search_by_text(query, top_k=10, **filters)
                same_results(found, expected)
                for name, value in filters.items():
                    assert (found[name] == value).all()
        same_results(
            milvus.batch_search(QUERIES, top_k=5, colour="black"), exact.batch_search(QUERIES, top_k=5, colour="black")
        )
    finally:
        milvus.index.close()


def test_reopening_the_database_gives_the_same_results(tiny_bundle, gallery, embeddings, tmp_path):
    uri = str(tmp_path / "catalogue.db")
    first = milvus_retriever(tiny_bundle, gallery, uri, image_embeddings=embeddings)
    before = [first.search_by_text(q, top_k=8, **f) for q in QUERIES for f in FILTERS]
    first.index.close()
    reopened = milvus_retriever(tiny_bundle, gallery, uri)  # no embeddings given: read back from the database
    try:
        assert reopened.embeddings.shape == embeddings.shape
        assert (reopened.embeddings - embeddings).abs().max().item() == 0.0
        after = [reopened.search_by_text(q, top_k=8, **f) for q in QUERIES for f in FILTERS]
        for a, b in zip(before, after):
            same_results(a, b)
        _, item_ids, _, attributes = reopened.index.fetch()
        assert item_ids == gallery.ids
        assert attributes[0]["colour"] == gallery[0].attributes["colour"]
    finally:
        reopened.index.close()


def test_reopening_with_another_catalogue_is_refused(tiny_bundle, gallery, embeddings, tmp_path):
    uri = str(tmp_path / "catalogue.db")
    milvus_retriever(tiny_bundle, gallery, uri, image_embeddings=embeddings).index.close()
    with pytest.raises(VectorDatabaseError, match="rebuild=True"):
        milvus_retriever(tiny_bundle, gallery.subset(gallery.ids[:50]), uri)


@pytest.mark.parametrize("uri", ["/no/such/folder/catalogue.db", "catalogue.txt", "http://127.0.0.1:1"])
def test_bad_uris_give_clear_errors(uri):
    with pytest.raises(VectorDatabaseError, match="cannot open the vector database"):
        MilvusIndex.open(uri)


def test_missing_collection_and_unknown_filter_give_clear_errors(tiny_bundle, gallery, embeddings, tmp_path):
    uri = str(tmp_path / "catalogue.db")
    index = MilvusIndex.create(uri, embeddings.shape[1], ["colour"], collection="shop")
    try:
        index.add(embeddings[:10], attributes=[{"colour": "red"}] * 10)
        assert len(index) == 10
        with pytest.raises(ValueError, match="unknown attribute filter"):
            index.search(embeddings[:1], 3, filters={"size": "M"})
        with pytest.raises(VectorDatabaseError, match="already exists"):
            MilvusIndex.create(uri, embeddings.shape[1], ["colour"], collection="shop")
    finally:
        index.close()
    with pytest.raises(VectorDatabaseError, match="no collection 'fashion'.*'shop'"):
        MilvusIndex.open(uri, "fashion")


def test_reopening_refuses_other_embeddings_and_other_weights(tiny_bundle, gallery, embeddings, tmp_path):
    # A collection built from embeddings A must not serve A to a caller holding embeddings B or tuned weights.
    uri = str(tmp_path / "catalogue.db")
    milvus_retriever(tiny_bundle, gallery, uri, image_embeddings=embeddings).index.close()
    with pytest.raises(VectorDatabaseError, match="other embeddings than the image_embeddings given"):
        milvus_retriever(tiny_bundle, gallery, uri, image_embeddings=embeddings.flip(0))
    tuned = dataclasses.replace(tiny_bundle, model=copy.deepcopy(tiny_bundle.model))
    with torch.no_grad():
        next(tuned.model.parameters()).add_(0.01)  # "fine-tuned": the same identity, other weights
    with pytest.raises(VectorDatabaseError, match=r"fine-tuned since\?.*rebuild=True"):
        milvus_retriever(tuned, gallery, uri)
    rebuilt = milvus_retriever(tuned, gallery, uri, image_embeddings=embeddings.flip(0), rebuild=True)
    rebuilt.index.close()
    reopened = milvus_retriever(tuned, gallery, uri)  # the record now names the tuned weights
    try:
        assert torch.equal(reopened.embeddings, embeddings.flip(0))
    finally:
        reopened.index.close()


def test_reopening_names_changed_vectors_and_an_interrupted_build(
    tiny_bundle, gallery, embeddings, tmp_path, monkeypatch
):
    uri = str(tmp_path / "catalogue.db")
    index = milvus_retriever(tiny_bundle, gallery, uri, image_embeddings=embeddings).index
    row = {"row": 0, "item_id": gallery.ids[0], "embedding": embeddings[1].tolist(), **gallery[0].attributes}
    index.client.upsert(index.collection, [{**row, **{a: row.get(a, "") for a in index.attribute_names}}])
    index.close()
    with pytest.raises(VectorDatabaseError, match="differ from the SHA-256 recorded"):
        milvus_retriever(tiny_bundle, gallery, uri)

    def add_then_fail(self, vectors, *args, **kwargs):  # the server goes away after the first 50 rows
        original_add(
            self, vectors[:50], item_ids=gallery.ids[:50], attributes=[dict(i.attributes) for i in gallery][:50]
        )
        raise ConnectionError("server went away")

    original_add = MilvusIndex.add
    monkeypatch.setattr(MilvusIndex, "add", add_then_fail)
    with pytest.raises(ConnectionError):
        milvus_retriever(tiny_bundle, gallery, uri, image_embeddings=embeddings, rebuild=True)
    monkeypatch.setattr(MilvusIndex, "add", original_add)
    with pytest.raises(VectorDatabaseError, match="holds 50 of the 160 rows its build began to write: that build"):
        milvus_retriever(tiny_bundle, gallery, uri)


def test_len_counts_rows_when_collection_statistics_lag(embeddings, tmp_path, monkeypatch):
    index = MilvusIndex.create(str(tmp_path / "catalogue.db"), embeddings.shape[1], ["colour"])
    try:
        index.add(embeddings[:10])
        index.add(embeddings[10:15])  # default ids continue from len(index): 10..14
        # A Milvus server with Bounded consistency may report 0 rows right after an insert (milvus#50193).
        monkeypatch.setattr(index.client, "get_collection_stats", lambda *a, **k: {"row_count": 0})
        assert len(index) == 15
        assert index.client.describe_collection(index.collection)["consistency_level_name"] == "Strong"
        assert list(index.fetch()[0]) == list(range(15))
    finally:
        index.close()


def test_add_seals_what_it_inserted_once_per_call(embeddings, tmp_path, monkeypatch):
    """Rows left in a growing segment make every later count and search take the engine's slow path
    (benchmarks/bench_milvus.py measures it), so each add ends with one flush, not one per insert batch; with
    ``seal=False`` the rows are searchable at once and a later add seals them."""
    index = MilvusIndex.create(str(tmp_path / "catalogue.db"), embeddings.shape[1], ["colour"])
    try:
        flushes, inserted = [], []
        flush, insert = index.client.flush, index.client.insert
        monkeypatch.setattr(
            index.client, "flush", lambda name, **options: flushes.append(name) or flush(name, **options)
        )
        monkeypatch.setattr(
            index.client,
            "insert",
            lambda name, rows, **options: inserted.append(len(rows)) or insert(name, rows, **options),
        )
        index.add(embeddings[:12], batch_size=5)
        assert inserted == [5, 5, 2] and flushes == [index.collection] and len(index) == 12
        index.add(embeddings[12:15], seal=False)
        assert flushes == [index.collection] and len(index) == 15
        assert index.search(embeddings[13], 1)[1].tolist() == [[13]]  # searchable before the seal
        index.add(embeddings[15:16])
        assert flushes == [index.collection] * 2
    finally:
        index.close()


def test_index_type_and_its_search_parameter_reach_milvus(tiny_bundle, gallery, embeddings, tmp_path, monkeypatch):
    uri = str(tmp_path / "catalogue.db")
    milvus = milvus_retriever(
        tiny_bundle,
        gallery,
        uri,
        image_embeddings=embeddings,
        index_type="HNSW",
        index_params={"M": 8, "efConstruction": 64},
        search_params={"ef": 160},
    )
    sent = []
    search = milvus.index.client.search
    monkeypatch.setattr(
        milvus.index.client, "search", lambda *a, **k: sent.append(k["search_params"]) or search(*a, **k)
    )
    try:
        assert milvus.index.index_type == "HNSW"
        milvus.search_by_text(QUERIES[0], top_k=5)
        assert sent == [{"metric_type": "IP", "params": {"ef": 160}}]
    finally:
        milvus.index.close()
    with pytest.raises(VectorDatabaseError, match="has a HNSW index, not the FLAT asked for"):
        milvus_retriever(tiny_bundle, gallery, uri)
    with pytest.raises(ValueError, match=r"search_params \['nprobe'\] do not apply to index_type='HNSW'"):
        milvus_retriever(tiny_bundle, gallery, uri, index_type="HNSW", search_params={"nprobe": 8})
    with pytest.raises(ValueError, match="index_type='DISKANN' is not offered"):
        milvus_retriever(tiny_bundle, gallery, uri, index_type="DISKANN", rebuild=True)
    with pytest.raises(ValueError, match=r"index options \['nlist'\] apply only when index is a name"):
        milvus_retriever(tiny_bundle, gallery, uri, index_type="HNSW", nlist=4)


def test_rows_milvus_would_reject_are_refused_before_any_insert(embeddings, tmp_path):
    index = MilvusIndex.create(str(tmp_path / "catalogue.db"), embeddings.shape[1], ["colour"])
    try:
        too_long = [{"colour": "red"}] * 9 + [{"colour": "é" * 600}]  # 1,200 bytes in UTF-8
        with pytest.raises(ValueError, match=r"row 9 \(item '9'\): colour is 1200 bytes, more than the 1024"):
            index.add(embeddings[:10], attributes=too_long, batch_size=5)
        with pytest.raises(ValueError, match=r"row 1 \(item '1'\) has attribute\(s\) \['size'\]"):
            index.add(embeddings[:2], attributes=[{"colour": "red"}, {"colour": "red", "size": "M"}])
        assert len(index) == 0  # nothing half-written
        index.add(embeddings[:10])
        with pytest.raises(ValueError, match="queries is empty"):
            index.search(embeddings[:0], 3)
    finally:
        index.close()


def test_ids_given_twice_or_already_stored_are_refused_before_any_insert(embeddings, tmp_path):
    # Milvus keeps one row per primary key: a repeated id would replace a stored vector or drop a new one unseen.
    index = MilvusIndex.create(str(tmp_path / "catalogue.db"), embeddings.shape[1])
    try:
        with pytest.raises(ValueError, match=r"1 id\(s\) given more than once, e.g. \[7\]"):
            index.add(embeddings[:3], ids=[5, 7, 7])
        with pytest.raises(ValueError, match=r"ids must be \(3,\) integers"):
            index.add(embeddings[:3], ids=[[5], [6], [7]])
        assert len(index) == 0
        index.add(embeddings[:3], ids=[5, 6, 7])
        with pytest.raises(ValueError, match=r"2 id\(s\) already stored in collection 'fashion' .*e.g. \[6, 7\]"):
            index.add(embeddings[3:6], ids=[7, 8, 6])
        with pytest.raises(ValueError, match=r"1 id\(s\) already stored .*e.g. \[5\].*overwrite=True"):
            index.add(embeddings[3:6], ids=[3, 4, 5])
        assert len(index) == 3
        index.add(embeddings[3:5], ids=[8, 9])
        _, found = index.search(embeddings[:5], 1)
        assert found[:, 0].tolist() == [5, 6, 7, 8, 9]  # every vector still under its own id
    finally:
        index.close()


def test_a_damaged_database_folder_is_named_with_what_to_do(tmp_path):
    """Before, Milvus Lite's own error surfaced (a UTF-8 decode error naming no file, or a Parquet error) with the
    server's tracebacks, and rebuild=True could not help: the client cannot list the collections of a damaged
    folder. The database is written by another process: Milvus Lite writes its data files when that one ends."""
    built = tmp_path / "built.db"
    script = (
        "import numpy as np; from course_utils.vector_db import MilvusIndex; "
        f"index = MilvusIndex.create({str(built)!r}, 8, ['colour']); "
        "vectors = np.eye(8, dtype=np.float32)[np.arange(20) % 8]; "
        "index.add(vectors, item_ids=[f'i{k}' for k in range(20)], attributes=[{'colour': 'red'}] * 20); "
        "index.close()"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    damages = {
        "schema.json": lambda folder: (folder / "schema.json").write_bytes(np.random.default_rng(0).bytes(300)),
        "data file": lambda folder: [part.write_bytes(part.read_bytes()[:100]) for part in folder.rglob("*.parquet")],
    }
    for name, damage in damages.items():
        uri = tmp_path / f"{name}.db"
        shutil.copytree(built, uri)
        damage(uri / "collections" / DEFAULT_COLLECTION)
        with pytest.raises(VectorDatabaseError, match=rf"the vector database at '{uri}' failed .*delete {uri} "):
            MilvusIndex.open(str(uri))
    reopened = MilvusIndex.open(str(built))  # the undamaged folder opens, with its 20 rows
    try:
        assert len(reopened) == 20
    finally:
        reopened.close()


def test_a_folder_open_in_another_process_is_named_and_the_last_close_hands_it_over(embeddings, tmp_path):
    """Milvus Lite 3 runs its engine inside the process that opened the folder, and the engine holds the folder's lock.
    Before, close() left the engine running, so no other process could open the folder until this one ended (a
    notebook's kernel, say), and the error blamed the path ("Open local milvus failed. Use a local file path …")."""
    uri = str(tmp_path / "catalogue.db")
    index = MilvusIndex.create(uri, embeddings.shape[1], ["colour"])
    index.add(embeddings[:6], attributes=[{"colour": "red"}] * 6)
    script = f"from course_utils.vector_db import MilvusIndex; i = MilvusIndex.open({uri!r}); print(len(i)); i.close()"

    def open_in_another_process() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)

    held = open_in_another_process()
    assert held.returncode == 1
    assert f"the Milvus Lite database '{uri}' is open in another process, which holds its lock: close it" in held.stderr
    assert "Failed to start MilvusLite server" not in held.stderr  # Milvus Lite's own traceback is not shown
    second = MilvusIndex.open(uri)
    index.close()
    assert len(second) == 6  # the engine runs on for this process's other index of the folder
    second.close()
    handed_over = open_in_another_process()
    assert handed_over.returncode == 0 and handed_over.stdout.strip() == "6"


def test_a_closed_index_says_how_to_open_it_again(embeddings, tmp_path):
    """Before, every call after ``close()`` raised pymilvus's "should create connection first", naming nothing."""
    uri = str(tmp_path / "catalogue.db")
    index = MilvusIndex.create(uri, embeddings.shape[1], ["colour"])
    index.add(embeddings[:4], attributes=[{"colour": "red"}] * 4)
    index.close()
    index.close()  # a second close does nothing
    assert repr(index).endswith(", closed)")
    closed = rf"collection 'fashion' at '{uri}' was closed; open it again with MilvusIndex.open\('{uri}'"
    for call in (
        lambda: index.search(embeddings[:1], 2),
        lambda: index.add(embeddings[4:5], ids=[4]),
        lambda: len(index),
        lambda: index.fetch(),
    ):
        with pytest.raises(VectorDatabaseError, match=closed):
            call()
    reopened = MilvusIndex.open(uri)
    try:
        assert reopened.search(embeddings[:1], 1)[1].tolist() == [[0]]
    finally:
        reopened.close()


def test_an_engine_error_in_use_names_the_database(embeddings, tmp_path, monkeypatch):
    from pymilvus.exceptions import MilvusException

    uri = str(tmp_path / "catalogue.db")
    index = MilvusIndex.create(uri, embeddings.shape[1])
    try:
        index.add(embeddings[:4])

        def server_gone(*args, **kwargs):
            raise MilvusException(code=2, message="server unavailable")

        monkeypatch.setattr(index.client, "search", server_gone)
        with pytest.raises(VectorDatabaseError, match=rf"the vector database at '{uri}' failed \(server unavailable\)"):
            index.search(embeddings[:1], 2)
    finally:
        index.close()


def test_search_counts_rows_only_when_fewer_than_k_come_back(embeddings, tmp_path, monkeypatch):
    """A count is one more query into the engine, so ``search`` checks ``k`` against it only when rows come back short:
    a filter matched fewer than k (padded with id -1) or k exceeds the rows stored (refused, as every index does)."""
    index = MilvusIndex.create(str(tmp_path / "catalogue.db"), embeddings.shape[1], ["colour"])
    try:
        index.add(embeddings[:6], attributes=[{"colour": "red"}] * 2 + [{"colour": "blue"}] * 4)
        counts = []
        query = index.client.query
        monkeypatch.setattr(
            index.client, "query", lambda *a, **options: counts.append(options["output_fields"]) or query(*a, **options)
        )
        scores, ids = index.search(embeddings[:3], np.int64(6))
        assert counts == [] and sorted(ids[0].tolist()) == list(range(6)) and np.isfinite(scores).all()
        scores, ids = index.search(embeddings[:1], 4, filters={"colour": "red"})
        assert counts == [["count(*)"]] and sorted(ids[0, :2].tolist()) == [0, 1] and ids[0, 2:].tolist() == [-1, -1]
        assert np.isneginf(scores[0, 2:]).all()
        for k, refusal in [(7, r"k=7 must be in \[1, 6\]"), (0, r"k=0 must be in \[1, 6\]"), (2.5, "whole number")]:
            with pytest.raises(ValueError, match=refusal):
                index.search(embeddings[:1], k)
    finally:
        index.close()


def test_a_folder_another_process_takes_between_the_check_and_the_open_is_named_as_held(tmp_path, monkeypatch):
    """Two processes opening one folder at once both passed the lock check; the loser got "cannot open ... use a
    local file path ending in .db" (and Milvus Lite's traceback) instead of "open in another process"."""
    import pymilvus
    from pymilvus.exceptions import MilvusException

    from course_utils import vector_db

    checks = iter([False, True])  # free when checked, taken by the time the engine opens it
    monkeypatch.setattr(vector_db, "_locked_by_another_process", lambda folder: next(checks))

    def engine_refuses(**kwargs):
        raise MilvusException(message="DataDirLockedError")

    monkeypatch.setattr(pymilvus, "MilvusClient", engine_refuses)
    with pytest.raises(VectorDatabaseError, match="is open in another process, which holds its lock"):
        vector_db._client(str(tmp_path / "shared.db"), timeout=5)
