"""Loader for *Fashion IQ* (Wu et al., CVPR 2021): composed retrieval with two crowd-written relative captions.

Layout (the official release): ``captions/cap.<category>.<split>.json``, ``image_splits/split.<category>.<split>.json``
and images ``<image_root>/<ASIN>.jpg`` (or ``.png``). The annotations are usable without the images, which are
hard to obtain (many Amazon links are dead): items whose image file is absent are kept with ``image_ref=None``
and counted once per item under one report reason.

Item ids are ``"<category>/<ASIN>"`` because 3,302 ASINs are listed under both ``shirt`` and ``toptee``
(sometimes in different splits); FashionIQ is evaluated per category, so each listing stays its own item.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .records import (
    Catalogue,
    CompositionTriplet,
    DatasetNotFound,
    FileImage,
    Item,
    LoadReport,
    missing_path_error,
    read_json,
)
from .registry import register_catalogue

DATASET = "fashioniq"
CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".png")
IMAGE_MISSING = "image file missing (item kept without image; FashionIQ annotations are usable alone)"
LAYOUT = (
    "  <root>/captions/cap.<category>.<split>.json          (list of {candidate, target, captions})\n"
    "  <root>/image_splits/split.<category>.<split>.json    (list of ASINs)\n"
    "  <image_root>/<ASIN>.jpg or .png                      (optional; default <root>/images)"
)


def _not_found(path: Path) -> DatasetNotFound:
    return missing_path_error(
        DATASET,
        path,
        LAYOUT,
        "Get captions/ and image_splits/ from github.com/XiaoxiaoGuo/fashion-iq (images via the asin2url lists "
        "of github.com/hongwang600/fashion-iq-metadata)",
    )


def _read_json_list(path: Path) -> list:
    """A JSON file that must hold a list; :class:`DatasetNotFound` if absent, ``ValueError`` naming the file if it
    is truncated, not JSON or not a list."""
    if not path.is_file():
        raise _not_found(path)
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


def read_split_items(root: Path, category: str, split: str, images: dict[str, Path], report: LoadReport) -> list[Item]:
    """The items of ``image_splits/split.<category>.<split>.json``, with their image when one exists."""
    items, seen = [], set()
    for asin in _read_json_list(root / "image_splits" / f"split.{category}.{split}.json"):
        report.rows_read += 1
        item_id = f"{category}/{asin}"
        if asin in seen:
            report.skip("duplicate ASIN in a split file (first kept)", item_id)
            continue
        seen.add(asin)
        image = images.get(asin)
        if image is None:
            report.skip(IMAGE_MISSING, item_id)
        items.append(Item(item_id, (), (), {"category": category}, split, FileImage(image) if image else None))
    return items


def modification_text(captions: Sequence[str], report: LoadReport, example: str) -> str:
    """The two relative captions, stripped and joined with ``" and "``; an empty caption is dropped and counted."""
    texts = [text.strip() for text in captions if isinstance(text, str) and text.strip()]
    if len(texts) < len(captions):
        report.skip("empty relative caption dropped (triplet kept with the other one)", example)
    return " and ".join(texts)


def read_triplets(root: Path, category: str, split: str, ids: set[str], report: LoadReport) -> list[CompositionTriplet]:
    """Triplets of ``captions/cap.<category>.<split>.json``; unusable entries are counted, never dropped silently."""
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
        if reference not in ids or target not in ids:
            report.skip("triplet image not listed in its image_splits file", f"{reference} -> {target}")
            continue
        modification = modification_text(entry.get("captions", []), report, f"{reference} -> {target}")
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
        categories: any of ``"dress"``, ``"shirt"``, ``"toptee"``.
        splits: any of ``"train"``, ``"val"``, ``"test"`` (test triplets have no target and are counted).
        image_root: folder of ``<ASIN>.jpg``/``.png`` images; default ``<root>/images``. Items without an
            image file are kept with ``image_ref=None``.

    Returns:
        A catalogue of items with id ``"<category>/<ASIN>"``, attribute ``category``, no captions of their
        own (the text of FashionIQ is the relative captions), and triplets of style ``"fashioniq"``.

    Raises:
        DatasetNotFound: ``root``, a needed annotation file, or an explicitly given ``image_root`` is missing.
    """
    unknown = sorted(set(splits) - set(FASHIONIQ_SPLITS))
    if unknown:
        raise ValueError(f"{DATASET}: unknown split(s) {unknown}; FashionIQ has {FASHIONIQ_SPLITS}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _not_found(root)
    if image_root is not None and not Path(image_root).expanduser().is_dir():
        raise _not_found(Path(image_root).expanduser())
    images = image_index(Path(image_root).expanduser() if image_root is not None else root / "images")
    report = LoadReport(DATASET)
    items: list[Item] = []
    triplets: list[CompositionTriplet] = []
    for category in categories:
        for split in splits:
            split_items = read_split_items(root, category, split, images, report)
            items += split_items
            triplets += read_triplets(root, category, split, {item.item_id for item in split_items}, report)
    return Catalogue(DATASET, items, report, triplets, attribute_names=("category",), match_attributes=("category",))
