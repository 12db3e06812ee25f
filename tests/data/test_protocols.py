"""ASEN's attribute-specific retrieval protocol."""

import pytest

from course_utils.data import Catalogue, Item, attribute_retrieval_protocol


def toy_catalogue(n=50):
    colours = ["red", "blue", "green", "black", "white"]
    items = [
        Item(f"i{k}", ("x",), ("title",), {"colour": colours[k % 5], **({"sleeve": "long"} if k % 2 else {})}, "test")
        for k in range(n)
    ]
    return Catalogue("toy", items)


def test_queries_and_candidates_split_one_to_four():
    splits = attribute_retrieval_protocol(toy_catalogue(), seed=0)
    colour = splits["colour"]
    assert len(colour.query_ids) + colour.dropped_queries == 10 and len(colour.candidate_ids) == 40
    assert not set(colour.query_ids) & set(colour.candidate_ids)
    assert set(splits) == {"colour", "sleeve"}
    assert len(splits["sleeve"].candidate_ids) == 20  # only the 25 items with sleeves take part


def test_relevance_is_same_value():
    catalogue = toy_catalogue()
    split = attribute_retrieval_protocol(catalogue, ["colour"], seed=1)["colour"]
    # each value is that of the item at the same position
    assert split.query_values == [catalogue.by_id(i).attributes["colour"] for i in split.query_ids]
    assert split.candidate_values == [catalogue.by_id(i).attributes["colour"] for i in split.candidate_ids]
    relevance = split.relevance()
    assert relevance.shape == (len(split.query_ids), len(split.candidate_ids))
    for q, qv in enumerate(split.query_values):
        assert [bool(r) for r in relevance[q]] == [cv == qv for cv in split.candidate_values]


def test_queries_without_any_relevant_candidate_are_counted():
    items = [Item("only-red", ("x",), ("t",), {"colour": "red"}, "test")] + [
        Item(f"b{k}", ("x",), ("t",), {"colour": "blue"}, "test") for k in range(9)
    ]
    for seed in range(20):  # find a split that puts the single red item among the queries
        split = attribute_retrieval_protocol(Catalogue("toy", items), ["colour"], query_share=0.5, seed=seed)["colour"]
        if "only-red" not in split.candidate_ids:
            assert split.dropped_queries == 1 and "only-red" not in split.query_ids
            return
    pytest.fail("no seed put the red item among the queries")


def test_bad_arguments():
    with pytest.raises(ValueError, match="query_share"):
        attribute_retrieval_protocol(toy_catalogue(), query_share=1.5)
    with pytest.raises(ValueError, match="only 0 items"):
        attribute_retrieval_protocol(toy_catalogue(), ["fabric"])
