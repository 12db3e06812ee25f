from __future__ import annotations

import numpy as np

from course_utils.data import ArrayImage, Catalogue, Item
from course_utils.data.fashion_product import ATTRIBUTES, MATCH_ATTRIBUTES
from course_utils.data.synthetic import ATTRIBUTE_ORDER
from course_utils.tasks import Experiment, exercises_scope


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


def test_the_exercises_scope_on_the_drawings_only_names_their_attributes():
    scope = exercises_scope(experiment_on("synthetic", ATTRIBUTE_ORDER, ("category", "colour"), 5))
    assert "5 test items" in scope and "share `category` and `colour`" in scope
    assert "translate" not in scope and all(f"`{name}`" in scope for name in ATTRIBUTE_ORDER)
