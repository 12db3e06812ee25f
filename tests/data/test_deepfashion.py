"""deepfashion-multimodal on a tiny dataset written here from the documented format (no real files copied)."""

import json

import pytest
from PIL import Image, ImageDraw

from course_utils.data import DatasetNotFound, LoadReport, load_catalogue
from course_utils.data.deepfashion import (
    LABEL_FILES,
    MISSING_ATTRIBUTE,
    SHAPE_COLUMNS,
    absent_label_file,
    load_deepfashion_multimodal,
    read_label_file,
)

DRESS_FRONT = "WOMEN-Dresses-id_00000002-01_1_front.jpg"
DRESS_SIDE = "WOMEN-Dresses-id_00000002-02_2_side.jpg"
JEANS = "MEN-Denim-id_00000080-01_7_additional.jpg"
UNCAPTIONED = "WOMEN-Tees_Tanks-id_00000007-01_4_full.jpg"
NO_IMAGE = "MEN-Pants-id_00000099-01_1_front.jpg"


@pytest.fixture
def deepfashion_root(tmp_path):
    """4 drawn images, 4 captions (one without image, one image without caption) and the three label files."""
    (tmp_path / "images").mkdir()
    for index, name in enumerate((DRESS_FRONT, DRESS_SIDE, JEANS, UNCAPTIONED)):
        image = Image.new("RGB", (20, 30), "white")
        ImageDraw.Draw(image).rectangle((4, 4 + index, 15, 25), fill=(40 * index, 80, 160))
        image.save(tmp_path / "images" / name)
    captions = {
        DRESS_FRONT: "The lady wears a long-sleeve cotton dress with a round neckline. ",
        DRESS_SIDE: "She wears a long dress.",
        JEANS: "This man wears denim trousers.",
        NO_IMAGE: "A man in grey pants.",
    }
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    (tmp_path / "labels" / "shape").mkdir(parents=True)
    (tmp_path / "labels" / "texture").mkdir()
    (tmp_path / "labels" / "shape" / "shape_anno_all.txt").write_text(
        f"{DRESS_FRONT} 3 3 0 0 2 0 1 0 1 2 2 1\n"
        f"{JEANS} 5 3 3 2 4 2 2 2 4 7 2 2\n"  # everything NA except lower length; neckline 7 is undocumented
        "broken-line 1 2\n"
    )
    (tmp_path / "labels" / "texture" / "fabric_ann.txt").write_text(f"{DRESS_FRONT} 1 0 7\n{JEANS} 7 0 7\n")
    (tmp_path / "labels" / "texture" / "pattern_ann.txt").write_text(f"{DRESS_FRONT} 3 3 7\n{JEANS} 7 3 7\n")
    return tmp_path


def test_items_captions_and_readable_attributes(deepfashion_root):
    catalogue = load_deepfashion_multimodal(deepfashion_root)
    assert catalogue.ids == [DRESS_FRONT, DRESS_SIDE, JEANS]
    assert catalogue.match_attributes == ("gender", "category")  # the same kind of product: no colour labels
    assert catalogue.subset([JEANS]).match_attributes == ("gender", "category")
    dress = catalogue.by_id(DRESS_FRONT)
    assert dress.captions == ("The lady wears a long-sleeve cotton dress with a round neckline.",)
    assert dress.caption_styles == ("description",)
    assert dict(dress.attributes) == {
        "gender": "women", "category": "Dresses",
        "sleeve_length": "long-sleeve", "lower_clothing_length": "long", "socks": "no", "hat": "no",
        "glasses": "sunglasses", "neckwear": "no", "wrist_wearing": "yes", "ring": "no", "waist_accessories": "belt",
        "neckline": "round", "upper_clothing_covering_navel": "yes",
        "upper_fabric": "cotton", "lower_fabric": "denim", "upper_pattern": "pure color", "lower_pattern": "pure color",
    }  # fmt: skip
    assert dict(catalogue.by_id(JEANS).attributes) == {
        "gender": "men", "category": "Denim", "lower_clothing_length": "long", "lower_fabric": "denim",
        "lower_pattern": "pure color",
    }  # fmt: skip
    assert dict(catalogue.by_id(DRESS_SIDE).attributes) == {"gender": "women", "category": "Dresses"}
    assert dress.image.size == (20, 30)


def test_report_counts_everything_left_out(deepfashion_root):
    report = load_deepfashion_multimodal(deepfashion_root).report
    assert report.rows_read == 4
    assert report.skipped == {
        "image file missing": 1,
        "malformed line in shape_anno_all.txt (expected a name and 12 integers)": 1,
    }
    assert report.unlisted == {"image without caption (not loaded)": 1}  # not a caption dropped: none names it
    assert str(report).splitlines()[0].endswith("; 1 file(s) in the folder listed nowhere")
    assert report.caveats == {  # the items load without these values
        "unknown label code in shape_anno_all.txt": 1,
        # dress: outer_clothing_cardigan, outer fabric, outer pattern; jeans: 10 shape + 2 fabric + 2 pattern
        MISSING_ATTRIBUTE: 17,
    }
    assert report.examples["image file missing"] == [NO_IMAGE]
    assert report.examples["unknown label code in shape_anno_all.txt"] == [f"{JEANS}:neckline=7"]


def test_neckline_codes_follow_the_revised_readme(tmp_path):
    """0 V-shape ... 6 NA, with no gap at 3 (github.com/yumingj/DeepFashion-MultiModal/issues/5); every other
    shape column is NA on these lines."""
    path = tmp_path / "shape_anno_all.txt"
    path.write_text("".join(f"n{code}.jpg 5 4 3 2 4 2 2 2 4 {code} 2 2\n" for code in range(8)))
    report = LoadReport("deepfashion-multimodal")
    labels = read_label_file(path, SHAPE_COLUMNS, report)
    assert {name: values.get("neckline") for name, values in labels.items()} == {
        "n0.jpg": "V-shape", "n1.jpg": "square", "n2.jpg": "round", "n3.jpg": "standing", "n4.jpg": "lapel",
        "n5.jpg": "suspenders", "n6.jpg": None, "n7.jpg": None,
    }  # fmt: skip
    assert report.examples["unknown label code in shape_anno_all.txt"] == ["n7.jpg:neckline=7"]
    assert report.caveats[MISSING_ATTRIBUTE] == 8 * 11 + 1  # 11 NA columns a line, and neckline 6


def test_photos_of_one_product_share_a_split(deepfashion_root):
    for seed in range(10):
        catalogue = load_deepfashion_multimodal(deepfashion_root, seed=seed)
        assert catalogue.by_id(DRESS_FRONT).split == catalogue.by_id(DRESS_SIDE).split


def test_labels_are_optional_and_corrupt_images_counted(deepfashion_root):
    for path in sorted((deepfashion_root / "labels").rglob("*.txt")):
        path.unlink()
    (deepfashion_root / "images" / JEANS).write_bytes(b"\x00garbage")
    catalogue = load_catalogue("deepfashion-multimodal", deepfashion_root, verify_images=True)
    assert catalogue.ids == [DRESS_FRONT, DRESS_SIDE]
    assert catalogue.report.skipped["image unreadable (corrupt or not an image)"] == 1
    assert dict(catalogue.by_id(DRESS_FRONT).attributes) == {"gender": "women", "category": "Dresses"}


def test_absent_label_files_are_reported_by_path(deepfashion_root):
    """The zip often unpacks to labels/labels/...: every item then loads without labels, and the report says why."""
    (deepfashion_root / "labels").rename(deepfashion_root / "nested")
    (deepfashion_root / "labels").mkdir()
    (deepfashion_root / "nested").rename(deepfashion_root / "labels" / "labels")
    catalogue = load_deepfashion_multimodal(deepfashion_root)
    assert dict(catalogue.by_id(DRESS_FRONT).attributes) == {"gender": "women", "category": "Dresses"}
    expected = {absent_label_file(deepfashion_root / relative_path): 1 for relative_path, _ in LABEL_FILES}
    assert catalogue.report.caveats == expected
    reason = absent_label_file(deepfashion_root / "labels/shape/shape_anno_all.txt")
    assert str(deepfashion_root / "labels/shape/shape_anno_all.txt") in reason and "labels/labels/" in reason
    assert reason in str(catalogue.report)


def test_missing_dataset_is_explained(tmp_path):
    with pytest.raises(DatasetNotFound, match="deepfashion-multimodal") as error:
        load_deepfashion_multimodal(tmp_path / "nowhere")
    assert "captions.json" in str(error.value) and "see README › Real data" in str(error.value)
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetNotFound, match="captions.json does not exist"):
        load_deepfashion_multimodal(tmp_path)


def test_a_folder_of_no_loadable_item_is_an_error_naming_what_to_fix(deepfashion_root):
    """An empty catalogue used to surface later as "unknown split 'test'; this catalogue has []"."""
    for path in (deepfashion_root / "images").iterdir():
        path.unlink()
    with pytest.raises(DatasetNotFound, match=r"images yields no item: all 4 entries of captions\.json were dropped"):
        load_deepfashion_multimodal(deepfashion_root)
    (deepfashion_root / "captions.json").write_text(json.dumps({DRESS_FRONT: " ", JEANS: 3}))
    with pytest.raises(ValueError, match=r"captions\.json yields no item: .*caption empty or not a string: 2") as err:
        load_deepfashion_multimodal(deepfashion_root)
    assert not isinstance(err.value, DatasetNotFound) and "unzip" not in str(err.value)
