"""The one check that a parameter is a whole number: ``k``, ``top_k``, ``limit``, ``test_size``, the metrics' counts
and, through :func:`whole_number`, the command-line options that count (``--seed``, ``--steps``, ``--cell-timeout``).

``int(2.5)`` floors and ``True`` is an ``int`` in Python, so ``isinstance(value, int)`` alone would let a float or a
bool through as a count; each caller raises its own error, naming its parameter.
"""

from __future__ import annotations

import argparse
import numbers
from collections.abc import Callable


def is_whole_number(value: object, minimum: int | None = None) -> bool:
    """True for an ``int`` (numpy integers too) that is at least ``minimum`` (when given); False for a bool, a float
    (``2.5``, and ``3.0`` as well), a string and a smaller number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return False
    return minimum is None or value >= minimum


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number from ``low`` to ``high``: anything else is refused at once, with the
    flag's name (before the model loads or a notebook starts), instead of failing later or being changed silently."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"must be a whole number {bounds}, got {text!r}")
        return value

    return parse
