"""The checks of parameters: the one check that a parameter is a whole number (``k``, ``top_k``, ``limit``,
``test_size``, the metrics' counts and, through :func:`whole_number`, the command-line options that count:
``--seed``, ``--steps``, ``--cell-timeout``), the command-line rates (:func:`positive_number`: ``--lr``), the checks
a notebook's set-up runs on its own parameters (:func:`check_parameter`, :func:`attribute_names`) and the check of a
list of names that notebooks and loaders share (:func:`names_problem`), so a bad value stops the run at once with the
parameter's name instead of failing minutes later in a library's words, or running with the value silently changed.

``int(2.5)`` floors and ``True`` is an ``int`` in Python, so ``isinstance(value, int)`` alone would let a float or a
bool through as a count; each caller raises its own error, naming its parameter.
"""

from __future__ import annotations

import argparse
import math
import numbers
from collections.abc import Callable, Sequence


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


def positive_number(text: str) -> float:
    """An argparse ``type`` for a finite number above 0 (a learning rate): ``-1``, ``0``, ``nan`` and ``inf`` are
    refused with the flag's name before anything loads, instead of in a traceback from the training's config."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, like 1e-5, got {text!r}")
    return value


def check_parameter(name: str, value: object, allowed: bool, expected: str) -> None:
    """Raise ``ValueError`` naming the notebook parameter ``name`` and its ``value`` unless ``allowed``.

    ``expected`` says what the parameter must be (``"a whole number >= 10: R@10 is reported"``); the message adds
    where to change it, so a student reads the fix in the first cell that runs, not a library's error later.
    """
    if not allowed:
        raise ValueError(
            f"parameter {name}={value!r}: it must be {expected}; change it in the notebook's parameters cell "
            f"(or the runner's --set {name}=...)"
        )


def names_problem(value: object, allowed: Sequence[str], kind: str = "names") -> str | None:
    """``None`` when ``value`` is a non-empty list or tuple of names drawn from ``allowed``; else what it must be, for
    the caller's message (a notebook parameter's through :func:`attribute_names`, a loader argument's through
    ``data.records.check_names``).

    A plain string is refused, not read as a list of its letters (``"colour"`` -> ``c, o, l, o, u, r``, and
    ``splits="train"`` -> ``'t', 'r', ...``), and so are an empty list and a name outside ``allowed``.
    """
    choices = f"{kind} from {', '.join(map(repr, allowed))}"
    if isinstance(value, str):
        return f"a list of {choices}, not a plain string (a string is read letter by letter)"
    if not isinstance(value, (list, tuple)) or not value:
        return f"a non-empty list of {choices}"
    unknown = [v for v in value if not isinstance(v, str) or v not in allowed]
    if unknown:
        verb = "is not one" if len(unknown) == 1 else "are not"
        return f"a list of {choices} ({', '.join(map(repr, unknown))} {verb})"
    return None


def attribute_names(value: object, available: Sequence[str], name: str) -> list[str]:
    """``value``, the attribute names a notebook parameter gives (``conditions``, ``match_attributes``), as a list,
    once :func:`names_problem` finds it a non-empty list of the catalogue's ``available`` attributes."""
    problem = names_problem(value, available, "attribute names")
    check_parameter(name, value, problem is None, problem)
    return list(value)
