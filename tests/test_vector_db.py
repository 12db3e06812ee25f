"""The Milvus backend of the retriever (notebook 08): filters run in the engine and give exact search's answers."""

from __future__ import annotations

import pandas as pd
import pytest

pytest.importorskip("pymilvus", reason="pymilvus + milvus-lite are in requirements.txt; install them")

from course_utils.embed import encode_images  # noqa: E402
from course_utils.retriever import FashionRetriever  # noqa: E402
from course_utils.vector_db import MilvusIndex, VectorDatabaseError, filter_expression, milvus_retriever  # noqa: E402

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
