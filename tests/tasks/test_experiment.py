from __future__ import annotations

import numpy as np
import pytest

from course_utils.data import ArrayImage, Catalogue, Item
from course_utils.data.fashion_product import ATTRIBUTES, MATCH_ATTRIBUTES
from course_utils.data.synthetic import ATTRIBUTE_ORDER
from course_utils.tasks import Experiment, exercises_scope, names_value, stated_share


def experiment_on(name: str, attributes: tuple[str, ...], match: tuple[str, ...], test_items: int) -> Experiment:
    pixels = np.zeros((test_items + 2, 4, 4, 3), dtype=np.uint8)
    items = [
        Item(f"item-{i}", ("a caption",), ("title",), {}, "test" if i < test_items else "train", ArrayImage(pixels, i))
        for i in range(test_items + 2)
    ]
    catalogue = Catalogue(name, items, attribute_names=attributes, match_attributes=match)
    return Experiment(catalogue, None, catalogue.split("train"), catalogue.split("test"), None)


def test_the_exercises_scope_translates_the_drawings_attributes_into_a_real_catalogues():
    scope = exercises_scope(experiment_on("fashion-product-small", ATTRIBUTES, MATCH_ATTRIBUTES, 3))
    assert scope.startswith("**This run used fashion-product-small**")
    assert 'dataset="synthetic"' in scope
    assert all(f"`{name}`" in scope for name in ATTRIBUTES + ATTRIBUTE_ORDER)
    assert "share `articleType` and `baseColour`" in scope
    assert "its test split has 3 items" in scope


def test_the_exercises_scope_names_the_whole_test_split_when_test_size_kept_part_of_it():
    whole = experiment_on("fashion-product-small", ATTRIBUTES, MATCH_ATTRIBUTES, 5)
    cut = Experiment(whole.catalogue, None, whole.train, whole.test.subset(whole.test.ids[:3]), None)
    scope = exercises_scope(cut)
    assert "its test split has 5 items, so a gallery size or `test_size` above that" in scope
    assert "this run searched the first 3: `test_size`" in scope
    assert "searched the first" not in exercises_scope(whole)


def test_the_exercises_scope_on_the_drawings_only_names_their_attributes():
    scope = exercises_scope(experiment_on("synthetic", ATTRIBUTE_ORDER, ("category", "colour"), 5))
    assert "5 test items" in scope and "share `category` and `colour`" in scope
    assert "translate" not in scope and all(f"`{name}`" in scope for name in ATTRIBUTE_ORDER)


def test_the_exercises_scope_counts_what_the_notebook_searches():
    drawn = experiment_on("synthetic", ATTRIBUTE_ORDER, ("category", "colour"), 5)
    assert "(7 items, the whole catalogue;" in exercises_scope(drawn, searched="catalogue")
    real = exercises_scope(experiment_on("fashion-product-small", ATTRIBUTES, MATCH_ATTRIBUTES, 3), "catalogue")
    assert "the catalogue has 5 items." in real and "test split" not in real
    with pytest.raises(ValueError, match="searched='gallery'"):
        exercises_scope(drawn, searched="gallery")


def test_the_query_caption_style_names_the_first_caption_when_query_style_is_none():
    experiment = experiment_on("fashion-product-small", ATTRIBUTES, MATCH_ATTRIBUTES, 3)
    assert experiment.query_caption_style == "title"  # the items' first caption
    drawn = experiment_on("synthetic", ATTRIBUTE_ORDER, ("category", "colour"), 3)
    assert Experiment(drawn.catalogue, None, drawn.train, drawn.test, "description").query_caption_style == (
        "description"
    )


def test_a_query_names_a_value_only_as_a_whole_word_in_any_case():
    assert names_value("Nike Men Black T-shirt", "black") and names_value("Navy Blue Jeans", "Navy Blue")
    assert not names_value("Reebok Men Shoes", "Red") and not names_value("Nike Men Tshirt", 2012)
    pixels = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    items = [
        Item(f"i{i}", ("t",), ("title",), attributes, "test", ArrayImage(pixels, i))
        for i, attributes in enumerate([{"baseColour": "Black"}, {"baseColour": "Red"}, {}])
    ]
    queries = ["Puma Black Cap", "Reebok Shoes", "Bag"]  # the third item has no colour: not counted
    assert stated_share(items, queries, "baseColour") == 0.5
    assert stated_share(items, queries, "season") == 0.0
