"""fashioniq on the official annotation files in ../shared/data/fashioniq (no images there), and the split rule on
a tiny set of files written here."""

import json

import pytest
from PIL import Image

from course_utils.data import DatasetNotFound, load_catalogue
from course_utils.data.fashioniq import HELD_OUT_ELSEWHERE, IMAGE_MISSING, TRIPLET_HELD_OUT, load_fashioniq


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
    assert catalogue.report.caveats == {IMAGE_MISSING: 11_452 + 3_817}  # the items load, without image
    assert catalogue.report.skipped == {}  # nothing dropped
    assert catalogue.report.rows_read == 11_452 + 3_817 + 5_985 + 2_017
    assert str(catalogue.report).startswith("fashioniq: read 23271 rows, repaired 0, dropped 0; 15269 loaded with")


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


def test_all_categories_keep_shared_asins_apart_but_out_of_train_when_held_out(fashioniq_sample):
    catalogue = load_catalogue("fashioniq", fashioniq_sample)
    # 811 ASINs are in one category's train split and another's val split: they leave train.
    assert len(catalogue) == 11_452 + 3_817 + 19_036 + 6_346 + 16_121 + 5_373 - 811
    assert catalogue.report.skipped[HELD_OUT_ELSEWHERE] == 811
    # 523 train triplets use one of them; every val triplet stays (471 of them use one).
    assert catalogue.report.skipped[TRIPLET_HELD_OUT] == 523
    assert len(catalogue.split("val").triplets) == 2_017 + 2_038 + 1_961
    assert len(catalogue.triplets) == 5_985 + 2_017 + 5_988 + 2_038 + 6_027 + 1_961 - 523
    asins = {split: {i.split("/")[1] for i in catalogue.split(split).ids} for split in ("train", "val")}
    assert asins["train"].isdisjoint(asins["val"])
    shared = {i.split("/")[1] for i in catalogue.ids if i.startswith("shirt/")} & {
        i.split("/")[1] for i in catalogue.ids if i.startswith("toptee/")
    }
    assert len(shared) > 1000  # ASINs listed under both shirt and toptee stay two items
    # 15 relative captions are empty strings; the 14 triplets still loaded keep the other caption (the 15th is in
    # a train triplet dropped above).
    assert catalogue.report.caveats["empty relative caption dropped (triplet kept with the other one)"] == 14


def test_images_are_found_as_jpg_or_png(fashioniq_sample, tmp_path):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "B003FGW7MK.jpg")
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "B008BHCT58.png")
    catalogue = load_fashioniq(fashioniq_sample, categories=("dress",), splits=("train",), image_root=tmp_path)
    assert catalogue.by_id("dress/B003FGW7MK").image_path == tmp_path / "B003FGW7MK.jpg"
    assert catalogue.by_id("dress/B008BHCT58").image.getpixel((0, 0)) == (0, 0, 255)
    assert catalogue.report.caveats[IMAGE_MISSING] == 11_452 - 2


def test_missing_dataset_is_explained(tmp_path, fashioniq_sample):
    with pytest.raises(DatasetNotFound, match="fashioniq") as error:
        load_fashioniq(tmp_path / "nowhere")
    assert "cap.<category>.<split>.json" in str(error.value) and "see README › Real data" in str(error.value)
    with pytest.raises(DatasetNotFound, match="split.dress.train.json"):
        load_fashioniq(tmp_path)
    with pytest.raises(DatasetNotFound, match="no-images-here"):
        load_fashioniq(fashioniq_sample, image_root=tmp_path / "no-images-here")
    with pytest.raises(ValueError, match=r"splits=\('dev',\) must be .* \('dev' is not one\)"):
        load_fashioniq(fashioniq_sample, splits=("dev",))


def test_a_plain_string_or_unknown_category_is_refused_by_name(tmp_path):
    with pytest.raises(
        ValueError, match=r"fashioniq: splits='val' must be a list of names from .*, not a plain string"
    ):
        load_fashioniq(tmp_path, splits="val")
    with pytest.raises(ValueError, match=r"fashioniq: categories='dress' must be a list of .*, not a plain string"):
        load_fashioniq(tmp_path, categories="dress")
    with pytest.raises(ValueError, match=r"fashioniq: categories=\('skirt',\) must be .*\('skirt' is not one\)"):
        load_fashioniq(tmp_path, categories=("skirt",))


def write_fashioniq(root, splits: dict, captions: dict):
    """``split.<category>.<split>.json`` from ``splits`` and ``cap.<category>.<split>.json`` from ``captions``
    (``(category, split) -> [(candidate, target), ...]``, each with two relative captions)."""
    (root / "image_splits").mkdir()
    (root / "captions").mkdir()
    for (category, split), asins in splits.items():
        (root / "image_splits" / f"split.{category}.{split}.json").write_text(json.dumps(asins))
        entries = [
            {"candidate": c, "target": t, "captions": ["is red", "is longer"]} for c, t in captions[category, split]
        ]
        (root / "captions" / f"cap.{category}.{split}.json").write_text(json.dumps(entries))


def test_an_asin_held_out_under_one_category_leaves_the_train_split_of_the_other(tmp_path):
    write_fashioniq(
        tmp_path,
        splits={
            ("dress", "train"): ["A1", "A2"],
            ("dress", "val"): ["A3", "A6"],
            ("shirt", "train"): ["A3", "A4", "A7"],  # A3 is a dress val image
            ("shirt", "val"): ["A5", "A8"],
        },
        captions={
            ("dress", "train"): [("A1", "A2")],
            ("dress", "val"): [("A3", "A6")],
            ("shirt", "train"): [("A3", "A4"), ("A4", "A7")],
            ("shirt", "val"): [("A5", "A8")],
        },
    )
    catalogue = load_fashioniq(tmp_path, categories=("dress", "shirt"))
    assert catalogue.split("train").ids == ["dress/A1", "dress/A2", "shirt/A4", "shirt/A7"]
    assert catalogue.split("val").ids == ["dress/A3", "dress/A6", "shirt/A5", "shirt/A8"]
    assert [(t.reference_id, t.target_id) for t in catalogue.triplets] == [
        ("dress/A1", "dress/A2"), ("dress/A3", "dress/A6"), ("shirt/A4", "shirt/A7"), ("shirt/A5", "shirt/A8"),
    ]  # fmt: skip
    assert catalogue.report.skipped == {HELD_OUT_ELSEWHERE: 1, TRIPLET_HELD_OUT: 1}
    assert catalogue.report.examples[HELD_OUT_ELSEWHERE] == ["shirt/A3"]
    assert catalogue.report.examples[TRIPLET_HELD_OUT] == ["shirt/A3 -> shirt/A4"]
    # Without a val split loaded nothing is held out: shirt/A3 trains.
    assert "shirt/A3" in load_fashioniq(tmp_path, categories=("dress", "shirt"), splits=("train",)).ids
