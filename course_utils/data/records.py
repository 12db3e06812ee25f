"""The one record schema every dataset loads into (introduced in notebook 01).

An :class:`Item` is one catalogue product: an id, captions, attributes, a split and an image
that is decoded only when asked for. A :class:`Catalogue` is a list of items plus a
:class:`LoadReport` that counts what the loader skipped or repaired, so nothing is dropped silently.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..checks import names_problem
from ..file_digests import content_digests

SPLITS = ("pretrain", "train", "val", "test")


class DatasetNotFound(FileNotFoundError):
    """A dataset root is missing or lacks the expected files; the message says what to provide."""


@dataclass(frozen=True)
class DatasetLayout:
    """A real dataset's expected files and where to get them: the text of every :class:`DatasetNotFound` its loader
    raises, so each message says what is missing, the expected layout and where to get it."""

    dataset: str
    layout: str  # one line per expected path, e.g. "  <root>/images/<id>.jpg"
    how_to_get: str  # e.g. "Get ... from Kaggle (...) and unzip it into <root>"

    def missing(self, path: Path, problem: str = "does not exist") -> DatasetNotFound:
        """The error for a ``path`` that is missing, or that is there but unusable (``problem`` says how, e.g. "is a
        folder, not a file")."""
        return DatasetNotFound(
            f"{self.dataset}: {path} {problem}. Expected layout:\n{self.layout}\n{self.how_to_get}; "
            "see README › Real data."
        )

    def require(self, *paths: Path) -> None:
        """Raise :meth:`missing` for the first of ``paths`` that does not exist (list the root first)."""
        for path in paths:
            if not path.exists():
                raise self.missing(path)


def check_names(dataset: str, parameter: str, names: Sequence[str], allowed: Sequence[str]) -> None:
    """Raise ``ValueError`` naming ``dataset`` and ``parameter`` unless ``names`` is a non-empty list or tuple drawn
    from ``allowed`` (``splits``, ``categories``; :func:`~course_utils.checks.names_problem` says why not)."""
    problem = names_problem(names, allowed)
    if problem is not None:
        raise ValueError(f"{dataset}: {parameter}={names!r} must be {problem}")


def read_json(path: Path) -> object:
    """The parsed JSON of ``path``; ``ValueError`` naming the file when it is not UTF-8 or not (complete) JSON.

    A truncated download gives ``json.JSONDecodeError`` (and a stray byte ``UnicodeDecodeError``) with no file
    name; with several annotation files per dataset the reader could not tell which one to fetch again.
    """
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not valid UTF-8 (bad byte at offset {err.start}); the file is corrupt or in another "
            "encoding: download it again or re-save it as UTF-8"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); the file is probably "
            "truncated or corrupt: download it again"
        ) from None


def utf8_lines(path: Path, report: LoadReport) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a text file, line ending kept; undecodable lines are counted.

    A line that is not valid UTF-8 (one stray Latin-1 byte in a 44,000-row file is enough to stop a whole
    ``read_text``) is skipped and counted in ``report`` under ``"line not valid UTF-8 in <file name>"``; the
    other lines load. A UTF-8 byte-order mark on the first line is dropped.

    A UTF-16 file (Excel's "Unicode Text", PowerShell's default) is refused outright: split at its newline bytes,
    each line would either fail to decode or decode to text full of NUL characters, and the caller would complain
    about a header it cannot read instead of the encoding.

    Raises:
        ValueError: naming ``path``, when its first line has a UTF-16 byte-order mark or NUL bytes.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and (raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in raw):
                raise ValueError(
                    f"{path} is UTF-16 encoded (a UTF-16 byte-order mark or NUL bytes in its first line), but it must "
                    "be UTF-8: re-save it as UTF-8 (e.g. a spreadsheet's 'CSV UTF-8' format)"
                )
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                report.skip(f"line not valid UTF-8 in {path.name} (skipped)", f"line {number}")


class CorruptImage(ValueError):
    """An image file exists but cannot be decoded."""


class OversizedImage(CorruptImage):
    """An image with more pixels than PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) claimed in its
    header, or than a caller's stricter limit (an upload's, :func:`decode_image`'s ``max_pixels``)."""


IMAGE_MISSING = "image file missing"
UNREADABLE_IMAGE = "image unreadable (corrupt or not an image)"
OVERSIZED_IMAGE = "image too large to decode (over PIL's decompression-bomb limit)"
TRIPLET_IMAGE_DROPPED = "triplet whose reference or target image was dropped"

#: Fewest pixels a side a large JPEG is decoded at. libjpeg can decode at 1/2, 1/4 or 1/8 scale for a fraction of
#: the work; :func:`decode_image` takes the smallest of those scales that keeps both sides at least this long. 512
#: is more than any model here reads (the course's CLIPs 64-80 pixels, open_clip's 224-512) and than any figure or
#: page shows, so only the decoding time changes: a full-resolution product photo (1800 x 2400) or a 12-megapixel
#: phone photo is read at a quarter or less of its pixels. Smaller photos (the Kaggle sample's 60 x 80) decode whole.
DECODE_MIN_SIDE = 512


def eight_bit_grey(image: Image.Image) -> Image.Image:
    """A 16-bit or float greyscale ``image`` (PIL modes ``I;16*``, ``I``, ``F``) as 8-bit ``L`` (``LA`` when it has
    a transparent value), scaled to its full range; any other image unchanged.

    PIL's own conversion clips these values to 0..255, so a 16-bit scan (values in the thousands) turns solid white
    and a float image in [0, 1] solid black. ``I;16`` holds 16-bit values by definition and is divided by 257
    (65535 -> 255). ``I`` (32-bit integers) and ``F`` (32-bit floats) do not say their scale, so it is read from the
    values: ``F`` within [0, 1] is multiplied by 255, values within 0..255 are kept (PIL's reading, as before), and
    values within 0..65535 are 16-bit data, divided by 257.

    Raises:
        ValueError: an ``I`` or ``F`` image with negative, non-finite or larger values: no scale fits, so no colour
            it would get could be trusted (:func:`decode_image` turns this into :class:`CorruptImage`).
    """
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image, dtype=np.float32)  # exact for 16-bit integers, half float64's memory
    if image.mode.startswith("I;16"):
        full_scale = 65535
    else:
        low, high = float(values.min()), float(values.max())
        scales = (1, 255, 65535) if image.mode == "F" else (255, 65535)
        full_scale = next((scale for scale in scales if 0 <= low and high <= scale), None)  # False for NaN
        if full_scale is None:
            raise ValueError(
                f"a mode-{image.mode} image with values from {low:g} to {high:g} fits no known scale (0..1, "
                "0..255 or 0..65535); save it as an 8-bit or 16-bit PNG or a JPEG"
            )
    grey = Image.fromarray(np.rint(values * (255 / full_scale)).astype(np.uint8), "L")
    transparent = image.info.get("transparency")
    if transparent is None:
        return grey
    return Image.merge("LA", (grey, Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8), "L")))


def opaque_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB, its transparent parts laid on white (a catalogue photo's background) rather than dropped:
    PIL's plain ``convert("RGB")`` keeps whatever colour hides under full transparency, often black. 16-bit and
    float greyscale images are scaled to 8 bits first (:func:`eight_bit_grey`), not clipped to white or black."""
    image = eight_bit_grey(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


#: PIL's decompression-bomb limit, and what to do about it, for messages.
PIL_LIMIT = (
    "PIL's limit, Image.MAX_IMAGE_PIXELS (89,478,485 by default); use a smaller image, or raise that limit if you "
    "trust the file"
)


def _check_pixels(image: Image.Image, limit: int | None, label: str, remedy: str) -> None:
    """Raise :class:`OversizedImage` naming ``label``, the limit and ``remedy`` when ``image`` (opened, not decoded)
    has more than ``limit`` pixels."""
    if limit is not None and image.width * image.height > limit:
        raise OversizedImage(
            f"refusing to decode image {label}: {image.width} x {image.height} pixels, more than {remedy}"
        )


#: The formats an image file may be in: photo, web and scanner raster formats. Any other format PIL knows is refused
#: undecoded; EPS, for one, would run the file through Ghostscript where it is installed.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")


def decode_image(source: Path | BinaryIO, label: str, max_pixels: int | None = None) -> Image.Image:
    """Decode an image file (a path or an open binary file) to RGB, or raise one clear error naming ``label``.

    A photo comes out as it looks: upright by its EXIF orientation (a phone stores a portrait photo on its side
    and says so in EXIF), with any transparency laid on white and 16-bit or float greyscale scaled to 8 bits
    (:func:`opaque_rgb`). A large JPEG is decoded at a reduced scale that keeps both sides at least
    :data:`DECODE_MIN_SIDE` pixels.

    PIL fails in many ways on bad files: ``OSError`` for truncated data, ``DecompressionBombError`` for a header
    claiming tens of thousands of pixels a side, ``SyntaxError``, ``ValueError``, ``struct.error`` and others for
    malformed headers. Every one of them becomes :class:`CorruptImage` (:class:`OversizedImage` for the bombs) so
    loaders, the encoding loop and the upload widgets can skip and count the file instead of dying part-way
    through. The pixel limits are checked on the header, before any pixel is decoded, here rather than through
    PIL's warning for 1-2x its limit: warning filters are process-wide, and the classroom decodes in several threads.

    Args:
        source: the file.
        label: how messages name it.
        max_pixels: a stricter limit than ``Image.MAX_IMAGE_PIXELS`` (uploads), counted at the size decoded (a
            large JPEG's reduced scale).

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        OversizedImage: the header claims more than ``Image.MAX_IMAGE_PIXELS`` (or ``max_pixels``) pixels.
        CorruptImage: a format outside :data:`IMAGE_FORMATS`, anything else that stops decoding, or a 16-bit/float
            image whose values fit no known scale.
    """
    try:
        with Image.open(source, formats=IMAGE_FORMATS) as image:
            _check_pixels(image, Image.MAX_IMAGE_PIXELS, label, PIL_LIMIT)  # what the header claims
            image.draft(None, (DECODE_MIN_SIDE, DECODE_MIN_SIDE))  # JPEG only; other formats ignore it
            _check_pixels(image, max_pixels, label, f"the {max_pixels} allowed here as decoded; use a smaller image")
            return opaque_rgb(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise
    except OversizedImage:
        raise
    except Image.DecompressionBombError as err:  # PIL's own, on opening a header of over twice its limit
        raise OversizedImage(f"refusing to decode image {label}: {err}; the limit is {PIL_LIMIT}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise CorruptImage(f"cannot decode image {label}: {err}") from err
    except Exception as err:  # noqa: BLE001 - any other decoder failure also means "not a usable image"
        raise CorruptImage(f"cannot decode image {label}: {type(err).__name__}: {err}") from err


@dataclass(frozen=True)
class FileImage:
    """An image stored as a file on disk, decoded to RGB on :meth:`load` (see :func:`decode_image`)."""

    path: Path

    def load(self) -> Image.Image:
        return decode_image(self.path, str(self.path))


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
        """The first caption of ``style`` (any style when ``None``); ``KeyError`` naming the item if it has none."""
        if not self.captions:
            raise KeyError(
                f"item {self.item_id} has no captions (e.g. a FashionIQ item: that dataset's text is the relative "
                "captions of its triplets); use a catalogue whose items have captions"
            )
        if style is None:
            return self.captions[0]
        for text, text_style in zip(self.captions, self.caption_styles):
            if text_style == style:
                return text
        raise KeyError(
            f"item {self.item_id} has no caption of style {style!r}; it has {sorted(set(self.caption_styles))}"
        )

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
    """What a loader read, repaired and left out; printed by notebooks so nothing vanishes silently.

    Three kinds of entry, counted apart so the headline's "dropped" is what was listed and not loaded: :meth:`skip` for
    a row, line, item or triplet left out, :meth:`caveat` for something loaded with a part missing (an attribute
    value, an image kept as absent, an optional file that was not there), :meth:`unlisted_file` for a file in the
    dataset's folder that no listing names (an image without a row or caption), so not loaded either.
    """

    dataset: str
    rows_read: int = 0
    rows_repaired: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> rows, items or triplets not loaded
    caveats: Counter = field(default_factory=Counter)  # reason -> loaded with a part missing
    unlisted: Counter = field(default_factory=Counter)  # reason -> files in the folder that no listing names
    examples: dict = field(default_factory=dict)  # reason -> a few example ids

    def skip(self, reason: str, example: str | None = None) -> None:
        """Count one row, line, item or triplet left out for ``reason``."""
        self.skipped[reason] += 1
        self._keep_example(reason, example)

    def caveat(self, reason: str, example: str | None = None) -> None:
        """Count one thing loaded with a part missing for ``reason`` (it stays in the catalogue)."""
        self.caveats[reason] += 1
        self._keep_example(reason, example)

    def unlisted_file(self, reason: str, example: str | None = None) -> None:
        """Count one file of the dataset's folder that no listing names (so not loaded) for ``reason``."""
        self.unlisted[reason] += 1
        self._keep_example(reason, example)

    def _keep_example(self, reason: str, example: str | None) -> None:
        if example is not None:
            self.examples.setdefault(reason, [])
            if len(self.examples[reason]) < 5:
                self.examples[reason].append(example)

    @property
    def total_skipped(self) -> int:
        """Rows, lines, items and triplets left out (not loaded)."""
        return sum(self.skipped.values())

    @property
    def total_unlisted(self) -> int:
        """Files in the dataset's folder that no listing names (not loaded)."""
        return sum(self.unlisted.values())

    @property
    def total_caveats(self) -> int:
        """Things loaded with a part missing."""
        return sum(self.caveats.values())

    def __str__(self) -> str:
        lines = [
            f"{self.dataset}: read {self.rows_read} rows, repaired {self.rows_repaired}, dropped {self.total_skipped}"
            + (f"; {self.total_caveats} loaded with a caveat" if self.caveats else "")
            + (f"; {self.total_unlisted} file(s) in the folder listed nowhere" if self.unlisted else "")
        ]
        for label, counts in (("dropped", self.skipped), ("caveat ", self.caveats), ("unlisted", self.unlisted)):
            for reason, count in sorted(counts.items()):
                example = self.examples.get(reason)
                lines.append(f"  {label} {count:>6} — {reason}" + (f" (e.g. {', '.join(example)})" if example else ""))
        return "\n".join(lines)


def no_item_loaded(
    layout: DatasetLayout, report: LoadReport, listing: Path, image_dir: Path, image_rule: str, listing_rule: str
) -> Exception:
    """The error a loader raises instead of returning an empty catalogue (which the course would report later, as a
    missing split): every entry of ``listing`` was dropped, and the report's reasons say why.

    When images caused drops, a :class:`DatasetNotFound` names ``image_dir`` and ``image_rule`` (where each image
    must be, and how to get them); otherwise a ``ValueError`` names ``listing`` and ``listing_rule`` (what it must be).
    """
    counts = ", ".join(f"{reason}: {count}" for reason, count in sorted(report.skipped.items()))
    dropped = f"all {report.rows_read} entries of {listing.name} were dropped ({counts})"
    if any(report.skipped.get(reason) for reason in (IMAGE_MISSING, UNREADABLE_IMAGE, OVERSIZED_IMAGE)):
        return layout.missing(image_dir, f"yields no item: {dropped}; {image_rule}")
    return ValueError(f"{listing} yields no item: {dropped}; {listing_rule}")


class Catalogue(Sequence[Item]):
    """An ordered collection of :class:`Item` with its load report and optional composition triplets.

    ``match_attributes`` are the attributes two items must share to be the same kind of product in this dataset
    (e.g. article type and colour): the loader declares them, and they define attribute-match recall (notebook
    01) and the photo pretraining's attribute term. Empty when the loader declares none.
    """

    def __init__(
        self,
        name: str,
        items: Sequence[Item],
        report: LoadReport | None = None,
        triplets: Sequence[CompositionTriplet] = (),
        attribute_names: Sequence[str] | None = None,
        match_attributes: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.items = list(items)
        self.report = report or LoadReport(dataset=name, rows_read=len(self.items))
        self.triplets = list(triplets)
        if attribute_names is None:
            attribute_names = sorted({k for item in self.items for k in item.attributes})
        self.attribute_names = tuple(attribute_names)
        self.match_attributes = tuple(match_attributes)
        self._index = {item.item_id: i for i, item in enumerate(self.items)}
        if len(self._index) != len(self.items):
            repeated = [item_id for item_id, count in Counter(self.ids).items() if count > 1]
            raise ValueError(
                f"{name}: {len(repeated)} duplicate item id(s), e.g. {repeated[:5]}; every item needs its own id"
            )

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
        return Catalogue(
            f"{self.name}/{name}", items, self.report, triplets, self.attribute_names, self.match_attributes
        )

    def subset(self, item_ids: Sequence[str], name: str | None = None) -> Catalogue:
        """The items with ``item_ids``, in that order."""
        items = [self.by_id(i) for i in item_ids]
        ids = set(item_ids)
        triplets = [t for t in self.triplets if t.reference_id in ids and t.target_id in ids]
        return Catalogue(name or self.name, items, self.report, triplets, self.attribute_names, self.match_attributes)

    @property
    def colour_attribute(self) -> str | None:
        """The attribute that names an item's colour (``colour`` on the drawings, ``baseColour`` on Fashion Product
        Images), or None when the catalogue labels no colour (DeepFashion-MultiModal)."""
        return next((name for name in self.attribute_names if "colour" in name.lower()), None)

    def attribute_values(self, attribute: str) -> list[str]:
        """Sorted distinct values of one attribute."""
        return sorted({item.attributes[attribute] for item in self.items if attribute in item.attributes})

    def to_frame(self):
        """A pandas DataFrame with one row per item (id, split, first caption, attributes, image path)."""
        import pandas as pd

        rows = [
            {
                "item_id": it.item_id,
                "split": it.split,
                "caption": it.captions[0] if it.captions else "",
                **dict(it.attributes),
                "image_path": str(it.image_path) if it.image_path else None,
            }
            for it in self.items
        ]
        return pd.DataFrame(rows)

    def fingerprint(self) -> str:
        """A short hash of ids, captions, attributes and images; changes whenever the data does, and only then.

        An image file counts by its name and its bytes (:func:`course_utils.file_digests.content_digests`), not by
        its folder or modification time: a copy of the dataset elsewhere has the same fingerprint, so the models and
        embeddings cached for it are reused.
        """
        files = [item.image_ref.path for item in self.items if isinstance(item.image_ref, FileImage)]
        file_digests = dict(zip(files, content_digests(files)))
        digest = hashlib.sha256()
        for item in self.items:
            ref = item.image_ref
            if isinstance(ref, FileImage):
                ref_key = f"file:{ref.path.name}:{file_digests[ref.path] or 'missing'}"
            else:
                ref_key = f"array:{ref.index}" if ref else "none"
            digest.update(
                json.dumps([item.item_id, item.captions, dict(item.attributes), item.split, ref_key]).encode()
            )
            if isinstance(ref, ArrayImage):
                digest.update(np.ascontiguousarray(ref.pixels[ref.index]).data)
        return digest.hexdigest()[:16]

    def drop_unreadable_images(self) -> Catalogue:
        """Decode every image once; drop items whose image is missing or corrupt, and the triplets that use one of
        them, and count both in the report."""
        kept = []
        for item in self.items:
            try:
                item.image  # noqa: B018 - decoding is the check
            except FileNotFoundError:
                self.report.skip(IMAGE_MISSING, item.item_id)
                continue
            except OversizedImage:
                self.report.skip(OVERSIZED_IMAGE, item.item_id)
                continue
            except CorruptImage:
                self.report.skip(UNREADABLE_IMAGE, item.item_id)
                continue
            kept.append(item)
        ids = {item.item_id for item in kept}
        triplets = []
        for triplet in self.triplets:
            if triplet.reference_id in ids and triplet.target_id in ids:
                triplets.append(triplet)
            else:
                self.report.skip(TRIPLET_IMAGE_DROPPED, f"{triplet.reference_id} -> {triplet.target_id}")
        return Catalogue(self.name, kept, self.report, triplets, self.attribute_names, self.match_attributes)


def normalised_title(text: str) -> str:
    """``text`` lower-cased with its whitespace collapsed: "Nike  Men Black T-shirt" == "nike men black t-shirt".

    A split by item keeps products apart, not texts; notebook 01 compares normalised test queries with the train
    captions to see how many queries a model trained on the train split has already read.
    """
    return " ".join(text.lower().split())
