"""The record schema: Catalogue navigation, fingerprints, counting unreadable images, the load report's two kinds
of entry, the loaders' shared checks and the train/test title overlap."""

import numpy as np
import pytest
from PIL import Image

from course_utils.data import ArrayImage, Catalogue, CorruptImage, DatasetNotFound, FileImage, Item, LoadReport
from course_utils.data.records import CompositionTriplet, DatasetLayout, check_names, normalised_title


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
    with pytest.raises(ValueError, match=r"toy: 2 duplicate item id\(s\), e.g. \['a', 'c'\]"):
        Catalogue("toy", [make_item("a"), make_item("b"), make_item("a"), make_item("c"), make_item("c")])


def test_caption_by_style():
    item = Item("x", ("Title", "long text", "web one"), ("title", "description", "web"), {}, "test")
    assert item.caption() == "Title" and item.caption("description") == "long text"
    assert item.captions_of("web") == ["web one"]
    with pytest.raises(KeyError, match="no caption of style 'poem'"):
        item.caption("poem")


def test_an_item_without_captions_says_so_by_name():
    item = Item("dress/B00TEST", (), (), {"category": "dress"}, "val")
    with pytest.raises(KeyError, match="item dress/B00TEST has no captions"):
        item.caption()
    with pytest.raises(KeyError, match="item dress/B00TEST has no captions"):
        item.caption("title")


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
    assert "dropped      1 — image file missing (e.g. gone)" in str(kept.report)


def test_triplets_of_dropped_images_are_dropped_and_counted(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (8, 8), "red").save(good)
    items = [make_item(i, ref=FileImage(good)) for i in ("a", "b")] + [make_item("gone", ref=None)]
    triplets = [
        CompositionTriplet("a", "make it blue", "b"),
        CompositionTriplet("a", "make it green", "gone"),
        CompositionTriplet("gone", "make it red", "b"),
    ]
    catalogue = Catalogue("toy", items, LoadReport("toy", rows_read=3), triplets)
    kept = catalogue.drop_unreadable_images()
    assert kept.triplets == triplets[:1]
    assert kept.report.skipped["triplet whose reference or target image was dropped"] == 2
    assert kept.report.examples["triplet whose reference or target image was dropped"] == ["a -> gone", "gone -> b"]


def test_the_report_counts_what_was_dropped_apart_from_what_loaded_with_a_caveat():
    report = LoadReport("toy", rows_read=5)
    report.skip("malformed row", "row 4")
    report.caveat("image file missing (item kept)", "a")
    report.caveat("image file missing (item kept)", "b")
    report.caveat("attribute value missing")
    assert (report.total_skipped, report.total_caveats) == (1, 3)
    assert report.skipped == {"malformed row": 1}
    assert report.caveats == {"image file missing (item kept)": 2, "attribute value missing": 1}
    assert str(report).splitlines() == [
        "toy: read 5 rows, repaired 0, dropped 1; 3 loaded with a caveat",
        "  dropped      1 — malformed row (e.g. row 4)",
        "  caveat       1 — attribute value missing",
        "  caveat       2 — image file missing (item kept) (e.g. a, b)",
    ]
    assert str(LoadReport("clean", rows_read=2)) == "clean: read 2 rows, repaired 0, dropped 0"


def test_check_names_refuses_a_plain_string_an_empty_list_and_unknown_names():
    check_names("toy", "splits", ("train", "test"), ("train", "val", "test"))  # fine
    with pytest.raises(ValueError, match=r"^toy: splits='train' must be a list of names from 'train', 'test', not a "):
        check_names("toy", "splits", "train", ("train", "test"))
    with pytest.raises(ValueError, match=r"^toy: categories=\(\) must be a non-empty list of names from 'dress'$"):
        check_names("toy", "categories", (), ("dress",))
    with pytest.raises(ValueError, match=r"^toy: splits=\['train', 'dev'\] must be a list of .* \('dev' is not one\)$"):
        check_names("toy", "splits", ["train", "dev"], ("train", "test"))


def test_a_dataset_layout_names_the_first_missing_path(tmp_path):
    layout = DatasetLayout("toy", "  <root>/a.csv", "Get it from example.org")
    (tmp_path / "present").mkdir()
    layout.require(tmp_path, tmp_path / "present")  # fine
    with pytest.raises(DatasetNotFound) as error:
        layout.require(tmp_path, tmp_path / "first-gone", tmp_path / "second-gone")
    assert str(error.value) == (
        f"toy: {tmp_path / 'first-gone'} does not exist. Expected layout:\n  <root>/a.csv\n"
        "Get it from example.org; see README › Real data."
    )


def test_normalised_title_ignores_case_and_spacing():
    assert normalised_title("  Nike  Men Black\tT-SHIRT ") == "nike men black t-shirt"
    assert normalised_title("Red Dress") != normalised_title("Red Dresses")


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
