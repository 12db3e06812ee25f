"""PyTorch ``Dataset`` adapters over a :class:`Catalogue`: (image, caption) pairs for training and encoding.

Every adapter returns plain dicts; an item whose image cannot be read yields ``{"skipped": item_id}`` and
:func:`collate_skipping_unreadable` drops it from the batch while listing it under ``batch["skipped"]``, so
training and encoding loops count skipped items instead of crashing mid-epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from .records import Catalogue, CorruptImage

Preprocess = Callable[[object], torch.Tensor]


def _with_image(sample: dict, item, preprocess: Preprocess | None) -> dict:
    """``sample`` plus ``"image"`` (when ``preprocess`` is set), or ``{"skipped": item_id}`` if it cannot be read."""
    if preprocess is None:
        return sample
    try:
        return {**sample, "image": preprocess(item.image)}
    except (CorruptImage, FileNotFoundError):
        return {"skipped": item.item_id}


def collate_skipping_unreadable(samples: list[dict]) -> dict:
    """Collate samples, dropping those marked skipped; ``batch["skipped"]`` lists the dropped item ids.

    When every sample is skipped the batch is ``{"skipped": [...]}`` alone: :func:`course_utils.train.fit` then
    leaves the micro-batch out, and the encoding loop (:mod:`course_utils.embed`) finds no ``"image"`` to encode.
    """
    skipped = [s["skipped"] for s in samples if "skipped" in s]
    kept = [s for s in samples if "skipped" not in s]
    batch = default_collate(kept) if kept else {}
    batch["skipped"] = skipped
    return batch


def _check_caption_style(catalogue: Catalogue, style: str) -> None:
    """Refuse a caption ``style`` that some items lack, when the dataset is made: a training would stop at the first
    batch that draws one of them (a ``KeyError`` naming one item), after the model and data have loaded."""
    lacking = [item.item_id for item in catalogue.items if not item.captions_of(style)]
    if lacking:
        styles = sorted({name for item in catalogue.items for name in item.caption_styles})
        raise ValueError(
            f"caption style {style!r}: {len(lacking)} of {len(catalogue)} items of {catalogue.name} have no caption "
            f"of that style (the first: {lacking[0]}); the styles its items have: {styles}"
        )


class ImageTextDataset(Dataset):
    """(image, caption) pairs for contrastive training and encoding.

    Args:
        catalogue: items to serve, in order (``batch["index"]`` is the position in it).
        preprocess: image transform returning a ``(3, H, W)`` tensor (the model's preprocess).
        caption_style: which caption style to use; ``None`` uses the first caption.
        seed: when an item has several captions of the style, one is drawn per (seed, epoch, item).
    """

    def __init__(
        self, catalogue: Catalogue, preprocess: Preprocess | None, caption_style: str | None = None, seed: int = 0
    ):
        if caption_style is not None:
            _check_caption_style(catalogue, caption_style)
        self.catalogue, self.preprocess, self.caption_style, self.seed = catalogue, preprocess, caption_style, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw a different caption per item each epoch (deterministically)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.catalogue)

    def caption_for(self, index: int) -> str:
        item = self.catalogue[index]
        if self.caption_style is None:
            return item.caption()  # its first; a KeyError naming the item if it has none
        options = item.captions_of(self.caption_style)  # not empty: checked when the dataset was made
        if len(options) == 1:
            return options[0]
        return options[int(np.random.default_rng([self.seed, self.epoch, index]).integers(len(options)))]

    def __getitem__(self, index: int) -> dict:
        return _with_image({"text": self.caption_for(index), "index": index}, self.catalogue[index], self.preprocess)
