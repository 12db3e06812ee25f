"""The record schema: Catalogue navigation, fingerprints, and counting unreadable images."""

import numpy as np
import pytest
from PIL import Image

from course_utils.data import ArrayImage, Catalogue, CorruptImage, FileImage, Item, LoadReport


def make_item(item_id, split="test", ref=None, **attributes):
    return Item(item_id, (f"caption {item_id}",), ("title",), attributes or {"colour": "red"}, split, ref)


def test_split_subset_and_lookup():
    catalogue = Catalogue("toy", [make_item("a", "train"), make_item("b"), make_item("c")])
    test = catalogue.split("test")
    assert test.ids == ["b", "c"]
    assert catalogue.subset(["c", "a"]).ids == ["c", "a"]
    assert catalogue.by_id("b").item_id == "b" and catalogue.position("c") == 2 and catalogue.has_id("a")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        catalogue.split("val")
    with pytest.raises(KeyError, match="no item with id 'z'"):
        catalogue.by_id("z")
    with pytest.raises(ValueError, match="duplicate item ids"):
        Catalogue("toy", [make_item("a"), make_item("a")])


def test_caption_by_style():
    item = Item("x", ("Title", "long text", "web one"), ("title", "description", "web"), {}, "test")
    assert item.caption() == "Title" and item.caption("description") == "long text"
    assert item.captions_of("web") == ["web one"]
    with pytest.raises(KeyError, match="no caption of style 'poem'"):
        item.caption("poem")


def test_fingerprint_changes_with_data():
    pixels = np.zeros((2, 4, 4, 3), np.uint8)
    a = Catalogue("toy", [make_item("a", ref=ArrayImage(pixels, 0)), make_item("b", ref=ArrayImage(pixels, 1))])
    before = a.fingerprint()
    assert Catalogue("toy", list(a)).fingerprint() == before
    assert Catalogue("toy", [make_item("a", colour="blue"), a[1]]).fingerprint() != before
    pixels[1, 0, 0, 0] = 1
    assert a.fingerprint() != before


def test_unreadable_images_are_dropped_and_counted(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (8, 8), "red").save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    items = [
        make_item("good", ref=FileImage(good)),
        make_item("bad", ref=FileImage(bad)),
        make_item("gone", ref=FileImage(tmp_path / "missing.jpg")),
    ]
    catalogue = Catalogue("toy", items, LoadReport("toy", rows_read=3))
    with pytest.raises(CorruptImage, match="bad.jpg"):
        items[1].image  # noqa: B018 - decoding raises
    kept = catalogue.drop_unreadable_images()
    assert kept.ids == ["good"]
    assert kept.report.skipped == {"image unreadable (corrupt or not an image)": 1, "image file missing": 1}
    assert kept.report.total_skipped == 2
    assert "skipped      1 — image file missing (e.g. gone)" in str(kept.report)


def test_loader_options_are_introspectable():
    from course_utils.data.registry import loader_accepts

    assert loader_accepts("fashion-product-small", "seed") and loader_accepts("synthetic", "seed")
    assert not loader_accepts("fashion200k", "seed")  # official splits
    with pytest.raises(ValueError, match="unknown dataset"):
        loader_accepts("nope", "seed")


def test_the_colour_attribute_is_the_one_that_names_a_colour():
    pixels = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    item = Item("a", ("t",), ("title",), {}, "test", ArrayImage(pixels, 0))
    assert Catalogue("p", [item], attribute_names=("articleType", "baseColour")).colour_attribute == "baseColour"
    assert Catalogue("s", [item], attribute_names=("category", "colour")).colour_attribute == "colour"
    assert Catalogue("d", [item], attribute_names=("gender", "category")).colour_attribute is None
