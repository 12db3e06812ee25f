"""fashion-product-small: the real 5,000-row sample, the quirks of the full original CSV, and a tiny corrupt case."""

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from course_utils.data import DatasetNotFound, load_catalogue
from course_utils.data.fashion_product import MISSING_ATTRIBUTE, describe, load_fashion_product_small

HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"


def test_sample_loads_every_row(fashion_product_sample):
    catalogue = load_fashion_product_small(fashion_product_sample)
    report = catalogue.report
    assert (len(catalogue), report.rows_read, report.rows_repaired, report.total_skipped) == (5000, 5000, 0, 0)
    # Counts from PROVENANCE.md.
    assert Counter(item.attributes["masterCategory"] for item in catalogue) == {
        "Apparel": 2454, "Accessories": 1277, "Footwear": 992, "Personal Care": 265, "Free Items": 12,
    }  # fmt: skip
    assert Counter(item.attributes["gender"] for item in catalogue) == {
        "Men": 2432, "Women": 2183, "Unisex": 237, "Boys": 86, "Girls": 62,
    }  # fmt: skip
    assert len(catalogue.attribute_values("articleType")) == 109
    first = catalogue[0]
    assert first.item_id == "1855"
    assert first.caption("title") == "Inkfruit Mens Chain Reaction T-shirt"
    assert (
        first.caption("description") == "Men's grey tshirts, casual wear for summer, from the Apparel / Topwear range."
    )
    assert first.image_path == fashion_product_sample / "images" / "1855.jpg"
    splits = Counter(item.split for item in catalogue)
    assert sum(splits.values()) == 5000 and splits["train"] > splits["test"] > splits["val"] > 0
    assert catalogue.split("test").match_attributes == ("articleType", "baseColour")  # the same kind of product


def test_sample_triplets_swap_colour_within_article_and_gender(fashion_product_sample):
    catalogue = load_fashion_product_small(fashion_product_sample, verify_images=False)
    assert len(catalogue.triplets) > 500
    for triplet in catalogue.triplets:
        reference, target = catalogue.by_id(triplet.reference_id), catalogue.by_id(triplet.target_id)
        assert reference.split == target.split == "test"
        assert reference.attributes["articleType"] == target.attributes["articleType"]
        assert reference.attributes["gender"] == target.attributes["gender"]
        old, new = triplet.changed["baseColour"]
        assert (old, new) == (reference.attributes["baseColour"], target.attributes["baseColour"]) and old != new
        assert triplet.modification == f"replace {old} with {new}"
    assert load_fashion_product_small(fashion_product_sample, verify_images=False).triplets == catalogue.triplets


def test_full_original_csv_is_repaired_and_counted(fashion_product_sample):
    catalogue = load_fashion_product_small(
        fashion_product_sample, csv_name="styles-original-full.csv", verify_images=False, triplets=False
    )
    report = catalogue.report
    assert report.rows_read == 44_446
    assert report.rows_repaired == 22  # unquoted comma in productDisplayName (11 or 12 fields)
    assert report.skipped["productDisplayName missing (NA/empty)"] == 7
    # 311 usage=NA and 10 baseColour=NA (rows with a title) + 23 empty fields in 22 rows: the rows load.
    assert report.caveats == {MISSING_ATTRIBUTE: 344} and MISSING_ATTRIBUTE not in report.skipped
    assert report.total_skipped == 7 + 39_439 and report.total_caveats == 344
    assert str(report).startswith(
        "fashion-product-small: read 44446 rows, repaired 22, dropped 39446; 344 loaded with a caveat"
    )
    # Only the 5,000 sampled ids have an image: 44,446 - 7 untitled - 5,000.
    assert report.skipped["image file missing"] == 39_439
    assert len(catalogue) == 5000


def test_unreadable_image_and_quirky_rows(tmp_path):
    (tmp_path / "images").mkdir()
    for item_id, colour in (("1", "navy"), ("2", "red")):
        Image.new("RGB", (6, 8), colour).save(tmp_path / "images" / f"{item_id}.jpg")
    (tmp_path / "images" / "3.jpg").write_bytes(b"definitely not a jpeg")
    (tmp_path / "images" / "4.jpg").write_bytes(b"never read: its row has no title")
    (tmp_path / "styles.csv").write_text(
        HEADER
        + "1,Men,Personal Care,Fragrance,Perfume and Body Mist,Navy Blue,Spring,2017,NA,Boss Perfume, After Shave Set\n"
        + "2,Women,Apparel,Topwear,Shirts,Red,,2012,Casual,Red Shirt\n"
        + "3,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Garbage Image Shirt\n"
        + "4,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,NA\n"
        + "5,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,No Image Shirt\n"
        + "6,Men,Apparel\n"
    )
    catalogue = load_fashion_product_small(tmp_path)
    assert catalogue.ids == ["1", "2"]
    report = catalogue.report
    assert (report.rows_read, report.rows_repaired) == (6, 1)
    assert report.caveats == {MISSING_ATTRIBUTE: 2}
    assert report.skipped == {
        "productDisplayName missing (NA/empty)": 1,
        "image file missing": 1,
        "image unreadable (corrupt or not an image)": 1,
        "malformed row (fewer than 10 fields)": 1,
    }
    assert report.examples[MISSING_ATTRIBUTE] == ["1:usage", "2:season"]
    perfume = catalogue.by_id("1")
    assert perfume.caption("title") == "Boss Perfume, After Shave Set"
    assert "usage" not in perfume.attributes and perfume.attributes["baseColour"] == "Navy Blue"
    assert (
        perfume.caption("description")
        == "Men's navy blue perfume and body mist, for spring, from the Personal Care / Fragrance range."
    )
    assert (
        catalogue.by_id("2").caption("description")
        == "Women's red shirts, casual wear, from the Apparel / Topwear range."
    )


def test_describe_example():
    attributes = {"gender": "Men", "baseColour": "Navy Blue", "articleType": "Shirts", "usage": "Casual",
                  "season": "Summer", "masterCategory": "Apparel", "subCategory": "Topwear"}  # fmt: skip
    assert describe(attributes) == "Men's navy blue shirts, casual wear for summer, from the Apparel / Topwear range."
    assert describe({}) == ""


def test_missing_dataset_is_explained(tmp_path):
    with pytest.raises(DatasetNotFound) as error:
        load_fashion_product_small(tmp_path / "nowhere")
    message = str(error.value)
    assert "fashion-product-small" in message and "nowhere" in message
    assert "styles.csv" in message and "images/<id>.jpg" in message and "see README › Real data" in message
    (tmp_path / "styles.csv").write_text(HEADER)
    with pytest.raises(DatasetNotFound, match=str(Path(tmp_path / "images"))):
        load_fashion_product_small(tmp_path)


def test_bad_header_is_rejected(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "styles.csv").write_text("id;gender;title\n")
    with pytest.raises(ValueError, match="not the Kaggle styles.csv header"):
        load_fashion_product_small(tmp_path)


def test_registry_and_limit(fashion_product_sample):
    catalogue = load_catalogue("fashion-product-small", fashion_product_sample, limit=50, verify_images=False)
    assert catalogue.report.rows_read == len(catalogue) == 50
