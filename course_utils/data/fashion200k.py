"""Loader for *Fashion200k* (Han et al., ICCV 2017) with the TIRG test queries (Vo et al., CVPR 2019).

Layout: ``labels/<category>_{train,test}_detect_all.txt`` (tab-separated ``<image path>\\t<detection score>\\t
<caption>``, paths relative to the root), the images under the root, and ``test_queries.txt`` (``<source path>
<target path>`` per line). Each test query becomes a :class:`CompositionTriplet` "replace <word> with <word>".

Hit convention (TIRG): many images share a caption, so a retrieved image counts as correct when *its caption
equals the target's caption*, not only when it is the target image itself (the query image is excluded).
The metric lives with the other metrics; this loader keeps the captions that it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .records import (
    IMAGE_MISSING,
    Catalogue,
    CompositionTriplet,
    DatasetLayout,
    FileImage,
    Item,
    LoadReport,
    check_names,
    no_item_loaded,
    utf8_lines,
)
from .registry import register_catalogue
from .triplets import fashion200k_phrase

DATASET = "fashion200k"
# The same kind of product: the same category and shop subcategory (e.g. dress, casual_and_day_dresses).
MATCH_ATTRIBUTES = ("category", "subcategory")
FASHION200K_SPLITS = ("train", "test")
LABEL_SUFFIX = "_detect_all.txt"
LAYOUT = DatasetLayout(
    DATASET,
    "  <root>/labels/<category>_{train,test}_detect_all.txt   (<image path>\\t<detection score>\\t<caption>)\n"
    "  <root>/test_queries.txt                              (<source image path> <target image path>)\n"
    "  <root>/<image path>                                  (e.g. women/dresses/.../51727804_0.jpeg)",
    "Download Fashion200k from github.com/xthan/fashion-200k and test_queries.txt from github.com/google/tirg "
    "into <root>",
)
QUERY_NOT_IN_TEST = "test query image listed in the train split (its train line came first), so not in the test gallery"


def label_files(root: Path, splits: Sequence[str], report: LoadReport) -> list[tuple[str, str, Path]]:
    """``(category, split, path)`` of every ``labels/<category>_<split>_detect_all.txt``, sorted by name.

    A category with a label file for one of ``splits`` but not for another is reported (a caveat naming the absent
    file): that category then has no items in that split.
    """
    label_dir = root / "labels"
    LAYOUT.require(root, label_dir)
    found = []
    for split in splits:
        for path in sorted(label_dir.glob(f"*_{split}{LABEL_SUFFIX}")):
            found.append((path.name[: -len(f"_{split}{LABEL_SUFFIX}")], split, path))
    if not found:
        raise LAYOUT.missing(label_dir / f"<category>_{{{','.join(splits)}}}{LABEL_SUFFIX}")
    present = {(category, split) for category, split, _ in found}
    for category in sorted({category for category, _, _ in found}):
        for split in splits:
            if (category, split) not in present:
                report.caveat(
                    f"label file absent: {label_dir / f'{category}_{split}{LABEL_SUFFIX}'} "
                    f"(no {category} items in the {split} split)"
                )
    return found


def path_attributes(category: str, image_path: str) -> dict[str, str]:
    """``category`` (from the label file) plus ``gender`` and ``subcategory`` when the path has the usual form.

    The usual form is ``<gender>/<category>/<subcategory>/<product>/<image>``, e.g.
    ``women/dresses/casual_and_day_dresses/51727804/51727804_0.jpeg``.
    """
    attributes = {"category": category}
    parts = image_path.split("/")
    if len(parts) >= 5:
        attributes.update(gender=parts[0], subcategory=parts[2])
    return attributes


def read_items(root: Path, files: list[tuple[str, str, Path]], report: LoadReport) -> dict[str, Item]:
    """One item per image path listed in the label files; malformed or non-UTF-8 lines, repeats and missing images
    are counted."""
    items: dict[str, Item] = {}
    for category, split, label_path in files:
        for line_number, line in utf8_lines(label_path, report):
            if not line.strip():
                continue
            report.rows_read += 1
            fields = line.rstrip("\r\n").split("\t")
            caption = fields[2].strip() if len(fields) == 3 else ""
            if not caption:
                report.skip("malformed label line (expected path, score, caption)", f"{label_path.name}:{line_number}")
                continue
            image_path = fields[0].strip()
            if image_path in items:
                report.skip("duplicate image path (first line kept)", image_path)
            elif not (root / image_path).is_file():
                report.skip(IMAGE_MISSING, image_path)
            else:
                attributes = path_attributes(category, image_path)
                attributes["words"] = " ".join(caption.split())
                items[image_path] = Item(
                    image_path, (caption,), ("title",), attributes, split, FileImage(root / image_path)
                )
    return items


def different_words(source_caption: str, target_caption: str) -> tuple[str, str] | None:
    """The first source word absent from the target and the first target word absent from the source (TIRG)."""
    source_words, target_words = source_caption.split(), target_caption.split()
    old = next((word for word in source_words if word not in target_words), None)
    new = next((word for word in target_words if word not in source_words), None)
    return (old, new) if old and new else None


def read_test_queries(queries_path: Path, items: dict[str, Item], report: LoadReport) -> list[CompositionTriplet]:
    """TIRG test queries as triplets; queries whose images were not loaded, are not test items (a path listed in
    both splits keeps its first, train, line) or whose captions match are counted."""
    triplets = []
    for line_number, line in utf8_lines(queries_path, report):
        if not line.strip():
            continue
        report.rows_read += 1
        paths = line.split()
        if len(paths) != 2:
            report.skip("malformed test query line (expected two image paths)", f"line {line_number}")
            continue
        source, target = paths
        if source not in items or target not in items:
            report.skip("test query image not loaded (no label line, image missing or unreadable)", line.strip())
            continue
        if items[source].split != "test" or items[target].split != "test":
            report.skip(QUERY_NOT_IN_TEST, line.strip())
            continue
        words = different_words(items[source].captions[0], items[target].captions[0])
        if words is None:
            report.skip("test query captions do not differ by a word", line.strip())
            continue
        old, new = words
        triplets.append(
            CompositionTriplet(
                source, fashion200k_phrase("word", old, new), target, {"word": (old, new)}, "fashion200k"
            )
        )
    return triplets


@register_catalogue(DATASET)
def load_fashion200k(
    root: str | Path,
    splits: Sequence[str] = FASHION200K_SPLITS,
    verify_images: bool = False,
) -> Catalogue:
    """Load Fashion200k: one item per image path (id = that path), its caption as style ``"title"``.

    Args:
        root: the dataset folder (``labels/``, ``test_queries.txt`` and the image folders).
        splits: official splits to read, a list or tuple from ``("train", "test")``.
        verify_images: decode every image once and drop (and count) unreadable ones; off by default
            because decoding 200k photos takes a long time.

    Returns:
        A catalogue with attributes ``category`` (from the label file), ``gender`` and ``subcategory``
        (from the path) and ``words`` (the caption's words), and the TIRG test queries as triplets when
        ``"test"`` is loaded. The report counts label and query lines read and everything skipped.

    Raises:
        DatasetNotFound: ``root``, ``labels/`` or every label file of ``splits`` is missing, or no item loaded
            for want of images.
        ValueError: ``splits`` is a plain string, empty or names an unknown split, or no label line loads.
    """
    check_names(DATASET, "splits", splits, FASHION200K_SPLITS)
    root = Path(root).expanduser()
    report = LoadReport(DATASET)
    items = read_items(root, label_files(root, splits, report), report)
    catalogue = Catalogue(DATASET, list(items.values()), report, match_attributes=MATCH_ATTRIBUTES)
    if verify_images:
        catalogue = catalogue.drop_unreadable_images()
    if not catalogue:
        raise no_item_loaded(
            LAYOUT,
            report,
            root / "labels",
            root,
            image_rule=f"each image must be at {root}/<the path its label line gives>, so unzip the image folders "
            "(women/, men/) there",
            listing_rule=f"check that its files are Fashion200k's <category>_<split>{LABEL_SUFFIX}",
        )
    queries_path = root / "test_queries.txt"
    if "test" not in splits:
        return catalogue
    if not queries_path.is_file():
        report.caveat("test_queries.txt missing (no composition triplets; get it from github.com/google/tirg)")
        return catalogue
    triplets = read_test_queries(queries_path, {item.item_id: item for item in catalogue}, report)
    return Catalogue(DATASET, catalogue.items, report, triplets, match_attributes=MATCH_ATTRIBUTES)
