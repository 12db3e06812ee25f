"""The embedded default dataset: a procedural fashion catalogue, deterministic by seed (every notebook).

Attributes are sampled from skewed distributions (black and solid are common, as in real shops), so many
items share attributes and exact-instance recall differs from attribute-match recall. Each item gets three
caption styles: a product ``title`` (fashion-product-small style), a long ``description``
(DeepFashion-MultiModal style) and short partial ``web`` captions used to pretrain the tiny CLIP.
Splits ``pretrain / train / val / test`` are disjoint by item. Composition triplets pair items of one category that
differ in one attribute or, FashionIQ-style, in two (:func:`composition_triplets`). The rendered pixels are cached
(``course_utils.cache``, kind ``"catalogue"``: bump its version in ``ARTIFACT_VERSIONS`` whenever rendering or
captions change), keyed by seed, sizes and knobs.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np
from tqdm.auto import tqdm

from ..cache import artifact_path, cached_artifact, load_npz, save_npz
from .records import ArrayImage, Catalogue, CompositionTriplet, Item, LoadReport
from .registry import register_catalogue
from .render import render_item

CATEGORY_NOUNS = {
    "tops": ("t-shirt", "top", "tee"),
    "shirts": ("shirt", "blouse"),
    "dresses": ("dress",),
    "skirts": ("skirt",),
    "trousers": ("trousers", "pants"),
    "shorts": ("shorts",),
    "outerwear": ("jacket", "coat"),
    "footwear": ("shoes", "sneakers"),
    "bags": ("bag", "handbag", "tote"),
}
# Which optional attributes each category has (a skirt has no sleeves).
CATEGORY_PARTS = {
    "tops": ("sleeve", "neckline"),
    "shirts": ("sleeve",),
    "dresses": ("sleeve", "neckline", "length"),
    "skirts": ("length",),
    "trousers": (),
    "shorts": (),
    "outerwear": ("sleeve", "length"),
    "footwear": (),
    "bags": (),
}
COLOUR_WEIGHTS = {
    "black": 16,
    "white": 12,
    "blue": 10,
    "navy": 8,
    "grey": 8,
    "red": 8,
    "beige": 6,
    "green": 6,
    "pink": 6,
    "brown": 5,
    "yellow": 4,
    "purple": 4,
    "orange": 4,
    "teal": 3,
}
PATTERN_WEIGHTS = {"solid": 40, "striped": 15, "checked": 12, "floral": 12, "graphic": 11, "dotted": 10}
FABRIC_WEIGHTS = {"cotton": 45, "denim": 20, "knit": 20, "leather": 15}
FABRICS_BY_CATEGORY = {"footwear": ("cotton", "knit", "leather"), "bags": ("cotton", "denim", "leather")}
SLEEVES = ("sleeveless", "short", "long")
NECKLINES = ("crew", "v-neck", "square")
LENGTHS = ("short", "knee", "long")
ATTRIBUTE_ORDER = ("category", "colour", "pattern", "fabric", "sleeve", "neckline", "length")
BRANDS = ("Lumo", "Northway", "Atelier Nine", "Kestrel", "Mira", "Urbano", "Solstice", "Fable & Co", "Tidewell", "Orla")

# Words used in captions and modification texts for each attribute value.
SLEEVE_WORDS = {"sleeveless": "sleeves cut off", "short": "short sleeves", "long": "long sleeves"}
SLEEVE_TITLE = {"sleeveless": "Sleeveless", "short": "Short-Sleeve", "long": "Long-Sleeve"}
LENGTH_WORDS = {"short": "short", "knee": "knee", "long": "long"}
NECKLINE_WORDS = {"crew": "round", "v-neck": "v-shape", "square": "square"}
PATTERN_WORDS = {
    "solid": "solid color",
    "striped": "striped",
    "checked": "checked",
    "floral": "floral",
    "graphic": "graphic",
    "dotted": "dotted",
}

SPLIT_NAMES = ("pretrain", "train", "val", "test")  # in catalogue order
SPLIT_SEED_OFFSET = {"train": 1, "val": 2, "test": 3}
PROFILE_SIZES = {
    "ci": {"pretrain": 4000, "train": 1200, "val": 200, "test": 500},
    "full": {"pretrain": 4000, "train": 4000, "val": 500, "test": 1000},  # same pretrain split as ci: one tiny CLIP
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that determines the catalogue; its hash keys the disk cache."""

    seed: int = 0
    pretrain: int = 4000
    train: int = 1200
    val: int = 200
    test: int = 500
    image_size: int = 64
    noise: float = 1.0  # nuisance strength (0 = clean centred renders)
    # A web caption keeps each attribute word with probability 0.7 * (1 - caption_dropout), so it omits it with
    # probability 0.3 + 0.7 * caption_dropout: about half the words (0.51) at the default 0.3, 0.3 at 0.
    caption_dropout: float = 0.3
    n_attributes: int = len(ATTRIBUTE_ORDER)  # how many attribute types vary (the rest stay fixed)
    web_captions_per_item: int = 3


def _weighted(rng: random.Random, weights: dict[str, int], allowed=None) -> str:
    names = [n for n in weights if allowed is None or n in allowed]
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def sample_attributes(rng: random.Random, n_attributes: int = len(ATTRIBUTE_ORDER)) -> dict[str, str]:
    """Draw one product's attributes; attribute types past ``n_attributes`` keep their first value."""
    varying = set(ATTRIBUTE_ORDER[:n_attributes])

    def pick(name, draw, fixed):
        return draw() if name in varying else fixed

    category = pick("category", lambda: rng.choice(list(CATEGORY_NOUNS)), "tops")
    fabrics = FABRICS_BY_CATEGORY.get(category)
    attributes = {
        "category": category,
        "colour": pick("colour", lambda: _weighted(rng, COLOUR_WEIGHTS), "black"),
        "pattern": pick("pattern", lambda: _weighted(rng, PATTERN_WEIGHTS), "solid"),
        "fabric": pick("fabric", lambda: _weighted(rng, FABRIC_WEIGHTS, fabrics), (fabrics or ("cotton",))[0]),
    }
    parts = CATEGORY_PARTS[category]
    if "sleeve" in parts:
        choices = SLEEVES[1:] if category == "outerwear" else SLEEVES
        attributes["sleeve"] = pick("sleeve", lambda: rng.choice(choices), "long")
    if "neckline" in parts:
        attributes["neckline"] = pick("neckline", lambda: rng.choice(NECKLINES), "crew")
    if "length" in parts:
        attributes["length"] = pick("length", lambda: rng.choice(LENGTHS), "knee")
    return attributes


def title_caption(attributes: dict, rng: random.Random) -> str:
    """Product title, e.g. ``"Kestrel Long-Sleeve Striped Navy Denim Shirt"``."""
    words = [rng.choice(BRANDS)]
    if "sleeve" in attributes:
        words.append(SLEEVE_TITLE[attributes["sleeve"]])
    if attributes["pattern"] != "solid":
        words.append(attributes["pattern"].title())
    words.append(attributes["colour"].title())
    if attributes["fabric"] != "cotton":
        words.append(attributes["fabric"].title())
    words.append(rng.choice(CATEGORY_NOUNS[attributes["category"]]).title())
    return " ".join(words)


def description_caption(attributes: dict, rng: random.Random) -> str:
    """Long DeepFashion-MultiModal-style description of every attribute."""
    noun = rng.choice(CATEGORY_NOUNS[attributes["category"]])
    fabric, pattern, colour = attributes["fabric"], PATTERN_WORDS[attributes["pattern"]], attributes["colour"]
    if "sleeve" in attributes:
        first = f"The {noun} has {SLEEVE_WORDS[attributes['sleeve']]}, {fabric} fabric and {pattern} patterns."
    else:
        first = rng.choice(
            [
                f"The {noun} is made of {fabric} fabric with {pattern} patterns.",
                f"This {noun} has {fabric} fabric and {pattern} patterns.",
            ]
        )
    sentences = [first, rng.choice([f"Its colour is {colour}.", f"It is {colour}.", f"The {noun} is {colour}."])]
    if "neckline" in attributes:
        sentences.append(f"The neckline of it is {NECKLINE_WORDS[attributes['neckline']]}.")
    if "length" in attributes:
        sentences.append(f"It is of {LENGTH_WORDS[attributes['length']]} length.")
    return " ".join(sentences)


def web_caption(attributes: dict, rng: random.Random, dropout: float) -> str:
    """A short, partial caption as found on the web, e.g. ``"striped shirt"`` or ``"navy denim"``.

    Each attribute word is kept with probability ``0.7 * (1 - dropout)`` (two draws: one against ``dropout``, one
    against 0.7); the category noun is added with probability 0.85, and always when no attribute word was kept.
    """
    words = []
    for name in ("colour", "pattern", "fabric", "sleeve", "length"):
        if name in attributes and rng.random() > dropout and rng.random() < 0.7:
            value = attributes[name]
            if name == "sleeve":
                value = {"sleeveless": "sleeveless", "short": "short sleeve", "long": "long sleeve"}[value]
            elif name == "length":
                value = {"short": "mini", "knee": "midi", "long": "maxi"}[value]
            elif name == "pattern" and value == "solid":
                value = "plain"
            words.append(value)
    if rng.random() < 0.85 or not words:
        words.append(rng.choice(CATEGORY_NOUNS[attributes["category"]]))
    return " ".join(words)


def modification_text(changes: dict[str, tuple[str, str]], style: str) -> str:
    """Phrase how the target differs from the reference, like Fashion200k or like FashionIQ."""
    if style == "fashion200k":
        ((name, (old, new)),) = changes.items()
        to_word = {"sleeve": SLEEVE_WORDS, "length": {k: f"{v} length" for k, v in LENGTH_WORDS.items()}}.get(name, {})
        return f"replace {to_word.get(old, old)} with {to_word.get(new, new)}"
    phrases = []
    for name, (old, new) in changes.items():
        if name == "sleeve":
            longer = SLEEVES.index(new) > SLEEVES.index(old)
            phrases.append(
                "is sleeveless" if new == "sleeveless" else f"has {'longer' if longer else 'shorter'} sleeves"
            )
        elif name == "length":
            phrases.append(f"is {'longer' if LENGTHS.index(new) > LENGTHS.index(old) else 'shorter'}")
        elif name == "fabric":
            phrases.append(f"is made of {new}")
        elif name == "neckline":
            phrases.append(f"has a {NECKLINE_WORDS[new]} neckline")
        else:
            phrases.append(f"is {PATTERN_WORDS.get(new, new) if name == 'pattern' else new}")
    return " and ".join(phrases)


def composition_triplets(
    items: list[Item], seed: int, max_changes: int = 2, single_change_share: float = 0.7
) -> list[CompositionTriplet]:
    """Pair items of one category that differ in exactly one attribute (or two, FashionIQ-style).

    Single changes are phrased half like Fashion200k ("replace red with blue") and half like FashionIQ
    ("is blue"); double changes (``max_changes=2``) like FashionIQ ("is striped and has longer sleeves").
    Each reference gets at most one target: a single change with probability ``single_change_share`` when
    one exists, otherwise the largest change available.
    """
    rng = random.Random(seed)
    changeable = ("colour", "pattern", "fabric", "sleeve", "neckline", "length")
    by_rest: dict[tuple, list[Item]] = defaultdict(list)
    for item in items:
        attrs = item.attributes
        for size in range(1, max_changes + 1):
            for varied in combinations([a for a in changeable if a in attrs], size):
                rest = tuple(sorted((k, v) for k, v in attrs.items() if k not in varied))
                by_rest[(varied, rest)].append(item)
    options: dict[tuple[str, int], list[tuple[Item, tuple]]] = defaultdict(list)
    for (varied, _), group in by_rest.items():
        for reference in group:
            for target in group:
                if all(reference.attributes[a] != target.attributes[a] for a in varied):
                    options[reference.item_id, len(varied)].append((target, varied))
    triplets = []
    for reference in items:
        available = [n for n in range(1, max_changes + 1) if options[reference.item_id, n]]
        if not available:
            continue
        n_changes = available[0] if rng.random() < single_change_share else available[-1]
        target, varied = rng.choice(options[reference.item_id, n_changes])
        changes = {a: (reference.attributes[a], target.attributes[a]) for a in varied}
        style = "fashioniq" if len(varied) > 1 or rng.random() < 0.5 else "fashion200k"
        triplets.append(
            CompositionTriplet(reference.item_id, modification_text(changes, style), target.item_id, changes, style)
        )
    return triplets


def _describe(config: SyntheticConfig) -> list[dict]:
    """Attributes, captions and split of every item (cheap; the pixels are rendered separately)."""
    rng = random.Random(config.seed)
    splits = [name for name in SPLIT_NAMES for _ in range(getattr(config, name))]
    records = []
    for index, split in enumerate(splits):
        attributes = sample_attributes(rng, config.n_attributes)
        captions = [title_caption(attributes, rng), description_caption(attributes, rng)]
        captions += [web_caption(attributes, rng, config.caption_dropout) for _ in range(config.web_captions_per_item)]
        styles = ["title", "description"] + ["web"] * config.web_captions_per_item
        records.append(
            {
                "item_id": f"syn-{index:06d}",
                "split": split,
                "attributes": attributes,
                "captions": captions,
                "caption_styles": styles,
            }
        )
    return records


def _render_all(records: list[dict], config: SyntheticConfig) -> np.ndarray:
    pixels = np.empty((len(records), config.image_size, config.image_size, 3), np.uint8)
    for index, record in enumerate(tqdm(records, desc="rendering catalogue", leave=False)):
        item_rng = np.random.default_rng([config.seed, index])
        pixels[index] = render_item(record["attributes"], item_rng, config.image_size, config.noise)
    return pixels


def _build_catalogue(records: list[dict], pixels: np.ndarray, config: SyntheticConfig) -> Catalogue:
    items = [
        Item(
            r["item_id"],
            tuple(r["captions"]),
            tuple(r["caption_styles"]),
            r["attributes"],
            r["split"],
            ArrayImage(pixels, i),
        )
        for i, r in enumerate(records)
    ]
    triplets = []
    for split in ("train", "val", "test"):
        split_items = [item for item in items if item.split == split]
        triplets += composition_triplets(split_items, seed=config.seed * 10 + SPLIT_SEED_OFFSET[split])
    report = LoadReport(dataset="synthetic", rows_read=len(items))
    return Catalogue("synthetic", items, report, triplets, ATTRIBUTE_ORDER, match_attributes=("category", "colour"))


KNOBS = tuple(name for name in SyntheticConfig.__dataclass_fields__ if name not in ("seed", *SPLIT_NAMES))


def _split_sizes(size: str | dict) -> dict[str, int]:
    """The item count of each split named by ``size`` (see :func:`load_synthetic`); ``ValueError`` naming ``size``
    and what it accepts for an unknown profile, an unknown split name or a count that is not a whole number >= 0."""
    if isinstance(size, str):
        if size not in PROFILE_SIZES:
            raise ValueError(
                f"unknown catalogue size {size!r}; use one of {sorted(PROFILE_SIZES)} or a dict of split sizes"
            )
        return PROFILE_SIZES[size]
    if not isinstance(size, dict):
        raise ValueError(f"size must be one of {sorted(PROFILE_SIZES)} or a dict of split sizes, got {size!r}")
    unknown = sorted(set(size) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"size: unknown split names {unknown}; the splits are {list(SPLIT_NAMES)}")
    for split, count in size.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"size[{split!r}] must be a whole number of items >= 0, got {count!r}")
    return size


@register_catalogue("synthetic")
def load_synthetic(size: str | dict = "ci", seed: int = 0, use_cache: bool = True, **knobs) -> Catalogue:
    """Generate (or load from cache) the procedural catalogue.

    Args:
        size: ``"ci"`` or ``"full"`` (see ``PROFILE_SIZES``), or a dict of item counts per split, keys from
            ``SPLIT_NAMES``; a split the dict leaves out keeps its ``ci`` size (``{"train": 50}`` still has 4000
            pretrain items), so name every split, with 0 for those you do not need, to keep a catalogue small.
        seed: catalogue seed; the same seed, sizes and knobs give the same catalogue, pixel for pixel.
        use_cache: read/write ``data/cache/synthetic/<key>.npz``.
        **knobs: ``image_size``, ``noise``, ``caption_dropout``, ``n_attributes``, ``web_captions_per_item``
            (``KNOBS``; split sizes go in ``size``).

    Raises:
        ValueError: an unknown ``size`` or knob, naming the parameter and what it accepts.
    """
    sizes = _split_sizes(size)
    misplaced = sorted(set(knobs) & set(SPLIT_NAMES))
    if misplaced:
        example = ", ".join(f"{split!r}: {knobs[split]!r}" for split in misplaced)
        raise ValueError(f"{misplaced} are split sizes, not options: pass them in size, e.g. size={{{example}}}")
    unknown = sorted(set(knobs) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown synthetic catalogue options {unknown}; the options are {list(KNOBS)}")
    config = SyntheticConfig(seed=seed, **sizes, **knobs)
    if not 1 <= config.n_attributes <= len(ATTRIBUTE_ORDER):
        raise ValueError(f"n_attributes must be between 1 and {len(ATTRIBUTE_ORDER)}")
    records = _describe(config)
    expected_shape = (len(records), config.image_size, config.image_size, 3)

    def check_pixels(pixels: np.ndarray) -> None:
        if pixels.shape != expected_shape or pixels.dtype != np.uint8:
            raise ValueError(f"pixels {pixels.dtype}{pixels.shape}, expected uint8{expected_shape}")

    pixels = cached_artifact(
        artifact_path("catalogue", asdict(config), suffix=".npz", folder="synthetic"),
        lambda: _render_all(records, config),
        use_cache,
        save=save_npz,
        load=load_npz,
        validate=check_pixels,
    )
    return _build_catalogue(records, pixels, config)
