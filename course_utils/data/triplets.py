"""Composition triplets (reference, modification text, target) from items that differ in one attribute.

Used by the procedural catalogue and by real catalogues that have attributes but no relative captions
(e.g. ``fashion-product-small``: colour swaps within an article type). Introduced in notebook 06.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence

from .records import CompositionTriplet, Item


def fashion200k_phrase(attribute: str, old: str, new: str) -> str:
    """Fashion200k/TIRG phrasing: ``"replace red with blue"``."""
    return f"replace {old} with {new}"


def attribute_swap_triplets(
    items: Sequence[Item],
    attribute: str,
    within: Sequence[str],
    seed: int,
    per_reference: int = 1,
    phrase: Callable[[str, str, str], str] = fashion200k_phrase,
) -> list[CompositionTriplet]:
    """Pair items that share every attribute in ``within`` but differ in ``attribute``.

    Args:
        items: candidate items (one split).
        attribute: the attribute the modification changes, e.g. ``"baseColour"``.
        within: attributes that must be equal between reference and target, e.g. ``("articleType", "gender")``.
        seed: sampling seed; the same seed gives the same triplets.
        per_reference: at most this many targets per reference item.
        phrase: turns (attribute, old value, new value) into the modification text.

    Returns:
        Triplets whose target differs from the reference in ``attribute`` and agrees on ``within``.
    """
    rng = random.Random(seed)
    groups: dict[tuple, list[Item]] = defaultdict(list)
    for item in items:
        if attribute in item.attributes and all(key in item.attributes for key in within):
            groups[tuple(item.attributes[key] for key in within)].append(item)
    triplets = []
    for key in sorted(groups):
        group = groups[key]
        for reference in group:
            old = reference.attributes[attribute]
            targets = [t for t in group if t.attributes[attribute] != old]
            for target in rng.sample(targets, min(per_reference, len(targets))):
                new = target.attributes[attribute]
                triplets.append(
                    CompositionTriplet(
                        reference_id=reference.item_id,
                        modification=phrase(attribute, old, new),
                        target_id=target.item_id,
                        changed={attribute: (old, new)},
                        style="fashion200k",
                    )
                )
    return triplets
