"""Task: pretrain the course's own CLIP on real product photos (the real-data profile; issue 14).

The embedded tiny CLIP (``tasks.pretrain``) is pretrained on procedural drawings and learns little from real
photos. This recipe pretrains a course CLIP from random initialisation on a real catalogue's ``train`` split
(e.g. *Fashion Product Images*, ``data.fashion_product``):

* **tower and resolution** — a small convolutional image tower from timm through an open_clip JSON config
  (``models/model_configs/photo-clip-*.json``, at the photos' native 80 x 60 pixels), or the tiny ViT at a chosen
  size;
* **augmentation that keeps colour** — random resized crops and horizontal flips, never hue or saturation jitter:
  colour is an attribute the queries ask for (:func:`random_resized_crops`, on the whole batch at once);
* **caption sampling** — each item's caption is drawn per epoch from its product title or, at
  ``description_rate``, its generated description (:class:`MixedCaptionDataset`);
* **duplicate titles handled** — every caption that describes an image of the batch (an identical title or an
  identical description) is a positive in :func:`~course_utils.losses.multi_positive_contrastive_loss`, never a
  negative (:func:`caption_positives`);
* **attributes taught** — a second term of the same loss, weighted ``attribute_weight``, whose positives also
  include every pair of items of the same kind (the catalogue's ``match_attributes``: article type and colour in
  Fashion Product Images; :func:`attribute_positives`): a query for "black t-shirt" should rank every black t-shirt
  above a blue one, not only its own item (measured over seeds in ``benchmarks/README.md``: it raises
  attribute-match and exact-item recall alike).

The weights are cached through ``course_utils.cache`` keyed by model config, data fingerprint and recipe. The
evaluation (:func:`evaluate_photo_retrieval`) uses items training never sees (:func:`held_out_gallery`) with
product titles as queries (descriptions in a catalogue without titles, such as DeepFashion-MultiModal), and
reports exact-item recall, recall where any item of identical title counts (:func:`title_aware_recall`),
attribute-match recall and the chance level of each.

That gallery is drawn from ``val`` and ``test`` together (the sample's ``val`` alone is too small), and
:data:`PHOTO_RECIPE` was chosen by ``benchmarks/bench_photo_pretrain.py`` on it: it is a validation set for the
recipe, not an untouched test set, and a real-profile ``test`` recall is of a recipe partly chosen on those items
(``benchmarks/README.md`` says the same).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import artifact_key, artifact_path, cached_artifact
from ..data.adapters import ImageTextDataset
from ..data.records import Catalogue, CorruptImage, Item
from ..embed import encode_images, encode_texts
from ..losses import multi_positive_contrastive_loss
from ..metrics import (
    attribute_match_counts,
    attribute_match_recall,
    mean_chance_recall,
    recall_at_k,
    same_value_mask,
)
from ..models.clip_loader import ClipBundle, resolve_device
from ..models.tiny_clip import course_clip_config, create_course_clip
from ..seeding import seed_everything
from ..train import UNREADABLE_LEFT_OUT, TrainConfig, clamp_logit_scale, contrastive_batch_loss, fit, recipe_key

LOG = logging.getLogger(__name__)

TITLE, DESCRIPTION = "title", "description"


@dataclass(frozen=True)
class PhotoRecipe:
    """How the course CLIP is pretrained on real photos (every field is part of the cache key)."""

    model: str = "photo-clip-resnet10t"  # a config in models/model_configs/
    image_size: tuple[int, int] | None = None  # (height, width) input; None: the config's (80 x 60 for photo-clip-*)
    train: TrainConfig = field(  # its training minutes on 2 cores: benchmarks/README.md › bench_photo_pretrain.py
        default_factory=lambda: TrainConfig(epochs=22, batch_size=128, lr=2e-3, weight_decay=0.1, warmup_steps=40)
    )
    description_rate: float = 0.25  # share of captions drawn from the generated description instead of the title
    crop_scale: float = 0.7  # random resized crops keep at least this share of the image area
    flip: bool = True  # random horizontal flips
    multi_positive: bool = True  # identical captions in a batch are positives (False: plain CLIP loss)
    attribute_weight: float = 1.0  # weight of a second loss whose positives also share match_attributes (0: none)
    # The image tower's conv weights channels-last (see pretrained_photo_clip): faster on CPU, other rounding. Off
    # while the committed real-profile records (results/real/) are those of the contiguous layout.
    channels_last: bool = False

    def __post_init__(self):
        if not 0.0 <= self.description_rate <= 1.0:
            raise ValueError(f"description_rate must be in [0, 1], got {self.description_rate}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.attribute_weight < 0 or (self.attribute_weight and not self.multi_positive):
            raise ValueError(
                f"attribute_weight must be >= 0 and needs multi_positive=True, got "
                f"{self.attribute_weight} (multi_positive={self.multi_positive})"
            )


PHOTO_RECIPE = PhotoRecipe()
# The real profile's recipe, and the real-ci profile's shorter one (the test suite's real-photo run).
PROFILE_EPOCHS = {"real": PHOTO_RECIPE.train.epochs, "real-ci": 6}


def photo_recipe(model: str, profile: str = "real", seed: int = 0) -> PhotoRecipe:
    """:data:`PHOTO_RECIPE` for the image tower ``model``, trained for the epochs of ``profile`` (``"real"``, the
    measured recipe, or ``"real-ci"``, a short run for the test suite) from initialisation and data order ``seed``.

    Raises:
        ValueError: an unknown profile or model config (names the choices).
    """
    if profile not in PROFILE_EPOCHS:
        raise ValueError(
            f"pretrained='photo' runs in the profiles {sorted(PROFILE_EPOCHS)}, not {profile!r}: "
            f"run with --profile real (or real-ci)"
        )
    course_clip_config(model)  # a clear error for an unknown model config
    return replace(
        PHOTO_RECIPE, model=model, train=replace(PHOTO_RECIPE.train, epochs=PROFILE_EPOCHS[profile], seed=seed)
    )


# --- data: held-out split, augmentation, caption sampling ---------------------------------------------------------


def held_out_gallery(catalogue: Catalogue, size: int = 1000, seed: int = 0) -> Catalogue:
    """``size`` items drawn (seeded) from the items outside the ``train`` split: a gallery training never sees.

    The draw mixes ``val`` and ``test`` items. ``benchmarks/bench_photo_pretrain.py`` chose :data:`PHOTO_RECIPE` on
    this gallery, so it measures a recipe tuned on it, and it overlaps the notebooks' ``test`` split: neither is an
    untouched test set for that recipe.

    Args:
        catalogue: a catalogue with a ``train`` split and others (``val``/``test``).
        size: gallery size.
        seed: seed of the draw; the items keep their catalogue order.

    Raises:
        ValueError: fewer than ``size`` items outside ``train``.
    """
    candidates = [item.item_id for item in catalogue if item.split != "train"]
    if len(candidates) < size:
        raise ValueError(
            f"{catalogue.name}: only {len(candidates)} items outside the train split, fewer than the gallery size "
            f"{size}; use a smaller gallery or load the catalogue with larger val/test split fractions"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(candidates), size=size, replace=False))
    return catalogue.subset([candidates[i] for i in chosen], name=f"{catalogue.name}/held-out-{size}")


def random_resized_crops(
    images: torch.Tensor, crop_scale: float, flip: bool, max_aspect_change: float = 1.15
) -> torch.Tensor:
    """Colour-keeping augmentation of a whole batch: a random resized crop (and flip) per image, nothing else.

    Each output image shows a random window of its input drawn to cover ``[crop_scale, 1]`` of the area, whose aspect
    ratio differs from the image's by at most ``max_aspect_change``, resampled bilinearly to the input size and
    mirrored with probability 1/2 when ``flip``. A side that would outgrow the image is cut to it, so a drawn area
    near 1 with a changed aspect keeps less: ``crop_scale=1`` still crops up to about 7 % of the area at the default
    aspect change, and keeps the whole image only with ``max_aspect_change=1``. It is a per-image affine
    resampling of each channel, so colours are never changed (no hue, saturation or brightness jitter: colour is an
    attribute the queries ask for). One call on the batch (``F.grid_sample``) replaces a per-image PIL pipeline that
    cost ~1 ms per photo on a CPU. Draws from torch's global RNG (seeded by ``fit``).

    Args:
        images: ``(B, C, H, W)`` float images (normalised or not: resampling commutes with per-channel scaling).
        crop_scale: smallest share of the image area a crop keeps, in ``(0, 1]``.
        flip: mirror half of the images left-right.
        max_aspect_change: largest factor between the crop's aspect ratio and the image's.

    Returns:
        ``(B, C, H, W)`` augmented images.
    """
    size = images.shape[0]
    area = torch.empty(size).uniform_(crop_scale, 1.0)
    aspect = torch.empty(size).uniform_(-1.0, 1.0).mul(float(np.log(max_aspect_change))).exp()
    width, height = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)  # shares of the side
    centre_x = (torch.rand(size) * 2 - 1) * (1 - width)  # in [-1, 1] coordinates, window inside the image
    centre_y = (torch.rand(size) * 2 - 1) * (1 - height)
    mirror = torch.where(torch.rand(size) < 0.5, -1.0, 1.0) if flip else torch.ones(size)
    theta = torch.zeros(size, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * mirror, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def with_augmentation(
    batch_loss: Callable[[torch.nn.Module, dict], torch.Tensor], crop_scale: float, flip: bool
) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """``batch_loss`` on the batch with its images augmented by :func:`random_resized_crops`."""

    def augmented_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        return batch_loss(model, {**batch, "image": random_resized_crops(batch["image"], crop_scale, flip)})

    return augmented_loss


class MixedCaptionDataset(ImageTextDataset):
    """(image, caption) pairs whose caption is the title or, at ``description_rate``, the description.

    The draw depends only on ``(seed, epoch, index)``, so a run is reproducible and every epoch sees new mixes.
    Items without a description always use their title, items without a title their description. Each image is
    decoded and preprocessed (the model's evaluation transform) once and kept in memory as float16 (29 KB for a
    80 x 60 input); the batch is augmented afterwards, all at once (:func:`with_augmentation`). An unreadable image
    yields ``{"skipped": item_id}``.
    """

    def __init__(self, catalogue: Catalogue, preprocess: Callable | None, description_rate: float, seed: int = 0):
        super().__init__(catalogue, preprocess, seed=seed)  # no one style: caption_for picks title or description
        self.description_rate = description_rate
        self.pixels: dict[int, torch.Tensor] = {}

    def __getitem__(self, index: int) -> dict:
        sample = {"text": self.caption_for(index), "index": index}
        if self.preprocess is None:
            return sample
        if index not in self.pixels:
            try:
                self.pixels[index] = self.preprocess(self.catalogue[index].image).to(torch.float16)
            except (CorruptImage, FileNotFoundError):
                return {"skipped": self.catalogue[index].item_id}  # counted by fit, as ImageTextDataset does
        return {**sample, "image": self.pixels[index].to(torch.float32)}

    def caption_for(self, index: int) -> str:
        item = self.catalogue[index]
        descriptions = item.captions_of(DESCRIPTION)
        draw = np.random.default_rng([self.seed, self.epoch, index, 1]).random()
        if descriptions and (draw < self.description_rate or not item.captions_of(TITLE)):
            return descriptions[0]  # catalogues without titles (DeepFashion-MultiModal) always use descriptions
        return item.caption(TITLE)


def caption_positives(catalogue: Catalogue, indices: Sequence[int], texts: Sequence[str]) -> torch.Tensor:
    """``(B, B) bool``: ``[i, j]`` True when caption ``texts[j]`` is one of item ``indices[i]``'s own captions.

    Items sharing a title (or a generated description) thus count as positives of each other's captions.
    """
    caption_sets = [set(catalogue[int(i)].captions) for i in indices]
    return torch.tensor([[text in captions for text in texts] for captions in caption_sets], dtype=torch.bool)


def required_match_attributes(catalogue: Catalogue) -> tuple[str, ...]:
    """The catalogue's ``match_attributes``; ``ValueError`` naming the catalogue when its loader declares none."""
    if not catalogue.match_attributes:
        raise ValueError(
            f"catalogue {catalogue.name!r} declares no match_attributes (the attributes two items of the same kind "
            "share, e.g. article type and colour); pass match_attributes=... to Catalogue in its loader"
        )
    return catalogue.match_attributes


def kind_keys(catalogue: Catalogue, indices: Sequence[int], attributes: Sequence[str] | None = None) -> list[tuple]:
    """One key per item of ``indices``: its values of ``attributes`` (default: the catalogue's
    ``match_attributes``), or a key of its own when it lacks one of them, so that it matches only itself. Two items
    are "of the same kind" when their keys are equal: pretraining's positives (:func:`attribute_positives`) and the
    attribute-match recall of :func:`evaluate_photo_retrieval` read the same rule."""
    attributes = required_match_attributes(catalogue) if attributes is None else attributes
    keys = []
    for index in indices:
        values = catalogue[int(index)].attributes
        keys.append(
            tuple(values[name] for name in attributes)
            if all(name in values for name in attributes)
            else ("unmatched", int(index))
        )
    return keys


def attribute_positives(
    catalogue: Catalogue, indices: Sequence[int], attributes: Sequence[str] | None = None
) -> torch.Tensor:
    """``(B, B) bool``: items ``indices[i]`` and ``indices[j]`` are of the same kind (:func:`kind_keys`: the same
    value of every one of ``attributes``; an item missing one of them matches only itself)."""
    keys = kind_keys(catalogue, indices, attributes)
    return same_value_mask(keys, keys)


def multi_positive_batch_loss(
    tokenizer: Callable, catalogue: Catalogue, attribute_weight: float = 0.0
) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """The per-batch loss of photo pretraining: encode both sides, then the multi-positive contrastive loss, plus
    ``attribute_weight`` times the same loss whose positives also include every pair of the same article type and
    colour (:func:`attribute_positives`).

    One process only (``fit`` under ``torchrun`` would need the positives of the gathered global batch).
    """

    def batch_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        device = model.logit_scale.device
        image_features = F.normalize(model.encode_image(batch["image"].to(device)), dim=-1)
        text_features = F.normalize(model.encode_text(tokenizer(batch["text"]).to(device)), dim=-1)
        indices = batch["index"].tolist()
        positives = caption_positives(catalogue, indices, batch["text"]).to(device)
        loss = multi_positive_contrastive_loss(image_features, text_features, model.logit_scale, positives)
        if attribute_weight:
            shared = positives | attribute_positives(catalogue, indices).to(device)
            loss = loss + attribute_weight * multi_positive_contrastive_loss(
                image_features, text_features, model.logit_scale, shared
            )
        return loss

    return batch_loss


# --- the cached pretraining ---------------------------------------------------------------------------------------


#: Recipe fields added after models were cached, with the value that computes as before they existed: left out of
#: the key at that value, so those caches still hit.
LATER_RECIPE_FIELDS = {"channels_last": False}


def photo_key_parts(train: Catalogue, recipe: PhotoRecipe, device: str | torch.device) -> dict:
    """What the pretrained weights depend on: model config, data and recipe (with the precision its training runs
    in on ``device``)."""
    recipe_fields = {
        name: value
        for name, value in asdict(recipe).items()
        if not (name in LATER_RECIPE_FIELDS and value == LATER_RECIPE_FIELDS[name])
    }
    recipe_fields["train"] = recipe_key(recipe.train, device)
    return {
        "model": json.loads(course_clip_config(recipe.model)),
        "data": train.fingerprint(),
        "recipe": recipe_fields,
    }


def photo_clip_path(train: Catalogue, recipe: PhotoRecipe, device: str | torch.device) -> Path:
    """Where the weights pretrained by ``recipe`` on the ``train`` split on ``device`` are cached
    (``data/cache/photo-clip/``)."""
    return artifact_path("photo-clip", photo_key_parts(train, recipe, device), prefix=recipe.model)


def pretrained_photo_clip(
    catalogue: Catalogue,
    recipe: PhotoRecipe = PHOTO_RECIPE,
    device: str | torch.device = "cpu",
    use_cache: bool = True,
    progress: bool = True,
    evaluate: Callable[[ClipBundle], dict] | None = None,
) -> ClipBundle:
    """The course CLIP pretrained from random initialisation on ``catalogue``'s ``train`` split (cached).

    Args:
        catalogue: a real catalogue with ``title`` (and ``description``) captions and a ``train`` split.
        recipe: tower, resolution, augmentation, caption sampling, loss and optimiser; part of the cache key.
        device: where to train.
        use_cache: reuse/write ``data/cache/photo-clip/``.
        progress: show a progress bar.
        evaluate: called with the model being trained every ``recipe.train.eval_every`` steps and at the end of a
            training run (e.g. ``lambda b: evaluate_photo_retrieval(b, gallery)``); not called on a cache hit.

    Returns:
        A :class:`ClipBundle` whose ``preprocess`` is the evaluation transform (resize, no augmentation) and whose
        ``history`` holds the loss curve.
    """
    device = resolve_device(device)
    train = catalogue.split("train")
    path = photo_clip_path(train, recipe, device)
    seed_everything(recipe.train.seed)
    model, preprocess, tokenizer = create_course_clip(recipe.model, device, recipe.image_size)
    if recipe.channels_last:
        # oneDNN's convolutions run faster on CPU with the weights (and so the activations) laid out channels-last
        # (a whole run gains less than one step: benchmarks/README.md › Memory layout); the same model and maths,
        # rounded differently, hence a recipe field. Set before the weights are trained or loaded, so a cached model
        # computes exactly as a fresh one.
        model.visual.to(memory_format=torch.channels_last)

    key = artifact_key(path)

    def bundle(history: list[dict] | None) -> ClipBundle:
        return ClipBundle(
            model,
            preprocess,
            tokenizer,
            int(model.text_projection.shape[1]),
            f"open_clip:{recipe.model}:photo-{key}",
            device,
            history=history,
            checkpoint_path=path if use_cache else None,
        )

    trained_now = []
    initial = copy.deepcopy(model.state_dict())  # validate loads a cached file into model, even one it then rejects

    def build() -> dict:
        trained_now.append(True)
        model.load_state_dict(initial)  # from the seeded initialisation, even after a rejected cache file
        dataset = MixedCaptionDataset(train, preprocess, recipe.description_rate, seed=recipe.train.seed)
        loss = (
            multi_positive_batch_loss(tokenizer, train, recipe.attribute_weight)
            if recipe.multi_positive
            else contrastive_batch_loss(tokenizer)
        )
        loss = with_augmentation(loss, recipe.crop_scale, recipe.flip)
        result = fit(
            model,
            dataset,
            loss,
            recipe.train,
            device=device,
            progress=progress,
            after_step=clamp_logit_scale,
            evaluate=(lambda: evaluate(bundle(None))) if evaluate else None,
        )
        return {"model": model.state_dict(), "history": result.steps, "skipped_items": result.skipped_items}

    state = cached_artifact(path, build, use_cache, validate=lambda s: model.load_state_dict(s["model"]))
    if state.get("skipped_items") and not trained_now:  # fit reported them itself
        LOG.warning(f"{path.name} (read from the cache): {UNREADABLE_LEFT_OUT}", state["skipped_items"])
    model.load_state_dict(state["model"])
    model.eval()
    return bundle(state["history"])


# --- evaluation ---------------------------------------------------------------------------------------------------


def query_caption(item: Item) -> str:
    """The text an item is searched by: its title, or its first caption when it has none (DeepFashion-MultiModal
    has only descriptions)."""
    titles = item.captions_of(TITLE)
    return titles[0] if titles else item.captions[0]


def title_aware_recall(
    similarity: torch.Tensor, titles: Sequence[str], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, dict[int, float]]:
    """Text->image recall with titles as queries, counted two ways (both under ``metrics``' tie convention).

    Args:
        similarity: ``(n, n)`` scores of item i's title (row) against item j's image (column).
        titles: the n titles.
        ks: cut-offs.

    Returns:
        ``{"exact": {K: recall}, "same title": {K: recall}}``: a hit is the item itself, or any item whose title is
        identical to the query's (the query cannot tell such items apart).
    """
    exact = recall_at_k(similarity, torch.arange(len(titles)), ks)
    return {"exact": exact, "same title": recall_at_k(similarity, same_value_mask(titles, titles), ks)}


def evaluate_photo_retrieval(
    bundle: ClipBundle, gallery: Catalogue, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Titles as queries against the gallery's images: exact, same-title and attribute-match recall, with chance.

    Returns:
        ``{"exact R@K", "same-title R@K", "attribute-match R@K", "attribute-match-others R@K", "chance exact R@K",
        "chance same-title R@K", "chance attribute-match R@K", "chance attribute-match-others R@K"}`` for each K;
        attribute match means the same values of the gallery's ``match_attributes`` as the query's item
        (``articleType`` and ``baseColour`` in Fashion Product Images; an item missing one matches only itself, as
        in pretraining: :func:`kind_keys`). The query's own item is in the gallery, so
        attribute-match counts every exact hit too; attribute-match-others ranks the gallery without it, so only
        other items of those values count (a query whose values no other item has is a miss). In a catalogue without
        titles the queries are the descriptions (:func:`query_caption`).
    """
    titles = [query_caption(item) for item in gallery]
    images = encode_images(bundle, gallery, progress=False)
    queries = encode_texts(bundle, titles, progress=False)
    similarity = queries @ images.T
    recalls = title_aware_recall(similarity, titles, ks)
    # the kind as pretraining reads it: an item missing a match attribute is of a kind of its own
    kinds = [{"kind": key} for key in kind_keys(gallery, range(len(gallery)))]
    recalls["attribute-match"] = attribute_match_recall(similarity, kinds, kinds, ks, ["kind"])
    without_own_item = similarity.clone().fill_diagonal_(-torch.inf)  # ranked last: never among the first K
    recalls["attribute-match others"] = attribute_match_recall(without_own_item, kinds, kinds, ks, ["kind"])
    matching = attribute_match_counts(kinds, kinds, ["kind"])
    relevant_counts = {
        "exact": [1] * len(gallery),
        "same title": same_value_mask(titles, titles).sum(dim=1).tolist(),
        "attribute-match": matching,
        "attribute-match others": [count - 1 for count in matching],
    }
    ranked = {name: len(gallery) for name in relevant_counts} | {"attribute-match others": len(gallery) - 1}
    record = {}
    for name, by_k in recalls.items():
        label = name.replace(" ", "-")
        record.update({f"{label} R@{k}": value for k, value in by_k.items()})
        record.update({f"chance {label} R@{k}": mean_chance_recall(k, ranked[name], relevant_counts[name]) for k in ks})
    return record
