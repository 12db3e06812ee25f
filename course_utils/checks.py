"""The one check that a parameter is a whole number: ``k``, ``top_k``, ``limit``, ``test_size`` and the metrics' counts.

``int(2.5)`` floors and ``True`` is an ``int`` in Python, so ``isinstance(value, int)`` alone would let a float or a
bool through as a count; each caller raises its own error, naming its parameter.
"""

from __future__ import annotations

import numbers


def is_whole_number(value: object, minimum: int | None = None) -> bool:
    """True for an ``int`` (numpy integers too) that is at least ``minimum`` (when given); False for a bool, a float
    (``2.5``, and ``3.0`` as well), a string and a smaller number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return False
    return minimum is None or value >= minimum
