"""Deterministic train/val/test assignment for datasets that ship without an official split.

The split of an item depends only on ``(seed, item_id)`` through SHA-256 (not Python's salted ``hash()``),
so it is the same on every machine, in every process, and does not change when rows are added or removed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from .records import SPLITS

DEFAULT_SPLIT_FRACTIONS: Mapping[str, float] = {"train": 0.7, "val": 0.1, "test": 0.2}


def check_split_fractions(fractions: Mapping[str, float]) -> None:
    """Raise ``ValueError`` unless ``fractions`` names known splits with non-negative shares summing to 1."""
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown} in split fractions; use names from {SPLITS}")
    if any(share < 0 for share in fractions.values()):
        raise ValueError(f"split fractions must be non-negative, got {dict(fractions)}")
    if not math.isclose(sum(fractions.values()), 1.0, abs_tol=1e-9):
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)} (sum {sum(fractions.values())})")


def stable_unit_interval(seed: int, item_id: str) -> float:
    """A number in ``[0, 1)`` derived from SHA-256 of ``"<seed>:<item_id>"``; identical across runs and machines."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(item_id: str, seed: int = 0, fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS) -> str:
    """The split of one item: the interval of the cumulative ``fractions`` its stable hash falls into.

    Args:
        item_id: the item's id, e.g. ``"15970"``.
        seed: changes the assignment as a whole; the same seed always gives the same split.
        fractions: split name -> share, e.g. ``{"train": 0.7, "val": 0.1, "test": 0.2}`` (the default).

    Returns:
        One of the split names in ``fractions``.
    """
    check_split_fractions(fractions)
    point = stable_unit_interval(seed, item_id)
    cumulative = 0.0
    names = [name for name, share in fractions.items() if share > 0]
    for name in names:
        cumulative += fractions[name]
        if point < cumulative:
            return name
    return names[-1]  # float rounding: the cumulative sum can end a hair below 1
