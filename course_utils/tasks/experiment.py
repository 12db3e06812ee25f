"""The set-up every notebook shares: catalogue x model (CLIP_benchmark's "dataset x model").

``load_experiment`` turns a notebook's parameters (dataset, data_root, model, pretrained, profile, seed, device)
into a catalogue with its splits and a model bundle; ``pretrained="embedded"`` runs (or loads) the tiny CLIP's
pretraining task on drawings, ``pretrained="photo"`` the course CLIP's pretraining on the real catalogue's own
``train`` photos (the ``real`` profiles).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..checks import is_whole_number
from ..data import Catalogue, load_catalogue
from ..data.registry import loader_accepts
from ..data.synthetic import ATTRIBUTE_ORDER as DRAWING_ATTRIBUTES
from ..models import TINY_MODEL, ClipBundle, load_clip
from ..seeding import seed_everything
from .photo_pretrain import photo_recipe, pretrained_photo_clip
from .pretrain import pretrained_tiny_clip


@dataclass
class Experiment:
    """A catalogue, its splits and a model bundle: what a notebook evaluates."""

    catalogue: Catalogue
    bundle: ClipBundle
    train: Catalogue
    test: Catalogue
    query_style: str | None  # caption style used as text queries (None: first caption)

    @property
    def query_caption_style(self) -> str:
        """The name of the queries' caption style: ``query_style``, or for None the items' first caption's style
        (``"title"`` on Fashion Product Images)."""
        return self.query_style or self.test[0].caption_styles[0]


def load_experiment(
    dataset: str = "synthetic",
    data_root: str | None = None,
    model: str = "tiny-fashion-clip",
    pretrained: str | None = "embedded",
    profile: str = "ci",
    seed: int = 0,
    device: str = "auto",
    test_size: int | None = None,
    train_size: int | None = None,
) -> Experiment:
    """Load the catalogue and the model named by a notebook's parameters.

    Args:
        dataset: ``"synthetic"`` (embedded default) or a real format (see ``cu.data.available_catalogues()``).
        data_root: folder of a real dataset.
        model, pretrained: see :func:`course_utils.models.load_clip`; ``"embedded"`` pretrains the tiny CLIP
            on the procedural catalogue (:func:`course_utils.tasks.pretrain.pretrained_tiny_clip`, cached);
            ``"photo"`` pretrains ``model`` (e.g. ``"photo-clip-resnet10t"``) from random initialisation on the
            real catalogue's ``train`` split (:func:`course_utils.tasks.photo_pretrain.pretrained_photo_clip`,
            cached).
        profile: ``"ci"`` or ``"full"`` — the procedural catalogue's size; ``"real"`` or ``"real-ci"`` — the
            length of the photo pretraining (:func:`course_utils.tasks.photo_pretrain.photo_recipe`).
        seed: catalogue and training seed.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        test_size: keep only the first ``test_size`` test items (real datasets can be large); a whole number
            >= 1, or ``None`` for the whole test split.
        train_size: keep only the first ``train_size`` train items (a shorter fine-tuning); the same rule.
    """
    check_split_size("test_size", test_size)
    check_split_size("train_size", train_size)
    if pretrained == "photo" and dataset == "synthetic":
        raise ValueError(
            "pretrained='photo' pretrains on a real catalogue's photos: set dataset (e.g. "
            "'fashion-product-small') and data_root, or use pretrained='embedded' on 'synthetic'"
        )
    seed_everything(seed)
    if dataset == "synthetic":
        catalogue = load_catalogue("synthetic", data_root, size=profile, seed=seed)
    else:
        catalogue = load_catalogue(dataset, data_root, **({"seed": seed} if loader_accepts(dataset, "seed") else {}))
    check_experiment_catalogue(catalogue)
    # The embedded tiny CLIP is always pretrained on the procedural catalogue (real datasets have no 'pretrain').
    if pretrained == "embedded":
        if model != TINY_MODEL:
            raise ValueError(
                f"pretrained='embedded' exists only for {TINY_MODEL!r}; for {model!r} use an open_clip "
                "tag or a checkpoint path"
            )
        pretrain_catalogue = (
            catalogue if dataset == "synthetic" else load_catalogue("synthetic", size=profile, seed=seed)
        )
        bundle = pretrained_tiny_clip(pretrain_catalogue, device=device)
    elif pretrained == "photo":
        bundle = pretrained_photo_clip(catalogue, photo_recipe(model, profile, seed), device=device)
    else:
        bundle = load_clip(model, pretrained, device=device)
    test, train = first_items(catalogue.split("test"), test_size), first_items(catalogue.split("train"), train_size)
    query_style = "description" if dataset == "synthetic" else None
    return Experiment(catalogue, bundle, train, test, query_style)


def check_split_size(name: str, size: int | None) -> None:
    """Refuse a split's size (the parameter ``name``: ``test_size``, ``train_size``) unless it is ``None`` or a whole
    number >= 1. load_experiment calls it before the model loads, notebook 06 before its fine-tuning: a bad size stops a
    run before minutes of training."""
    split = name.split("_")[0]
    if size is not None and not is_whole_number(size, minimum=1):
        raise ValueError(f"{name} must be a whole number >= 1 (or None for the whole {split} split), got {size!r}")


def first_items(split: Catalogue, size: int | None) -> Catalogue:
    """The first ``size`` items of ``split`` (all of them for ``None`` or a larger size): how ``test_size`` and
    ``train_size`` cut a split (notebook 06 cuts its train split after the fine-tuning, which keeps 02's model)."""
    return split.subset(split.ids[:size], name=split.name) if size is not None and len(split) > size else split


def check_experiment_catalogue(catalogue: Catalogue) -> None:
    """Raise ``ValueError`` saying what ``catalogue`` lacks unless it has what every notebook uses: a ``train`` and
    a ``test`` split and a caption on every item (the text queries and the fine-tuning read them).

    FashionIQ has neither (its official test split has no targets, and its items' text is the relative captions of
    its triplets): without this check it would fail deep inside a notebook with ``unknown split 'test'``.
    """
    splits = sorted({item.split for item in catalogue})
    lacking = [f"a {name!r} split (it has {splits})" for name in ("train", "test") if name not in splits]
    uncaptioned = sum(not item.captions for item in catalogue)
    if uncaptioned:
        lacking.append(f"captions ({uncaptioned:,} of its {len(catalogue):,} items have none)")
    if lacking:
        raise ValueError(
            f"{catalogue.name} cannot run in the course's notebooks: it lacks {' and '.join(lacking)}. Use a "
            "dataset whose items have captions and a test split (e.g. 'fashion-product-small'), or explore this "
            f"one with cu.data.load_catalogue({catalogue.name!r}, root) and its .triplets."
        )


def exercises_scope(experiment: Experiment, searched: str = "test") -> str:
    """Markdown for the top of a notebook's exercises: the catalogue they run on and its attribute names.

    The exercises and their worked solutions are written for the embedded drawings (the ``ci`` profile, where
    ``tests/test_solutions.py`` checks them). On a real catalogue an exercise that names a drawing attribute
    (``colour``, ``category``, ...) or a gallery size needs translating: this says into what.

    Args:
        experiment: the notebook's experiment.
        searched: what the notebook searches, and so what its size counts: ``"test"``, the test split (notebooks
            01-07), or ``"catalogue"``, every item (notebook 08 embeds and indexes the whole catalogue).
    """
    catalogue = experiment.catalogue
    # what the scope counts: on the drawings (counted) and on a real catalogue (sized)
    if searched == "test":
        items, split = len(experiment.test), len(catalogue.split("test"))
        counted = f"{items:,} test items"
        sized = f"its test split has {split:,} items, so a gallery size or `test_size` above that is not available"
        if items < split:  # test_size kept the first items
            sized += f" (this run searched the first {items:,}: `test_size`)"
    elif searched == "catalogue":
        counted = f"{len(catalogue):,} items, the whole catalogue"
        sized = f"the catalogue has {len(catalogue):,} items"
    else:
        raise ValueError(f'searched={searched!r}: use "test" (the test split) or "catalogue" (every item)')
    attributes = ", ".join(f"`{name}`" for name in catalogue.attribute_names)
    kind = " and ".join(f"`{name}`" for name in catalogue.match_attributes)
    if catalogue.name == "synthetic":
        return (
            f"The exercises run on this run's catalogue, the embedded drawings ({counted}; "
            f"attributes {attributes}; two items are the same kind of product when they share {kind})."
        )
    drawn = ", ".join(f"`{name}`" for name in DRAWING_ATTRIBUTES)
    return (
        f"**This run used {catalogue.name}**, not the drawings the exercises are written for (set "
        '`dataset="synthetic"` and `profile="ci"` to run them as written). To try them here, translate: '
        f"the drawings' attributes ({drawn}) become this catalogue's {attributes}; two items are the same "
        f"kind of product when they share {kind}; and {sized}."
    )


def names_value(text: str, value: object) -> bool:
    """Whether ``text`` names ``value`` as a whole word or phrase, in any case ("Black" in "Nike Men Black T-shirt",
    not "Red" in "Reebok")."""
    return re.search(rf"\b{re.escape(str(value))}\b", text, re.IGNORECASE) is not None


def stated_share(items: Catalogue, queries: Sequence[str], attribute: str) -> float:
    """Share of the ``items`` labelled ``attribute`` whose query (``queries[i]`` for ``items[i]``) names that label
    (:func:`names_value`); 0 when no item has the attribute."""
    stated = [
        names_value(query, item.attributes[attribute])
        for item, query in zip(items, queries)
        if attribute in item.attributes
    ]
    return sum(stated) / len(stated) if stated else 0.0
