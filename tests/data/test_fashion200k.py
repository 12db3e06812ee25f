"""fashion200k on a tiny dataset written here from the documented format (no real files copied)."""

import pytest
from PIL import Image

from course_utils.data import CompositionTriplet, DatasetNotFound, load_catalogue
from course_utils.data.fashion200k import QUERY_NOT_IN_TEST, different_words, load_fashion200k

SLEEVELESS = "women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg"
LONG_SLEEVE = "women/dresses/casual_and_day_dresses/51727805/51727805_0.jpeg"
LONG_SLEEVE_TWIN = "women/dresses/cocktail_dresses/51727806/51727806_1.jpeg"
RED_SKIRT = "women/skirts/mini_skirts/600/600_0.jpeg"
BLUE_SKIRT = "women/skirts/mini_skirts/601/601_0.jpeg"
TRAIN_DRESS = "women/dresses/maxi_dresses/100/100_0.jpeg"
NO_IMAGE = "women/dresses/maxi_dresses/101/101_0.jpeg"


@pytest.fixture
def fashion200k_root(tmp_path):
    """Label files for two categories and both splits, the images they list (one missing), and test queries."""
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "dress_train_detect_all.txt").write_text(
        f"{TRAIN_DRESS}\t0.95\tgreen maxi dress\n{NO_IMAGE}\t0.90\tyellow maxi dress\n"
    )
    (labels / "dress_test_detect_all.txt").write_text(
        f"{SLEEVELESS}\t0.8734\tblack and white sleeveless dress\n"
        f"{LONG_SLEEVE}\t0.9100\tblack and white long-sleeve dress\n"
        f"{LONG_SLEEVE_TWIN}\t0.7700\tblack and white long-sleeve dress\n"
        "a line without tabs\n"
    )
    (labels / "skirt_test_detect_all.txt").write_text(
        f"{RED_SKIRT}\t0.80\tred mini skirt\n{BLUE_SKIRT}\t0.81\tblue mini skirt\n{RED_SKIRT}\t0.80\tred mini skirt\n"
    )
    for path in (SLEEVELESS, LONG_SLEEVE, LONG_SLEEVE_TWIN, RED_SKIRT, BLUE_SKIRT, TRAIN_DRESS):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "black").save(tmp_path / path)
    (tmp_path / "test_queries.txt").write_text(
        f"{SLEEVELESS} {LONG_SLEEVE}\n"
        f"{RED_SKIRT} {BLUE_SKIRT}\n"
        f"{LONG_SLEEVE} {LONG_SLEEVE_TWIN}\n"  # identical captions: no word to replace
        f"{SLEEVELESS} women/dresses/gone/1/1_0.jpeg\n"
        "only-one-path\n"
    )
    return tmp_path


def test_items_splits_and_attributes(fashion200k_root):
    catalogue = load_fashion200k(fashion200k_root)
    assert catalogue.ids == [TRAIN_DRESS, SLEEVELESS, LONG_SLEEVE, LONG_SLEEVE_TWIN, RED_SKIRT, BLUE_SKIRT]
    assert [item.split for item in catalogue] == ["train"] + ["test"] * 5
    sleeveless = catalogue.by_id(SLEEVELESS)
    assert sleeveless.captions == ("black and white sleeveless dress",) and sleeveless.caption_styles == ("title",)
    assert dict(sleeveless.attributes) == {
        "category": "dress", "gender": "women", "subcategory": "casual_and_day_dresses",
        "words": "black and white sleeveless dress",
    }  # fmt: skip
    assert catalogue.by_id(RED_SKIRT).attributes["category"] == "skirt"
    assert catalogue.match_attributes == ("category", "subcategory")
    assert sleeveless.image_path == fashion200k_root / SLEEVELESS


def test_tirg_test_queries_become_triplets(fashion200k_root):
    catalogue = load_fashion200k(fashion200k_root)
    assert catalogue.triplets == [
        CompositionTriplet(SLEEVELESS, "replace sleeveless with long-sleeve", LONG_SLEEVE,
                           {"word": ("sleeveless", "long-sleeve")}, "fashion200k"),
        CompositionTriplet(RED_SKIRT, "replace red with blue", BLUE_SKIRT, {"word": ("red", "blue")}, "fashion200k"),
    ]  # fmt: skip
    # Hit convention: any image whose caption equals the target caption counts, e.g. the twin of LONG_SLEEVE.
    assert catalogue.by_id(LONG_SLEEVE_TWIN).captions == catalogue.by_id(LONG_SLEEVE).captions
    assert len(catalogue.split("test").triplets) == 2


def test_report_counts_everything_left_out(fashion200k_root):
    report = load_fashion200k(fashion200k_root).report
    assert report.rows_read == 9 + 5  # label lines + query lines
    assert report.skipped == {
        "image file missing": 1,
        "duplicate image path (first line kept)": 1,
        "malformed label line (expected path, score, caption)": 1,
        "malformed test query line (expected two image paths)": 1,
        "test query image not loaded (no label line, image missing or unreadable)": 1,
        "test query captions do not differ by a word": 1,
    }
    assert report.examples["image file missing"] == [NO_IMAGE]
    # skirt has a test label file but no train one: its absence is reported by path.
    absent = fashion200k_root / "labels" / "skirt_train_detect_all.txt"
    assert report.caveats == {f"label file absent: {absent} (no skirt items in the train split)": 1}


def test_split_choice_and_missing_queries(fashion200k_root):
    train = load_catalogue("fashion200k", fashion200k_root, splits=("train",))
    assert (train.ids, train.triplets, dict(train.report.skipped)) == ([TRAIN_DRESS], [], {"image file missing": 1})
    (fashion200k_root / "test_queries.txt").unlink()
    catalogue = load_fashion200k(fashion200k_root, splits=("test",))
    assert catalogue.triplets == []
    assert catalogue.report.caveats == {
        "test_queries.txt missing (no composition triplets; get it from github.com/google/tirg)": 1
    }
    with pytest.raises(ValueError, match=r"splits=\('val',\) must be .* \('val' is not one\)"):
        load_fashion200k(fashion200k_root, splits=("val",))
    with pytest.raises(
        ValueError, match=r"fashion200k: splits='test' must be a list of names from .*, not a plain string"
    ):
        load_fashion200k(fashion200k_root, splits="test")


def test_a_query_on_an_image_listed_in_both_splits_is_counted(tmp_path):
    """The path's train line comes first, so the image is a train item: its query has no test reference."""
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "dress_train_detect_all.txt").write_text(f"{SLEEVELESS}\t0.9\tblack sleeveless dress\n")
    (tmp_path / "labels" / "dress_test_detect_all.txt").write_text(
        f"{SLEEVELESS}\t0.9\tblack sleeveless dress\n{LONG_SLEEVE}\t0.9\tblack long-sleeve dress\n"
    )
    for path in (SLEEVELESS, LONG_SLEEVE):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "black").save(tmp_path / path)
    (tmp_path / "test_queries.txt").write_text(f"{SLEEVELESS} {LONG_SLEEVE}\n")
    catalogue = load_fashion200k(tmp_path)
    assert [(item.item_id, item.split) for item in catalogue] == [(SLEEVELESS, "train"), (LONG_SLEEVE, "test")]
    assert catalogue.triplets == []
    assert catalogue.report.skipped == {"duplicate image path (first line kept)": 1, QUERY_NOT_IN_TEST: 1}
    assert catalogue.report.examples[QUERY_NOT_IN_TEST] == [f"{SLEEVELESS} {LONG_SLEEVE}"]


def test_different_words():
    assert different_words("black and white sleeveless dress", "black and white long-sleeve dress") == (
        "sleeveless",
        "long-sleeve",
    )
    assert different_words("red mini skirt", "red mini skirt") is None


def test_missing_dataset_is_explained(tmp_path):
    with pytest.raises(DatasetNotFound, match="fashion200k") as error:
        load_fashion200k(tmp_path / "nowhere")
    assert "detect_all.txt" in str(error.value) and "see README › Real data" in str(error.value)
    (tmp_path / "labels").mkdir()
    with pytest.raises(DatasetNotFound, match="_detect_all.txt does not exist"):
        load_fashion200k(tmp_path)


def test_a_folder_of_no_loadable_item_is_an_error_naming_what_to_fix(fashion200k_root):
    """Without its image folders the loader used to return an empty catalogue, reported later as a missing split."""
    for path in sorted((fashion200k_root / "women").rglob("*.jpeg")):
        path.unlink()
    with pytest.raises(
        DatasetNotFound,
        match=r"yields no item: all 9 entries of labels were dropped \(image file missing: 8, malformed label line",
    ):
        load_fashion200k(fashion200k_root)
    for path in sorted((fashion200k_root / "labels").iterdir()):
        path.write_text("a line without tabs\n")
    with pytest.raises(ValueError, match=r"labels yields no item: .*malformed label line.*_detect_all\.txt") as err:
        load_fashion200k(fashion200k_root)
    assert not isinstance(err.value, DatasetNotFound) and "unzip" not in str(err.value)
