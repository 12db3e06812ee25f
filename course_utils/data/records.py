"""The one record schema every dataset loads into (introduced in notebook 01).

An :class:`Item` is one catalogue product: an id, captions, attributes, a split and an image
that is decoded only when asked for. A :class:`Catalogue` is a list of items plus a
:class:`LoadReport` that counts what the loader skipped or repaired, so nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

SPLITS = ("pretrain", "train", "val", "test")


class DatasetNotFound(FileNotFoundError):
    """A dataset root is missing or lacks the expected files; the message says what to provide."""


def missing_path_error(dataset: str, path: Path, layout: str, how_to_get: str) -> DatasetNotFound:
    """The error every real loader raises for a missing path: what is missing, the expected layout, where to get it."""
    return DatasetNotFound(f"{dataset}: {path} does not exist. Expected layout:\n{layout}\n{how_to_get}; see README › Real data.")


class CorruptImage(ValueError):
    """An image file exists but cannot be decoded."""


@dataclass(frozen=True)
class FileImage:
    """An image stored as a file on disk, decoded to RGB on :meth:`load`."""

    path: Path

    def load(self) -> Image.Image:
        try:
            with Image.open(self.path) as image:
                return image.convert("RGB")
        except FileNotFoundError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise CorruptImage(f"cannot decode image {self.path}: {err}") from err


@dataclass(frozen=True)
class ArrayImage:
    """An image held in a shared ``(n, h, w, 3) uint8`` array (the procedural catalogue)."""

    pixels: np.ndarray = field(repr=False)
    index: int

    def load(self) -> Image.Image:
        return Image.fromarray(self.pixels[self.index])


@dataclass(frozen=True)
class Item:
    """One product: id, captions (with their styles), attributes, split and a lazily loaded image.

    ``captions[i]`` has style ``caption_styles[i]`` (e.g. ``"title"``, ``"description"``, ``"web"``).
    """

    item_id: str
    captions: tuple[str, ...]
    caption_styles: tuple[str, ...]
    attributes: Mapping[str, str]
    split: str
    image_ref: FileImage | ArrayImage | None = field(default=None, compare=False)

    @property
    def image(self) -> Image.Image:
        """The RGB image, decoded now. Raises :class:`CorruptImage` or ``FileNotFoundError``."""
        if self.image_ref is None:
            raise FileNotFoundError(f"item {self.item_id} has no image")
        return self.image_ref.load()

    @property
    def image_path(self) -> Path | None:
        """Where the image lives on disk, or ``None`` for images generated in memory."""
        return self.image_ref.path if isinstance(self.image_ref, FileImage) else None

    def caption(self, style: str | None = None) -> str:
        """The first caption of ``style`` (any style when ``None``)."""
        if style is None:
            return self.captions[0]
        for text, text_style in zip(self.captions, self.caption_styles):
            if text_style == style:
                return text
        raise KeyError(f"item {self.item_id} has no caption of style {style!r}; it has {sorted(set(self.caption_styles))}")

    def captions_of(self, style: str) -> list[str]:
        """All captions of ``style``."""
        return [t for t, s in zip(self.captions, self.caption_styles) if s == style]


@dataclass(frozen=True)
class CompositionTriplet:
    """Reference image + modification text -> target (Fashion200k / FashionIQ style)."""

    reference_id: str
    modification: str
    target_id: str
    changed: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # attribute -> (from, to)
    style: str = "fashion200k"


@dataclass
class LoadReport:
    """What a loader read, repaired and skipped; printed by notebooks so nothing vanishes silently."""

    dataset: str
    rows_read: int = 0
    rows_repaired: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict = field(default_factory=dict)  # reason -> a few example ids

    def skip(self, reason: str, example: str | None = None) -> None:
        self.skipped[reason] += 1
        if example is not None:
            self.examples.setdefault(reason, [])
            if len(self.examples[reason]) < 5:
                self.examples[reason].append(example)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def __str__(self) -> str:
        lines = [f"{self.dataset}: read {self.rows_read} rows, repaired {self.rows_repaired}, skipped {self.total_skipped}"]
        for reason, count in sorted(self.skipped.items()):
            example = self.examples.get(reason)
            lines.append(f"  skipped {count:>6} — {reason}" + (f" (e.g. {', '.join(example)})" if example else ""))
        return "\n".join(lines)


class Catalogue(Sequence[Item]):
    """An ordered collection of :class:`Item` with its load report and optional composition triplets."""

    def __init__(
        self,
        name: str,
        items: Sequence[Item],
        report: LoadReport | None = None,
        triplets: Sequence[CompositionTriplet] = (),
        attribute_names: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.items = list(items)
        self.report = report or LoadReport(dataset=name, rows_read=len(self.items))
        self.triplets = list(triplets)
        if attribute_names is None:
            attribute_names = sorted({k for item in self.items for k in item.attributes})
        self.attribute_names = tuple(attribute_names)
        self._index = {item.item_id: i for i, item in enumerate(self.items)}
        if len(self._index) != len(self.items):
            raise ValueError(f"{name}: duplicate item ids")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):  # type: ignore[override]
        return self.items[i]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __repr__(self) -> str:
        splits = Counter(item.split for item in self.items)
        return f"Catalogue({self.name!r}, {len(self)} items, splits={dict(splits)}, triplets={len(self.triplets)})"

    @property
    def ids(self) -> list[str]:
        return [item.item_id for item in self.items]

    def by_id(self, item_id: str) -> Item:
        try:
            return self.items[self._index[item_id]]
        except KeyError:
            raise KeyError(f"{self.name}: no item with id {item_id!r}") from None

    def has_id(self, item_id: str) -> bool:
        return item_id in self._index

    def position(self, item_id: str) -> int:
        """Row of ``item_id`` in this catalogue (the row of its embedding)."""
        return self._index[item_id]

    def split(self, name: str) -> Catalogue:
        """The items of one split, with the triplets whose reference and target are both in it."""
        known = {item.split for item in self.items}
        if name not in known:
            raise ValueError(f"{self.name}: unknown split {name!r}; this catalogue has {sorted(known)}")
        items = [item for item in self.items if item.split == name]
        ids = {item.item_id for item in items}
        triplets = [t for t in self.triplets if t.reference_id in ids and t.target_id in ids]
        return Catalogue(f"{self.name}/{name}", items, self.report, triplets, self.attribute_names)

    def subset(self, item_ids: Sequence[str], name: str | None = None) -> Catalogue:
        """The items with ``item_ids``, in that order."""
        items = [self.by_id(i) for i in item_ids]
        ids = set(item_ids)
        triplets = [t for t in self.triplets if t.reference_id in ids and t.target_id in ids]
        return Catalogue(name or self.name, items, self.report, triplets, self.attribute_names)

    def attribute_values(self, attribute: str) -> list[str]:
        """Sorted distinct values of one attribute."""
        return sorted({item.attributes[attribute] for item in self.items if attribute in item.attributes})

    def to_frame(self):
        """A pandas DataFrame with one row per item (id, split, first caption, attributes, image path)."""
        import pandas as pd

        rows = [
            {"item_id": it.item_id, "split": it.split, "caption": it.captions[0] if it.captions else "",
             **dict(it.attributes), "image_path": str(it.image_path) if it.image_path else None}
            for it in self.items
        ]
        return pd.DataFrame(rows)

    def fingerprint(self) -> str:
        """A short hash of ids, captions, attributes and image references; changes whenever the data does."""
        digest = hashlib.sha256()
        for item in self.items:
            ref = item.image_ref
            ref_key = str(ref.path) if isinstance(ref, FileImage) else (f"array:{ref.index}" if ref else "none")
            digest.update(json.dumps([item.item_id, item.captions, dict(item.attributes), item.split, ref_key]).encode())
            if isinstance(ref, FileImage) and ref.path.exists():
                stat = ref.path.stat()
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            if isinstance(ref, ArrayImage):
                digest.update(np.ascontiguousarray(ref.pixels[ref.index]).data)
        return digest.hexdigest()[:16]

    def drop_unreadable_images(self) -> Catalogue:
        """Decode every image once; drop items whose image is missing or corrupt and count them in the report."""
        kept = []
        for item in self.items:
            try:
                item.image  # noqa: B018 - decoding is the check
            except FileNotFoundError:
                self.report.skip("image file missing", item.item_id)
                continue
            except CorruptImage:
                self.report.skip("image unreadable (corrupt or not an image)", item.item_id)
                continue
            kept.append(item)
        ids = {item.item_id for item in kept}
        triplets = [t for t in self.triplets if t.reference_id in ids and t.target_id in ids]
        return Catalogue(self.name, kept, self.report, triplets, self.attribute_names)
