"""Issue 15, queries: a non-string query is a type error saying what was given, and ``top_k=True`` or
``top_k=2.5`` is refused by the retriever and the widgets before anything is ranked."""

from __future__ import annotations

import pytest

from course_utils import widgets as cw


@pytest.mark.parametrize(("query", "given"), [(123, "int 123"), (None, "NoneType None"), (b"red", "bytes b'red'")])
def test_a_non_string_text_query_is_a_type_error_saying_what_was_given(make_retriever, query, given):
    with pytest.raises(TypeError, match=rf"query must be a string such as 'red dress', got {given}"):
        make_retriever().search_by_text(query)


def test_a_list_given_to_search_by_text_points_to_batch_search(make_retriever):
    with pytest.raises(TypeError, match=r"got list \['red', 'blue'\]; use batch_search for several queries"):
        make_retriever().search_by_text(["red", "blue"])


def test_a_string_given_to_batch_search_points_to_search_by_text(make_retriever):
    """It used to be split into one query per character."""
    with pytest.raises(TypeError, match=r"queries must be a list of strings, got str 'red'; use search_by_text"):
        make_retriever().batch_search("red")


@pytest.mark.parametrize(
    ("queries", "message"),
    [
        (None, r"queries must be a list of strings, got NoneType None"),
        (["red", 5], r"text query 1 must be a string such as 'red dress', got int 5"),
    ],
)
def test_batch_search_checks_every_query(make_retriever, queries, message):
    with pytest.raises(TypeError, match=message):
        make_retriever().batch_search(queries)


def test_batch_search_takes_any_iterable_of_strings(make_retriever):
    import numpy as np

    retriever = make_retriever()
    frame = retriever.batch_search(np.array(["blue jacket", "red shirt"]), top_k=1)
    assert list(frame["item_id"]) == ["blue", "red"]
    assert list(retriever.batch_search(iter(["blue jacket"]), top_k=1)["item_id"]) == ["blue"]


@pytest.mark.parametrize("query", ["", "   "])
def test_an_empty_query_is_still_a_value_error(make_retriever, query):
    with pytest.raises(ValueError, match="empty text query"):
        make_retriever().search_by_text(query)
    with pytest.raises(ValueError, match="empty text query 1"):
        make_retriever().batch_search(["red", query])
    with pytest.raises(ValueError, match="holds no query"):
        make_retriever().batch_search([])


@pytest.mark.parametrize("top_k", [True, 2.5, 0, -1, "3"])
def test_the_retriever_refuses_a_bad_top_k(make_retriever, top_k):
    retriever = make_retriever()
    with pytest.raises(ValueError, match=rf"top_k must be a positive integer, got {top_k!r}"):
        retriever.search_by_text("red shirt", top_k=top_k)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        retriever.search_by_image("red", top_k=top_k)


def test_top_k_larger_than_the_gallery_is_refused(make_retriever):
    with pytest.raises(ValueError, match=r"top_k=5 is larger than the gallery \(4 items\)"):
        make_retriever().search_by_text("red", top_k=5)


@pytest.mark.parametrize("top_k", [True, 2.5])
def test_the_widgets_answer_a_bad_top_k_with_a_message(make_retriever, top_k):
    retriever = make_retriever()
    for page in (cw.run_text_query(retriever, "red", top_k=top_k), cw.run_image_query(retriever, "red", top_k=top_k)):
        assert "fc-error" in page and f"top_k must be a positive whole number, got {top_k!r}" in page


@pytest.mark.parametrize(("text", "given"), [(123, "int"), (["red"], "list")])
def test_the_text_widget_answers_a_non_string_with_a_message(make_retriever, text, given):
    page = cw.run_text_query(make_retriever(), text, top_k=2)
    assert "fc-error" in page and f"the query must be text such as 'red striped shirt', got {given}" in page
    assert "empty query" in cw.run_text_query(make_retriever(), None, top_k=2)  # a cleared box stays "empty"


def test_an_unknown_query_image_type_is_a_type_error(make_retriever):
    with pytest.raises(TypeError, match="expected an item id, a path or a PIL image, got int"):
        make_retriever().search_by_image(42)
