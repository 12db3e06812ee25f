"""Loader for *DeepFashion-MultiModal* (Text2Human, 2022): full-body photos with a textual description each.

Layout: ``images/<name>.jpg``, ``captions.json`` (image name -> description) and, optionally, the shape,
fabric and pattern labels under ``labels/``. Label codes become readable values using the value lists of
the official README (github.com/yumingj/DeepFashion-MultiModal); ``NA`` ("part not visible") becomes a
missing attribute and codes outside those lists are counted, never guessed. An absent label file is reported by
path: its attributes are missing from every item.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from .records import (
    IMAGE_MISSING,
    Catalogue,
    DatasetLayout,
    FileImage,
    Item,
    LoadReport,
    no_item_loaded,
    read_json,
    utf8_lines,
)
from .registry import register_catalogue
from .splits import DEFAULT_SPLIT_FRACTIONS, assign_split, check_split_fractions

DATASET = "deepfashion-multimodal"
LabelColumns = tuple[tuple[str, Mapping[int, str]], ...]

SHAPE_COLUMNS: LabelColumns = (
    (
        "sleeve_length",
        {0: "sleeveless", 1: "short-sleeve", 2: "medium-sleeve", 3: "long-sleeve", 4: "not long-sleeve", 5: "NA"},
    ),
    ("lower_clothing_length", {0: "three-point", 1: "medium short", 2: "three-quarter", 3: "long", 4: "NA"}),
    ("socks", {0: "no", 1: "socks", 2: "leggings", 3: "NA"}),
    ("hat", {0: "no", 1: "yes", 2: "NA"}),
    ("glasses", {0: "no", 1: "eyeglasses", 2: "sunglasses", 3: "glasses in hand or on clothes", 4: "NA"}),
    ("neckwear", {0: "no", 1: "yes", 2: "NA"}),
    ("wrist_wearing", {0: "no", 1: "yes", 2: "NA"}),
    ("ring", {0: "no", 1: "yes", 2: "NA"}),
    ("waist_accessories", {0: "no", 1: "belt", 2: "clothing", 3: "hidden", 4: "NA"}),
    # The revised README's codes. The first README skipped 3 (round, then 4 standing, ..., 7 NA), a typo: the files
    # use 0-6 (github.com/yumingj/DeepFashion-MultiModal/issues/5, README revised by the maintainer in January 2023).
    ("neckline", {0: "V-shape", 1: "square", 2: "round", 3: "standing", 4: "lapel", 5: "suspenders", 6: "NA"}),
    ("outer_clothing_cardigan", {0: "yes", 1: "no", 2: "NA"}),
    ("upper_clothing_covering_navel", {0: "no", 1: "yes", 2: "NA"}),
)
FABRIC = {0: "denim", 1: "cotton", 2: "leather", 3: "furry", 4: "knitted", 5: "chiffon", 6: "other", 7: "NA"}
PATTERN = {
    0: "floral",
    1: "graphic",
    2: "striped",
    3: "pure color",
    4: "lattice",
    5: "other",
    6: "color block",
    7: "NA",
}
GARMENTS = ("upper", "lower", "outer")
LABEL_FILES: tuple[tuple[str, LabelColumns], ...] = (
    ("labels/shape/shape_anno_all.txt", SHAPE_COLUMNS),
    ("labels/texture/fabric_ann.txt", tuple((f"{garment}_fabric", FABRIC) for garment in GARMENTS)),
    ("labels/texture/pattern_ann.txt", tuple((f"{garment}_pattern", PATTERN) for garment in GARMENTS)),
)
# DeepFashion image names: <GENDER>-<category>-id_<product>-<pose number>_<view>.jpg
NAME_PATTERN = re.compile(r"^(?P<product>(?P<gender>MEN|WOMEN)-(?P<category>[^-]+)-id_\d+)-")
MISSING_ATTRIBUTE = "attribute value NA (part not visible)"
# The same kind of product: same gender and shop category (every image name carries both; colour is not labelled).
MATCH_ATTRIBUTES = ("gender", "category")
LAYOUT = DatasetLayout(
    DATASET,
    "  <root>/images/<name>.jpg\n"
    "  <root>/captions.json                       (image name -> description)\n"
    "  <root>/labels/shape/shape_anno_all.txt     (optional)\n"
    "  <root>/labels/texture/fabric_ann.txt       (optional)\n"
    "  <root>/labels/texture/pattern_ann.txt      (optional)",
    "Download the images, captions.json and labels from github.com/yumingj/DeepFashion-MultiModal into <root>",
)


def absent_label_file(path: Path) -> str:
    """The report reason for an absent label file: its path, and the usual cause (a zip unpacked one level deep)."""
    return (
        f"optional label file absent: {path} (items load without its attributes; if the zip unpacked into a "
        "nested folder such as labels/labels/, move its contents up to <root>/labels/)"
    )


def read_label_file(path: Path, columns: LabelColumns, report: LoadReport) -> dict[str, dict[str, str]]:
    """Parse ``<image name> <code> ...`` lines into image name -> attribute -> readable value.

    A missing file yields no labels (the labels are optional) and one caveat naming it (:func:`absent_label_file`).
    Malformed and non-UTF-8 lines are counted as skipped; unknown codes and ``NA`` values as caveats (the item
    loads without that attribute).
    """
    labels: dict[str, dict[str, str]] = {}
    if not path.is_file():
        report.caveat(absent_label_file(path))
        return labels
    for line_number, line in utf8_lines(path, report):
        fields = line.split()
        if not fields:
            continue
        try:
            codes = [int(field) for field in fields[1:]]
        except ValueError:
            codes = []
        if len(codes) != len(columns):
            report.skip(
                f"malformed line in {path.name} (expected a name and {len(columns)} integers)", f"line {line_number}"
            )
            continue
        name, values = fields[0], {}
        for (attribute, names), code in zip(columns, codes, strict=True):
            value = names.get(code)
            if value is None:
                report.caveat(f"unknown label code in {path.name}", f"{name}:{attribute}={code}")
            elif value == "NA":
                report.caveat(MISSING_ATTRIBUTE, f"{name}:{attribute}")
            else:
                values[attribute] = value
        labels.setdefault(name, {}).update(values)
    return labels


def read_captions(captions_path: Path) -> dict[str, object]:
    """The ``captions.json`` object (image name -> description); ``ValueError`` naming the file for bad JSON."""
    captions = read_json(captions_path)
    if not isinstance(captions, dict):
        raise ValueError(f"{captions_path}: expected a JSON object mapping image names to descriptions")
    return captions


def name_attributes(name: str) -> tuple[str, dict[str, str]]:
    """``(product key, {gender, category})`` parsed from a DeepFashion image name; the name itself if it differs.

    All photos of one product share the product key, so they land in the same split.
    """
    match = NAME_PATTERN.match(name)
    if match is None:
        return name, {}
    return match["product"], {"gender": match["gender"].lower(), "category": match["category"]}


@register_catalogue(DATASET)
def load_deepfashion_multimodal(
    root: str | Path,
    seed: int = 0,
    split_fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
    verify_images: bool = False,
) -> Catalogue:
    """Load DeepFashion-MultiModal: one item per captioned image, with shape/fabric/pattern attributes.

    Args:
        root: the dataset folder (``images/``, ``captions.json``, optional ``labels/``).
        seed: seed of the hashed train/val/test split (all photos of one product share a split).
        split_fractions: split name -> share (default train 0.7 / val 0.1 / test 0.2).
        verify_images: decode every image once and drop (and count) unreadable ones; off by default
            because decoding 44k full-size photos takes minutes.

    Returns:
        A catalogue of items (id = image name, caption style ``"description"``); the report counts as skipped
        captions without image and malformed label lines, as caveats absent label files, unknown codes and NA
        values, and as unlisted the images without caption.

    Raises:
        DatasetNotFound: ``root``, ``images/`` or ``captions.json`` does not exist, or no item loaded for want of
            images (e.g. ``images/`` is empty).
        ValueError: ``captions.json`` is not a JSON object, or none of its captions loads.
    """
    root = Path(root).expanduser()
    image_dir, captions_path = root / "images", root / "captions.json"
    LAYOUT.require(root, image_dir, captions_path)
    check_split_fractions(split_fractions)
    report = LoadReport(DATASET)
    labels: dict[str, dict[str, str]] = {}
    for relative_path, columns in LABEL_FILES:
        for name, values in read_label_file(root / relative_path, columns, report).items():
            labels.setdefault(name, {}).update(values)
    captions = read_captions(captions_path)
    items = []
    for name, text in captions.items():
        report.rows_read += 1
        if not isinstance(text, str) or not text.strip():
            report.skip("caption empty or not a string", name)
        elif not (image_dir / name).is_file():
            report.skip(IMAGE_MISSING, name)
        else:
            product, attributes = name_attributes(name)
            split = assign_split(product, seed, split_fractions)
            attributes.update(labels.get(name, {}))
            items.append(Item(name, (text.strip(),), ("description",), attributes, split, FileImage(image_dir / name)))
    for path in sorted(image_dir.iterdir()):
        if path.is_file() and path.name not in captions:
            report.unlisted_file("image without caption (not loaded)", path.name)
    catalogue = Catalogue(DATASET, items, report, match_attributes=MATCH_ATTRIBUTES)
    if verify_images:
        catalogue = catalogue.drop_unreadable_images()
    if not catalogue:
        raise no_item_loaded(
            LAYOUT,
            report,
            captions_path,
            image_dir,
            image_rule=f"each image must be {image_dir}/<name> under the name captions.json gives it, so unzip "
            "the dataset's images there",
            listing_rule="check that it is the dataset's captions.json (image name -> description)",
        )
    return catalogue
