"""fashioniq on the official annotation files in ../shared/data/fashioniq (no images there)."""

import json

import pytest
from PIL import Image

from course_utils.data import DatasetNotFound, load_catalogue
from course_utils.data.fashioniq import IMAGE_MISSING, load_fashioniq


def test_dress_counts_match_provenance(fashioniq_sample):
    catalogue = load_fashioniq(fashioniq_sample, categories=("dress",))
    assert len(catalogue.split("train")) == 11_452 and len(catalogue.split("val")) == 3_817
    assert len(catalogue.split("train").triplets) == 5_985 and len(catalogue.split("val").triplets) == 2_017
    assert all(triplet.style == "fashioniq" and triplet.changed == {} for triplet in catalogue.triplets)
    assert catalogue.attribute_values("category") == ["dress"] and catalogue.match_attributes == ("category",)
    first = catalogue.triplets[0]  # the first entry of cap.dress.train.json
    assert (first.reference_id, first.target_id) == ("dress/B003FGW7MK", "dress/B008BHCT58")
    assert first.modification == "is solid black with no sleeves and is black with straps"


def test_no_images_means_items_without_image_and_one_reason(fashioniq_sample):
    catalogue = load_fashioniq(fashioniq_sample, categories=("dress",))
    assert all(item.image_ref is None and item.captions == () for item in catalogue)
    assert catalogue.report.skipped == {IMAGE_MISSING: 11_452 + 3_817}
    assert catalogue.report.rows_read == 11_452 + 3_817 + 5_985 + 2_017


def test_leading_spaces_are_stripped(fashioniq_sample):
    entries = json.loads((fashioniq_sample / "captions" / "cap.dress.train.json").read_text())
    padded = [entry for entry in entries if any(text != text.strip() for text in entry["captions"])]
    assert len(padded) > 500  # PROVENANCE: 516 captions with a leading space in dress-train
    loaded = {
        (t.reference_id, t.target_id, t.modification)
        for t in load_fashioniq(fashioniq_sample, categories=("dress",), splits=("train",)).triplets
    }
    for entry in padded:
        expected = " and ".join(text.strip() for text in entry["captions"])
        assert (f"dress/{entry['candidate']}", f"dress/{entry['target']}", expected) in loaded
    assert any(m == "red and red and longer mermaid skirted" for _, _, m in loaded)  # raw: " red", " red and ..."


def test_test_split_has_no_targets(fashioniq_sample):
    catalogue = load_fashioniq(fashioniq_sample, categories=("dress",), splits=("test",))
    assert len(catalogue) == 3_818 and catalogue.triplets == []
    assert catalogue.report.skipped["test triplet without target (official test labels withheld)"] == 2_024


def test_all_categories_keep_shared_asins_apart(fashioniq_sample):
    catalogue = load_catalogue("fashioniq", fashioniq_sample)
    assert len(catalogue) == 11_452 + 3_817 + 19_036 + 6_346 + 16_121 + 5_373
    assert len(catalogue.triplets) == 5_985 + 2_017 + 5_988 + 2_038 + 6_027 + 1_961
    shared = {i.split("/")[1] for i in catalogue.ids if i.startswith("shirt/")} & {
        i.split("/")[1] for i in catalogue.ids if i.startswith("toptee/")
    }
    assert len(shared) > 1000  # ASINs listed under both shirt and toptee stay two items
    # 15 relative captions are empty strings; their triplets keep the other caption.
    assert catalogue.report.skipped["empty relative caption dropped (triplet kept with the other one)"] == 15


def test_images_are_found_as_jpg_or_png(fashioniq_sample, tmp_path):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "B003FGW7MK.jpg")
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "B008BHCT58.png")
    catalogue = load_fashioniq(fashioniq_sample, categories=("dress",), splits=("train",), image_root=tmp_path)
    assert catalogue.by_id("dress/B003FGW7MK").image_path == tmp_path / "B003FGW7MK.jpg"
    assert catalogue.by_id("dress/B008BHCT58").image.getpixel((0, 0)) == (0, 0, 255)
    assert catalogue.report.skipped[IMAGE_MISSING] == 11_452 - 2


def test_missing_dataset_is_explained(tmp_path, fashioniq_sample):
    with pytest.raises(DatasetNotFound, match="fashioniq") as error:
        load_fashioniq(tmp_path / "nowhere")
    assert "cap.<category>.<split>.json" in str(error.value) and "see README › Real data" in str(error.value)
    with pytest.raises(DatasetNotFound, match="split.dress.train.json"):
        load_fashioniq(tmp_path)
    with pytest.raises(DatasetNotFound, match="no-images-here"):
        load_fashioniq(fashioniq_sample, image_root=tmp_path / "no-images-here")
    with pytest.raises(ValueError, match="unknown split"):
        load_fashioniq(fashioniq_sample, splits=("dev",))
