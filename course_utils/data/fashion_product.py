"""Loader for Kaggle's *Fashion Product Images (Small)* (Myntra catalogue): ``styles.csv`` + ``images/<id>.jpg``.

The real ``styles.csv`` is not clean CSV: 22 rows carry an unquoted comma in ``productDisplayName`` (11 or 12
fields), some fields are empty and the literal ``NA`` marks missing values. We parse it ourselves instead of
trusting ``pandas.read_csv`` defaults, repair what can be repaired and count everything else in the report.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..checks import is_whole_number
from .records import (
    IMAGE_MISSING,
    Catalogue,
    CompositionTriplet,
    DatasetLayout,
    FileImage,
    Item,
    LoadReport,
    no_item_loaded,
    utf8_lines,
)
from .registry import register_catalogue
from .splits import DEFAULT_SPLIT_FRACTIONS, assign_split, check_split_fractions
from .triplets import attribute_swap_triplets

DATASET = "fashion-product-small"
COLUMNS = (
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
)
ATTRIBUTES = ("gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage", "year")
MATCH_ATTRIBUTES = ("articleType", "baseColour")  # the same kind of product: same article type and colour
MISSING_VALUES = frozenset({"", "NA"})
MISSING_ATTRIBUTE = "attribute value missing (NA/empty)"
GENDER_POSSESSIVE = {"Men": "Men's", "Women": "Women's", "Boys": "Boys'", "Girls": "Girls'", "Unisex": "Unisex"}
#: The composed queries of this catalogue (the loader's test triplets and notebook 06's training triplets): swap the
#: colour ("replace Red with Blue") between products of the same article type and gender.
COLOUR_SWAP, COLOUR_SWAP_WITHIN = "baseColour", ("articleType", "gender")
LAYOUT = DatasetLayout(
    DATASET,
    "  <root>/styles.csv       (Kaggle header: " + ",".join(COLUMNS) + ")\n  <root>/images/<id>.jpg",
    "Get 'Fashion Product Images (Small)' from Kaggle (paramaggarwal/fashion-product-images-small) "
    "and unzip it into <root>",
)


def _split_line(text: str) -> tuple[list[str], bool]:
    """The fields of one line of styles.csv, and whether an unbalanced double quote had to be read as a plain character.

    Each line is split on its own: given the whole file, the csv reader takes a field that starts with a stray ``"``
    for a quoted field and swallows every following line into it, so the rows after it vanish uncounted (or, past
    131,072 characters, csv stops with an error). styles.csv has one product per line and never a line break inside
    a field, so a quote that does not close properly on its own line is damage: read as a plain character, the row
    keeps its fields (the caller counts it as repaired) and the rest of the file is untouched.
    """
    try:
        return next(csv.reader([text], strict=True), []), False
    except csv.Error:
        return next(csv.reader([text], quoting=csv.QUOTE_NONE), []), True


def _read_rows(csv_path: Path, report: LoadReport, limit: int | None) -> Iterator[tuple[list[str], bool]]:
    """Yield the raw fields of each data row (at most ``limit``) and whether :func:`_split_line` repaired a stray
    quote in it, counting the rows in ``report.rows_read``.

    A line that is not valid UTF-8 is skipped and counted (see :func:`utf8_lines`); a file with a header but no
    data row is an error, since an empty catalogue can only be a mistake. A line that csv cannot split even with
    its quotes read as plain characters (a field over csv's size limit, a bare carriage return) is an error naming
    the file and the line: it is not one row of fields, and the reader must look at it.
    """
    header = None
    for number, text in utf8_lines(csv_path, report):
        if header is not None and limit is not None and report.rows_read >= limit:
            return
        try:
            fields, quote_repaired = _split_line(text)
        except csv.Error as err:
            raise ValueError(
                f"{csv_path}, line {number}: {err}; each line of styles.csv must hold one product's {len(COLUMNS)} "
                "comma-separated fields: fix or delete that line"
            ) from None
        if header is None:
            header = fields
            if tuple(header) != COLUMNS:
                raise ValueError(f"{csv_path}: header {header} is not the Kaggle styles.csv header {list(COLUMNS)}")
            continue
        report.rows_read += 1
        yield fields, quote_repaired
    if header is None:
        raise ValueError(f"{csv_path} is empty; expected the Kaggle styles.csv header {list(COLUMNS)} and data rows")
    if report.rows_read == 0:
        skipped = f" ({report.total_skipped} lines skipped: {dict(report.skipped)})" if report.total_skipped else ""
        raise ValueError(f"{csv_path} has a header but no data rows{skipped}; check that it is the full styles.csv")


def _check_limit(limit: int | None) -> None:
    """``limit`` must be ``None`` (all rows) or a positive whole number: 0 or -5 rows can only be a mistake."""
    if limit is not None and not is_whole_number(limit, minimum=1):
        raise ValueError(f"limit must be a positive whole number of rows, or None for all rows; got {limit!r}")


def parse_row(fields: list[str], report: LoadReport, quote_repaired: bool = False) -> dict[str, str] | None:
    """Turn one row into ``column -> value``, repairing an unquoted comma in the title; ``None`` if unusable.

    Extra fields can only come from commas inside ``productDisplayName`` (the last column), so they are
    re-joined into it. A row so repaired, or whose stray quote was already read as a plain character
    (``quote_repaired``, see :func:`_split_line`), is counted once in ``report.rows_repaired``. Empty or ``NA``
    attribute values are dropped from the record (a caveat under :data:`MISSING_ATTRIBUTE`: the row loads); a row
    with too few fields, or without an id or a title, is skipped.
    """
    if len(fields) < len(COLUMNS):
        report.skip(f"malformed row (fewer than {len(COLUMNS)} fields)", fields[0] if fields else None)
        return None
    if quote_repaired or len(fields) > len(COLUMNS):
        report.rows_repaired += 1
    if len(fields) > len(COLUMNS):
        fields = fields[: len(COLUMNS) - 1] + [",".join(fields[len(COLUMNS) - 1 :])]
    record = {column: value.strip() for column, value in zip(COLUMNS, fields, strict=True)}
    if record["id"] in MISSING_VALUES:
        report.skip("id missing (NA/empty)", record["productDisplayName"])
        return None
    if record["productDisplayName"] in MISSING_VALUES:
        report.skip("productDisplayName missing (NA/empty)", record["id"])
        return None
    for column in ATTRIBUTES:
        if record[column] in MISSING_VALUES:
            report.caveat(MISSING_ATTRIBUTE, f"{record['id']}:{column}")
            del record[column]
    return record


def describe(attributes: Mapping[str, str]) -> str:
    """A one-sentence description generated from the attributes; ``""`` when there is nothing to say.

    E.g. "Men's navy blue shirts, casual wear for summer, from the Apparel / Topwear range."; missing attributes
    are left out of the sentence.
    """
    gender = attributes.get("gender", "")
    colour, article = attributes.get("baseColour", "").lower(), attributes.get("articleType", "").lower()
    usage, season = attributes.get("usage", "").lower(), attributes.get("season", "").lower()
    parts = [
        " ".join(filter(None, [GENDER_POSSESSIVE.get(gender, gender), colour, article])),
        " ".join(filter(None, [usage and f"{usage} wear", season and f"for {season}"])),
    ]
    product_range = " / ".join(attributes[key] for key in ("masterCategory", "subCategory") if key in attributes)
    if product_range:
        parts.append(f"from the {product_range} range")
    text = ", ".join(part for part in parts if part)
    return f"{text[0].upper()}{text[1:]}." if text else ""


def make_item(record: Mapping[str, str], image_path: Path, split: str) -> Item:
    """One :class:`Item`: the product title (style ``"title"``) plus the generated ``"description"``."""
    attributes = {key: record[key] for key in ATTRIBUTES if key in record}
    captions, styles = [record["productDisplayName"]], ["title"]
    description = describe(attributes)
    if description:
        captions.append(description)
        styles.append("description")
    return Item(record["id"], tuple(captions), tuple(styles), attributes, split, FileImage(image_path))


def colour_swap_triplets(items: list[Item], seed: int) -> list[CompositionTriplet]:
    """Test-split triplets "replace <colour> with <colour>" between items of the same article type and gender."""
    test_items = [item for item in items if item.split == "test"]
    return attribute_swap_triplets(test_items, attribute=COLOUR_SWAP, within=COLOUR_SWAP_WITHIN, seed=seed)


@register_catalogue(DATASET)
def load_fashion_product_small(
    root: str | Path,
    csv_name: str = "styles.csv",
    seed: int = 0,
    split_fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
    verify_images: bool = True,
    limit: int | None = None,
    triplets: bool = True,
) -> Catalogue:
    """Load *Fashion Product Images (Small)* from ``root`` (``styles.csv`` + ``images/<id>.jpg``).

    Args:
        root: the dataset folder.
        csv_name: the styles file inside ``root`` (e.g. ``"styles-original-full.csv"``).
        seed: seed of the hashed train/val/test split and of the triplet sampling.
        split_fractions: split name -> share (default train 0.7 / val 0.1 / test 0.2).
        verify_images: decode every image once and drop (and count) unreadable ones.
        limit: read at most this many data rows (for quick looks); a positive whole number or ``None``.
        triplets: build colour-swap composition triplets on the test split.

    Returns:
        A catalogue whose ``report`` counts rows read, rows repaired (unquoted comma or stray quote), every skipped
        row with its reason (malformed, no title, duplicate id, image missing or unreadable), as caveats missing
        attribute values and, reading every row (no ``limit``), as unlisted the images without a row.

    Raises:
        DatasetNotFound: ``root``, the styles file or ``images/`` does not exist or is the wrong kind (a folder for
            a file or the reverse), or no product loaded for want of images (e.g. ``images/`` is empty).
        ValueError: a bad ``limit``, or a styles file that is empty, not UTF-8 but UTF-16, has another header, no
            data rows, a line that is not a row of fields, or no row that loads (no title, no id, ...).
    """
    _check_limit(limit)
    root = Path(root).expanduser()
    csv_path, image_dir = root / csv_name, root / "images"
    LAYOUT.require(root, csv_path, image_dir)
    if csv_path.is_dir():
        raise LAYOUT.missing(csv_path, f"is a folder; {csv_name} must be the Kaggle styles file")
    if not image_dir.is_dir():
        raise LAYOUT.missing(image_dir, "is not a folder; it must be the folder of <id>.jpg images")
    check_split_fractions(split_fractions)
    report = LoadReport(DATASET)
    items: dict[str, Item] = {}
    listed: set[str] = set()  # every id a row names, loaded or not
    for fields, quote_repaired in _read_rows(csv_path, report, limit):
        if fields:  # a row dropped below still names its image: not an unlisted one
            listed.add(fields[0].strip())
        record = parse_row(fields, report, quote_repaired)
        if record is None:
            continue
        item_id = record["id"]
        image_path = image_dir / f"{item_id}.jpg"
        if item_id in items:
            report.skip("duplicate id (first row kept)", item_id)
        elif not image_path.is_file():
            report.skip(IMAGE_MISSING, item_id)
        else:
            items[item_id] = make_item(record, image_path, assign_split(item_id, seed, split_fractions))
    if limit is None:  # a quick look (limit) reads the first rows only: the other images are unlisted by design
        for path in sorted(image_dir.glob("*.jpg")):
            if path.stem not in listed:
                report.unlisted_file(f"image without a row in {csv_name} (not loaded)", path.name)
    catalogue = Catalogue(
        DATASET, list(items.values()), report, attribute_names=ATTRIBUTES, match_attributes=MATCH_ATTRIBUTES
    )
    if verify_images:
        catalogue = catalogue.drop_unreadable_images()
    if not catalogue:
        raise no_item_loaded(
            LAYOUT,
            report,
            csv_path,
            image_dir,
            image_rule=f"each product's image must be {image_dir}/<id>.jpg, so unzip the Kaggle images/ folder there",
            listing_rule="check that it is the Kaggle styles.csv",
        )
    if not triplets:
        return catalogue
    swaps = colour_swap_triplets(catalogue.items, seed)
    return Catalogue(DATASET, catalogue.items, report, swaps, ATTRIBUTES, MATCH_ATTRIBUTES)
