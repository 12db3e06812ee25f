"""Loader for *Fashion IQ* (Wu et al., CVPR 2021): composed retrieval with two crowd-written relative captions.

Layout (the official release): ``captions/cap.<category>.<split>.json``, ``image_splits/split.<category>.<split>.json``
and images ``<image_root>/<ASIN>.jpg`` (or ``.png``). The annotations are usable without the images, which are
hard to obtain (many Amazon links are dead): items whose image file is absent are kept with ``image_ref=None``
and counted once per item under one report reason.

Item ids are ``"<category>/<ASIN>"`` because 3,302 ASINs are listed under both ``shirt`` and ``toptee``; in one
split the two listings stay two items (FashionIQ scores each category against its own gallery). The categories
load into one catalogue, and its ``train`` split trains on all of them at once, so an ASIN held out (listed in a
loaded ``val`` or ``test`` split file) under one category is dropped from the ``train`` split of the others and
counted, with the training triplets that use it: no image is both trained on and evaluated. (The official files
put 811 ASINs in one category's train and another's val; 471 of the 6,016 val triplets use one of them.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .records import (
    Catalogue,
    CompositionTriplet,
    DatasetLayout,
    FileImage,
    Item,
    LoadReport,
    check_names,
    read_json,
)
from .registry import register_catalogue

DATASET = "fashioniq"
CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".png")
IMAGE_MISSING = "image file missing (item kept without image; FashionIQ annotations are usable alone)"
HELD_OUT_ELSEWHERE = "train listing dropped: its ASIN is also listed in a loaded val/test split (of another category)"
TRIPLET_HELD_OUT = "train triplet dropped: its reference or target ASIN is listed in a loaded val/test split"
LAYOUT = DatasetLayout(
    DATASET,
    "  <root>/captions/cap.<category>.<split>.json          (list of {candidate, target, captions})\n"
    "  <root>/image_splits/split.<category>.<split>.json    (list of ASINs)\n"
    "  <image_root>/<ASIN>.jpg or .png                      (optional; default <root>/images)",
    "Get captions/ and image_splits/ from github.com/XiaoxiaoGuo/fashion-iq (images via the asin2url lists "
    "of github.com/hongwang600/fashion-iq-metadata)",
)


def _read_json_list(path: Path) -> list:
    """A JSON file that must hold a list; :class:`DatasetNotFound` if absent, ``ValueError`` naming the file if it
    is truncated, not JSON or not a list."""
    if not path.is_file():
        raise LAYOUT.missing(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list, got {type(data).__name__}")
    return data


def image_index(image_root: Path) -> dict[str, Path]:
    """ASIN -> image path for every ``<ASIN>.jpg``/``.png`` in ``image_root`` (``.jpg`` wins); empty if absent."""
    if not image_root.is_dir():
        return {}
    index: dict[str, Path] = {}
    for name in sorted(os.listdir(image_root), key=lambda n: not n.endswith(IMAGE_SUFFIXES[0])):
        stem, suffix = os.path.splitext(name)
        if suffix in IMAGE_SUFFIXES:
            index.setdefault(stem, image_root / name)
    return index


def read_split_asins(root: Path, category: str, split: str) -> list:
    """The ASINs listed in ``image_splits/split.<category>.<split>.json``, in file order."""
    return _read_json_list(root / "image_splits" / f"split.{category}.{split}.json")


def split_items(
    category: str, split: str, asins: list, held_out: set[str], images: dict[str, Path], report: LoadReport
) -> list[Item]:
    """The items of one split file's ``asins``, with their image when one exists.

    In the ``train`` split, an ASIN in ``held_out`` (listed in a loaded val/test split of any category) is dropped
    and counted, so no image is both trained on and evaluated.
    """
    items, seen = [], set()
    for position, asin in enumerate(asins):
        report.rows_read += 1
        if not isinstance(asin, str):
            report.skip(f"entry of split.{category}.{split}.json is not an ASIN (text)", f"#{position}")
            continue
        item_id = f"{category}/{asin}"
        if asin in seen:
            report.skip("duplicate ASIN in a split file (first kept)", item_id)
            continue
        seen.add(asin)
        if split == "train" and str(asin) in held_out:
            report.skip(HELD_OUT_ELSEWHERE, item_id)
            continue
        image = images.get(asin)
        if image is None:
            report.caveat(IMAGE_MISSING, item_id)
        items.append(Item(item_id, (), (), {"category": category}, split, FileImage(image) if image else None))
    return items


def modification_text(captions: Sequence[str], report: LoadReport, example: str) -> str:
    """The two relative captions, stripped and joined with ``" and "``; an empty caption is dropped and counted."""
    texts = [text.strip() for text in captions if isinstance(text, str) and text.strip()]
    if len(texts) < len(captions):
        report.caveat("empty relative caption dropped (triplet kept with the other one)", example)
    return " and ".join(texts)


def read_triplets(
    root: Path, category: str, split: str, ids: set[str], held_out: set[str], report: LoadReport
) -> list[CompositionTriplet]:
    """Triplets of ``captions/cap.<category>.<split>.json`` between the items ``ids``; unusable entries are counted,
    never dropped silently. A train triplet whose reference or target ASIN is in ``held_out`` is counted apart."""
    triplets = []
    path = root / "captions" / f"cap.{category}.{split}.json"
    for position, entry in enumerate(_read_json_list(path)):
        report.rows_read += 1
        if not isinstance(entry, dict):
            report.skip(f"entry of {path.name} is not an object (expected candidate, target, captions)", f"#{position}")
            continue
        reference = f"{category}/{entry.get('candidate')}"
        if "target" not in entry:
            report.skip("test triplet without target (official test labels withheld)", reference)
            continue
        target = f"{category}/{entry['target']}"
        if split == "train" and {str(entry.get("candidate")), str(entry["target"])} & held_out:
            report.skip(TRIPLET_HELD_OUT, f"{reference} -> {target}")
            continue
        if reference not in ids or target not in ids:
            report.skip("triplet image not listed in its image_splits file", f"{reference} -> {target}")
            continue
        captions = entry.get("captions", [])
        if not isinstance(captions, list):
            report.skip(f"entry of {path.name} whose captions are not a list of texts", f"#{position}")
            continue
        modification = modification_text(captions, report, f"{reference} -> {target}")
        if not modification:
            report.skip("triplet without any relative caption", f"{reference} -> {target}")
            continue
        triplets.append(CompositionTriplet(reference, modification, target, style="fashioniq"))
    return triplets


@register_catalogue(DATASET)
def load_fashioniq(
    root: str | Path,
    categories: Sequence[str] = CATEGORIES,
    splits: Sequence[str] = ("train", "val"),
    image_root: str | Path | None = None,
) -> Catalogue:
    """Load FashionIQ: items from the image split files, triplets from the relative-caption files.

    Args:
        root: folder with ``captions/`` and ``image_splits/``.
        categories: a list or tuple of ``"dress"``, ``"shirt"``, ``"toptee"``.
        splits: a list or tuple of ``"train"``, ``"val"``, ``"test"`` (test triplets have no target and are
            counted). The ``train`` split leaves out the ASINs of the other loaded splits (see the module's text).
        image_root: folder of ``<ASIN>.jpg``/``.png`` images; default ``<root>/images``. Items without an
            image file are kept with ``image_ref=None``.

    Returns:
        A catalogue of items with id ``"<category>/<ASIN>"``, attribute ``category``, no captions of their
        own (the text of FashionIQ is the relative captions), and triplets of style ``"fashioniq"``.

    Raises:
        DatasetNotFound: ``root``, a needed annotation file, or an explicitly given ``image_root`` is missing.
        ValueError: ``categories`` or ``splits`` is a plain string, empty or names an unknown value.
    """
    check_names(DATASET, "categories", categories, CATEGORIES)
    check_names(DATASET, "splits", splits, FASHIONIQ_SPLITS)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LAYOUT.missing(root)
    if image_root is not None and not Path(image_root).expanduser().is_dir():
        raise LAYOUT.missing(Path(image_root).expanduser())
    images = image_index(Path(image_root).expanduser() if image_root is not None else root / "images")
    report = LoadReport(DATASET)
    asins = {(category, split): read_split_asins(root, category, split) for category in categories for split in splits}
    held_out = {str(asin) for (_, split), listed in asins.items() if split != "train" for asin in listed}
    items: list[Item] = []
    triplets: list[CompositionTriplet] = []
    for (category, split), listed in asins.items():
        loaded = split_items(category, split, listed, held_out, images, report)
        items += loaded
        triplets += read_triplets(root, category, split, {item.item_id for item in loaded}, held_out, report)
    return Catalogue(DATASET, items, report, triplets, attribute_names=("category",), match_attributes=("category",))
