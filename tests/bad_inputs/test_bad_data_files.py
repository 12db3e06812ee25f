"""Issue 15, the loaders' unclear answers: a non-UTF-8 row is skipped and counted with its file named; a header-only
CSV, a bad ``limit`` and a truncated JSON file are errors naming the file or parameter. Also: the command line's
``--seed`` is applied or warned about, never silently ignored, and a catalogue the notebooks cannot run (FashionIQ)
is refused by name before any model loads."""

from __future__ import annotations

import argparse
import json
import re

import pytest
from PIL import Image

from course_utils.cli import add_data_and_model_arguments, catalogue_from_args
from course_utils.data import Catalogue, DatasetNotFound, Item, descriptors
from course_utils.data.deepfashion import load_deepfashion_multimodal
from course_utils.data.fashion200k import load_fashion200k
from course_utils.data.fashion_product import load_fashion_product_small
from course_utils.data.fashioniq import load_fashioniq
from course_utils.data.splits import assign_split
from course_utils.tasks.experiment import check_experiment_catalogue, load_experiment

HEADER = b"id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"
LATIN1_ROW = "2,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Caf\xe9 Top\n".encode("latin-1")


def styles_root(tmp_path, rows: list[bytes], header: bytes = HEADER):
    (tmp_path / "images").mkdir(exist_ok=True)
    for row in rows:
        item_id = row.split(b",")[0].decode("ascii", "replace")
        Image.new("RGB", (4, 4), "red").save(tmp_path / "images" / f"{item_id}.jpg")
    (tmp_path / "styles.csv").write_bytes(header + b"".join(rows))
    return tmp_path


def good_row(item_id: int) -> bytes:
    return f"{item_id},Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Blue Shirt {item_id}\n".encode()


# --- non-UTF-8 bytes ------------------------------------------------------------------------------------------------


def test_a_non_utf8_csv_row_is_skipped_and_counted_with_the_file_named(tmp_path):
    root = styles_root(tmp_path, [good_row(1), LATIN1_ROW, good_row(3)])
    catalogue = load_fashion_product_small(root, triplets=False)
    assert catalogue.ids == ["1", "3"]
    assert catalogue.report.skipped == {"line not valid UTF-8 in styles.csv (skipped)": 1}
    assert catalogue.report.examples["line not valid UTF-8 in styles.csv (skipped)"] == ["line 3"]  # header is line 1
    assert "line not valid UTF-8 in styles.csv" in str(catalogue.report)


def test_a_utf8_bom_and_real_accents_still_load(tmp_path):
    row = "2,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Café Top\n".encode()
    catalogue = load_fashion_product_small(
        styles_root(tmp_path, [row], header=b"\xef\xbb\xbf" + HEADER), triplets=False
    )
    assert catalogue[0].caption("title") == "Café Top" and catalogue.report.total_skipped == 0


def test_a_non_utf8_deepfashion_label_line_is_skipped_and_counted(tmp_path):
    name = "WOMEN-Dresses-id_00000002-01_1_front.jpg"
    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / name)
    (tmp_path / "captions.json").write_text(json.dumps({name: "A dress."}))
    (tmp_path / "labels" / "texture").mkdir(parents=True)
    (tmp_path / "labels" / "texture" / "fabric_ann.txt").write_bytes(
        b"caf\xe9.jpg 1 1 1\n" + f"{name} 1 0 7\n".encode()
    )
    catalogue = load_deepfashion_multimodal(tmp_path)
    assert catalogue.report.skipped["line not valid UTF-8 in fabric_ann.txt (skipped)"] == 1
    assert catalogue[0].attributes["upper_fabric"] == "cotton"  # the next line still loads


def test_non_utf8_fashion200k_lines_are_skipped_and_counted(tmp_path):
    good, other = "women/dresses/a/1/1_0.jpeg", "women/dresses/a/2/2_0.jpeg"
    for path in (good, other):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(tmp_path / path)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "dress_test_detect_all.txt").write_bytes(
        f"{good}\t0.9\tred dress\n".encode()
        + b"women/x.jpeg\t0.9\tcaf\xe9 dress\n"
        + f"{other}\t0.8\tblue dress\n".encode()
    )
    (tmp_path / "test_queries.txt").write_bytes(f"{good} {other}\n".encode() + b"\xff\xfe broken\n")
    catalogue = load_fashion200k(tmp_path, splits=("test",))
    assert catalogue.ids == [good, other] and len(catalogue.triplets) == 1
    assert catalogue.report.skipped["line not valid UTF-8 in dress_test_detect_all.txt (skipped)"] == 1
    assert catalogue.report.skipped["line not valid UTF-8 in test_queries.txt (skipped)"] == 1


# --- empty results that can only be mistakes -------------------------------------------------------------------------


def test_a_header_only_csv_is_an_error_naming_the_file(tmp_path):
    root = styles_root(tmp_path, [])
    with pytest.raises(ValueError, match=r"styles\.csv has a header but no data rows"):
        load_fashion_product_small(root)


def test_an_empty_csv_is_an_error_naming_the_file(tmp_path):
    root = styles_root(tmp_path, [], header=b"")
    with pytest.raises(ValueError, match=r"styles\.csv is empty; expected the Kaggle styles.csv header"):
        load_fashion_product_small(root)


def test_a_csv_whose_every_row_is_undecodable_is_an_error_not_an_empty_catalogue(tmp_path):
    with pytest.raises(ValueError, match=r"no data rows \(1 lines skipped: .*not valid UTF-8"):
        load_fashion_product_small(styles_root(tmp_path, [LATIN1_ROW]))


@pytest.mark.parametrize("limit", [-5, 0, 2.5, True, "10"])
def test_a_bad_limit_is_an_error(tmp_path, limit):
    root = styles_root(tmp_path, [good_row(1)])
    with pytest.raises(ValueError, match=rf"limit must be a positive whole number of rows, or None .*got {limit!r}"):
        load_fashion_product_small(root, limit=limit)


def test_a_good_limit_reads_that_many_rows(tmp_path):
    catalogue = load_fashion_product_small(
        styles_root(tmp_path, [good_row(i) for i in range(1, 5)]), limit=2, triplets=False
    )
    assert catalogue.ids == ["1", "2"] and catalogue.report.rows_read == 2


# --- damaged or misplaced styles.csv and images/ ---------------------------------------------------------------------


def titled_row(item_id: int, title: str) -> bytes:
    return f"{item_id},Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,{title}\n".encode()


@pytest.mark.parametrize("n_rows", [50, 5000])
def test_a_stray_quote_is_repaired_and_does_not_swallow_the_rows_after_it(tmp_path, n_rows):
    """csv read the stray quote as an open quoted field: 47 of 50 rows vanished, and 5,000 rows overflowed csv's
    field limit with an error naming no file."""
    rows = [good_row(i) for i in range(1, n_rows + 1)]
    rows[2], rows[5] = titled_row(3, '"Nike Blue Shirt'), titled_row(6, '"Nike, Blue Shirt')  # + an unquoted comma
    catalogue = load_fashion_product_small(styles_root(tmp_path, rows), verify_images=False, triplets=False)
    assert catalogue.ids == [str(i) for i in range(1, n_rows + 1)]
    assert (catalogue.report.rows_read, catalogue.report.rows_repaired, catalogue.report.total_skipped) == (
        n_rows, 2, 0,
    )  # fmt: skip
    assert catalogue.by_id("3").caption("title") == '"Nike Blue Shirt'
    assert catalogue.by_id("6").caption("title") == '"Nike, Blue Shirt'  # one repair, counted once
    assert catalogue.by_id("4").caption("title") == "Blue Shirt 4"


def test_a_stray_quote_in_a_short_row_drops_only_that_row(tmp_path):
    rows = [good_row(1), b'2,Men,"Apparel\n', good_row(3)]
    catalogue = load_fashion_product_small(styles_root(tmp_path, rows), triplets=False)
    assert catalogue.ids == ["1", "3"]
    assert catalogue.report.skipped == {"malformed row (fewer than 10 fields)": 1}


@pytest.mark.parametrize(
    ("line", "reason"),
    [(titled_row(2, "x" * 140_000), "field larger than field limit"), (b"2,Men\r,Apparel\n", "new-line character")],
    ids=["huge-field", "bare-carriage-return"],
)
def test_a_line_csv_cannot_split_is_an_error_naming_the_file_and_line(tmp_path, line, reason):
    root = styles_root(tmp_path, [good_row(1)])
    (root / "styles.csv").write_bytes(HEADER + good_row(1) + line)
    with pytest.raises(ValueError, match=rf"styles\.csv, line 3: {reason}.*: fix or delete that line"):
        load_fashion_product_small(root)


def test_a_styles_file_that_is_a_folder_is_explained(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "styles.csv").mkdir()
    with pytest.raises(DatasetNotFound, match=r"styles\.csv is a folder; styles\.csv must be the Kaggle styles file"):
        load_fashion_product_small(tmp_path)


def test_a_utf16_styles_file_is_refused_by_name(tmp_path):
    root = styles_root(tmp_path, [good_row(1)])
    (root / "styles.csv").write_text((HEADER + good_row(1)).decode(), encoding="utf-16")
    with pytest.raises(ValueError, match=r"styles\.csv is UTF-16 encoded .*it must be UTF-8: re-save it as UTF-8"):
        load_fashion_product_small(root)


@pytest.mark.parametrize("images", ["empty folder", "file"])
def test_an_empty_or_misplaced_images_folder_is_an_error_not_an_empty_catalogue(tmp_path, images):
    """It used to give an empty catalogue, which the course then reported as lacking a 'train' split."""
    (tmp_path / "styles.csv").write_bytes(HEADER + good_row(1) + good_row(2))
    if images == "file":
        (tmp_path / "images").write_bytes(b"")
        expected = r"images is not a folder; it must be the folder of <id>\.jpg images"
    else:
        (tmp_path / "images").mkdir()
        expected = (
            r"images yields no item: all 2 entries of styles\.csv were dropped \(image file missing: 2\); "
            r"each product's image must be .*images/<id>\.jpg, so unzip the Kaggle images/ folder there"
        )
    with pytest.raises(DatasetNotFound, match=expected):
        load_fashion_product_small(tmp_path)


def test_a_catalogue_whose_every_image_is_unreadable_is_an_error(tmp_path):
    root = styles_root(tmp_path, [good_row(1)])
    (root / "images" / "1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetNotFound, match=r"dropped \(image unreadable \(corrupt or not an image\): 1\)"):
        load_fashion_product_small(root)


def test_a_styles_file_whose_every_row_lacks_a_title_names_it_not_the_images(tmp_path):
    """The images are there: the advice to unzip them would point the wrong way."""
    root = styles_root(tmp_path, [b"1,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,NA\n"])
    with pytest.raises(
        ValueError, match=r"styles\.csv yields no item: .*productDisplayName missing.*Kaggle styles"
    ) as err:
        load_fashion_product_small(root)
    assert not isinstance(err.value, DatasetNotFound) and "unzip" not in str(err.value)


# --- truncated or malformed JSON ------------------------------------------------------------------------------------


def fashioniq_root(tmp_path, captions: bytes):
    (tmp_path / "captions").mkdir()
    (tmp_path / "image_splits").mkdir()
    (tmp_path / "image_splits" / "split.dress.val.json").write_text(json.dumps(["A1", "A2"]))
    (tmp_path / "captions" / "cap.dress.val.json").write_bytes(captions)
    return tmp_path


def test_a_truncated_fashioniq_json_is_an_error_naming_the_file(tmp_path):
    full = json.dumps([{"candidate": "A1", "target": "A2", "captions": ["is red", "has stripes"]}]).encode()
    root = fashioniq_root(tmp_path, full[: len(full) // 2])
    with pytest.raises(
        ValueError,
        match=r"cap\.dress\.val\.json: not valid JSON \(.* at line 1, column \d+\); the "
        r"file is probably truncated or corrupt",
    ):
        load_fashioniq(root, categories=("dress",), splits=("val",))


def test_a_non_utf8_fashioniq_json_is_an_error_naming_the_file(tmp_path):
    content = b'[{"candidate": "A1", "target": "A2", "captions": ["caf\xe9"]}]'
    root = fashioniq_root(tmp_path, content)
    offset = content.index(b"\xe9")
    with pytest.raises(ValueError, match=rf"cap\.dress\.val\.json: not valid UTF-8 \(bad byte at offset {offset}\)"):
        load_fashioniq(root, categories=("dress",), splits=("val",))


def test_a_fashioniq_entry_that_is_not_an_object_is_counted(tmp_path):
    entries = [{"candidate": "A1", "target": "A2", "captions": ["is red", ""]}, "stray string"]
    catalogue = load_fashioniq(
        fashioniq_root(tmp_path, json.dumps(entries).encode()), categories=("dress",), splits=("val",)
    )
    assert len(catalogue.triplets) == 1
    assert (
        catalogue.report.skipped["entry of cap.dress.val.json is not an object (expected candidate, target, captions)"]
        == 1
    )


def test_fashioniq_captions_that_are_not_a_list_and_asins_that_are_not_text_are_counted(tmp_path):
    entries = [
        {"candidate": "A1", "target": "A2", "captions": "is red"},  # would be read letter by letter
        {"candidate": "A1", "target": "A2", "captions": None},
        {"candidate": "A2", "target": "A1", "captions": ["is blue", "has a collar"]},
    ]
    root = fashioniq_root(tmp_path, json.dumps(entries).encode())
    (root / "image_splits" / "split.dress.val.json").write_text(json.dumps(["A1", {"asin": "A3"}, "A2", 7]))
    catalogue = load_fashioniq(root, categories=("dress",), splits=("val",))
    assert catalogue.ids == ["dress/A1", "dress/A2"]
    assert [t.modification for t in catalogue.triplets] == ["is blue and has a collar"]
    assert catalogue.report.skipped["entry of cap.dress.val.json whose captions are not a list of texts"] == 2
    assert catalogue.report.examples["entry of split.dress.val.json is not an ASIN (text)"] == ["#1", "#3"]


def test_a_truncated_deepfashion_captions_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "captions.json").write_text('{"a.jpg": "A dre')
    with pytest.raises(ValueError, match=r"captions\.json: not valid JSON"):
        load_deepfashion_multimodal(tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [('{"criteria": {"colour": ["red", "bl', "not valid JSON"), ('["red", "blue"]', "expected a JSON object")],
)
def test_a_broken_descriptor_file_is_an_error_naming_it(tmp_path, content, message):
    path = tmp_path / "my_words.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"my_words\.json: {message}"):
        descriptors.load_descriptors("synthetic", path=path)


# --- options that would be silently ignored, catalogues that cannot run -------------------------------------------


def cli_args(catalogue: str, root, seed: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_and_model_arguments(parser)
    return parser.parse_args(["--catalogue", catalogue, "--root", str(root), "--seed", str(seed)])


def test_the_cli_seed_reaches_a_hashed_split(tmp_path):
    root = styles_root(tmp_path, [good_row(i) for i in range(1, 21)])
    catalogue = catalogue_from_args(cli_args("fashion-product-small", root, seed=5))
    assert [item.split for item in catalogue] == [assign_split(str(i), seed=5) for i in range(1, 21)]
    assert [item.split for item in catalogue] != [assign_split(str(i), seed=0) for i in range(1, 21)]


def test_a_cli_seed_for_official_splits_is_warned_about(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "dress_test_detect_all.txt").write_text("women/x/1.jpeg\t0.9\tred dress\n")
    (tmp_path / "women" / "x").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "women" / "x" / "1.jpeg")
    with pytest.warns(UserWarning, match="--seed 3 is ignored: fashion200k has official splits"):
        catalogue_from_args(cli_args("fashion200k", tmp_path, seed=3))


def test_a_catalogue_without_test_split_or_captions_is_refused_before_any_model(tmp_path):
    items = [Item(f"dress/A{i}", (), (), {"category": "dress"}, split) for i, split in enumerate(("train", "val"))]
    with pytest.raises(ValueError) as error:
        check_experiment_catalogue(Catalogue("fashioniq", items))
    assert str(error.value).startswith(
        "fashioniq cannot run in the course's notebooks: it lacks a 'test' split (it has ['train', 'val']) and "
        "captions (2 of its 2 items have none). Use a dataset whose items have captions and a test split"
    )
    captioned = [Item(f"t{i}", ("a shirt",), ("title",), {}, split) for i, split in enumerate(("train", "test"))]
    check_experiment_catalogue(Catalogue("fine", captioned))  # no error


def test_a_data_folder_given_with_the_synthetic_catalogue_is_refused_not_ignored(tmp_path):
    with pytest.raises(
        ValueError, match=r"a data folder \(.*\) was given with dataset 'synthetic'.*fashion-product-small"
    ):
        catalogue_from_args(cli_args("synthetic", tmp_path, seed=0))
    with pytest.raises(ValueError, match="was given with dataset 'synthetic'"):
        load_experiment("synthetic", str(tmp_path))


def test_bad_cli_sizes_name_the_option(tmp_path):
    parser = argparse.ArgumentParser()
    add_data_and_model_arguments(parser)
    with pytest.raises(ValueError, match=r"--size '\{\"test\": 20' is not valid JSON \(.*\); give \"ci\", \"full\""):
        catalogue_from_args(parser.parse_args(["--size", '{"test": 20']))
    root = styles_root(tmp_path, [good_row(i) for i in range(1, 4)])
    with pytest.raises(ValueError, match="--size applies to --catalogue synthetic only; fashion-product-small is read"):
        catalogue_from_args(
            parser.parse_args(["--catalogue", "fashion-product-small", "--root", str(root), "--size", "ci"])
        )


@pytest.mark.parametrize("test_size", [0, -5, True, 2.5, "100"])
def test_a_test_size_that_is_not_a_whole_number_of_items_is_refused(test_size):
    with pytest.raises(ValueError, match=rf"test_size must be a whole number >= 1 .*got {re.escape(repr(test_size))}"):
        load_experiment("synthetic", test_size=test_size)


@pytest.mark.parametrize("train_size", [0, -100, 2.5])
def test_a_train_size_that_is_not_a_whole_number_of_items_is_refused(train_size):
    """Notebook 06 ran with train_size=-100 and kept all but the last 100 train items, without a word."""
    with pytest.raises(
        ValueError, match=rf"train_size must be a whole number >= 1 .*got {re.escape(repr(train_size))}"
    ):
        load_experiment("synthetic", train_size=train_size)


def test_a_train_size_keeps_the_first_train_items_and_leaves_the_test_split(monkeypatch):
    import course_utils.tasks.experiment as experiment_module

    monkeypatch.setattr(experiment_module, "pretrained_tiny_clip", lambda *a, **k: None)  # the splits only
    whole, cut = load_experiment("synthetic"), load_experiment("synthetic", train_size=40, test_size=30)
    assert cut.train.ids == whole.train.ids[:40] and cut.test.ids == whole.test.ids[:30]
    assert load_experiment("synthetic", train_size=10**6).train.ids == whole.train.ids  # larger: the whole split


def test_fashioniq_through_the_experiment_fails_early_and_by_name(fashioniq_sample):
    with pytest.raises(ValueError, match=r"fashioniq cannot run in the course's notebooks: it lacks a 'test' split"):
        load_experiment("fashioniq", str(fashioniq_sample))


def test_images_without_a_row_are_counted_apart_from_the_rows_dropped(tmp_path):
    """An image no row names was not loaded without a word (a styles.csv of another version, or a subset)."""
    root = styles_root(
        tmp_path, [good_row(1), good_row(2), b"3,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,NA\n"]
    )
    for extra in (7, 8):
        Image.new("RGB", (4, 4), "red").save(root / "images" / f"{extra}.jpg")
    report = load_fashion_product_small(root).report
    reason = "image without a row in styles.csv (not loaded)"
    assert report.unlisted == {reason: 2} and report.examples[reason] == ["7.jpg", "8.jpg"]
    assert report.skipped == {"productDisplayName missing (NA/empty)": 1}  # its image 3.jpg is not unlisted too
    assert str(report).splitlines()[0] == (
        "fashion-product-small: read 3 rows, repaired 0, dropped 1; 2 file(s) in the folder listed nowhere"
    )
    assert load_fashion_product_small(root, limit=2).report.unlisted == {}  # a quick look leaves the rest by design


def test_a_blank_line_in_styles_csv_is_counted_as_a_malformed_row(tmp_path):
    root = styles_root(tmp_path, [good_row(1), b"\n", good_row(2)])
    catalogue = load_fashion_product_small(root, triplets=False)
    assert catalogue.ids == ["1", "2"] and catalogue.report.skipped == {"malformed row (fewer than 10 fields)": 1}
