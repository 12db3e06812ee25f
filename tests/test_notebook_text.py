"""What the notebooks say, checked without running them: no hand-typed metrics in prose, readable code lines.

Measured numbers reach the prose only through cells that render Markdown from the run's own results, so the
``ci`` profile shows ``ci`` numbers and ``full`` shows ``full``. A metric-like number typed into a markdown cell
(a decimal such as 0.193, a percentage such as +54 %, an ``R@K = x``) fails here unless it is an external figure
listed with its source in ``REFERENCES.md`` (seed projects, papers, recipe constants). Numbers inside inline code
(parameters such as ``test_size=300``) are code, not claims, and are not scanned.
"""

from __future__ import annotations

import json
import re

import pytest

from course_utils.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_CODE_LINE = 100

NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
METRIC_LIKE = re.compile(
    r"R@\d+\s*(?:=|of|:)\s*(?P<recall>\d[\d,]*(?:\.\d+)?)"  # R@10 = 0.546, R@5 of 0.59
    r"|(?P<percent>[+−-]?\d[\d,]*(?:\.\d+)?)\s?%"  # 54 %, +54 %, 0.5 %
    r"|(?<![\w.@/-])(?P<decimal>[+−-]?\d[\d,]*\.\d+)(?![\w.])"  # 0.193, 3.8
)
INLINE_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def canonical(number: str) -> str:
    """``"+0.5934"`` -> ``"0.5934"``, ``"8,819"`` -> ``"8819"``: numbers compared without sign or separators."""
    return number.lstrip("+−-").replace(",", "")


def referenced_numbers() -> set[str]:
    """Every number written in REFERENCES.md (the registry of external figures and constants)."""
    return {canonical(n) for n in NUMBER.findall((REPO_ROOT / "REFERENCES.md").read_text())}


def unreferenced_metrics(markdown: str, allowed: set[str]) -> list[str]:
    """Metric-like numbers of ``markdown`` (inline code removed) whose numbers are not all in ``allowed``."""
    prose = INLINE_CODE.sub(" ", markdown)
    found = []
    for match in METRIC_LIKE.finditer(prose):
        value = next(group for group in match.groups() if group)
        if canonical(value) not in allowed:
            found.append(match.group().strip())
    return found


def cells(notebook, kind: str) -> list[tuple[int, str]]:
    nb = json.loads(notebook.read_text())
    return [(i, "".join(c["source"])) for i, c in enumerate(nb["cells"]) if c["cell_type"] == kind]


def test_the_scanner_flags_metrics_and_spares_references():
    allowed = {"0.0001", "0.59"}
    text = "R@1 = 0.0001 (seed 002); we measured 0.193 → 0.297, +54 %; in-batch R@5 of 0.59; `lr=1e-4`, `0.25`"
    assert unreferenced_metrics(text, allowed) == ["0.193", "0.297", "+54 %"]
    assert unreferenced_metrics("R@10 = 0.546 on 500 items, 3 epochs", allowed) == ["R@10 = 0.546"]
    assert unreferenced_metrics("ranks 11–20, 8,819 images, notebook 05", allowed) == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_holds_no_hand_typed_metric(notebook):
    allowed = referenced_numbers()
    offenders = [
        f"cell {i}: {m}" for i, text in cells(notebook, "markdown") for m in unreferenced_metrics(text, allowed)
    ]
    assert not offenders, (
        f"{notebook.name}: metric-like numbers typed into markdown — render them from the run's results "
        f"(IPython.display.Markdown) or list the external figure with its source in REFERENCES.md: {offenders}"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_lines_fit_in_100_characters(notebook):
    long = [
        f"cell {i}, line {n}: {len(line)} chars"
        for i, text in cells(notebook, "code")
        for n, line in enumerate(text.splitlines(), 1)
        if len(line) > MAX_CODE_LINE
    ]
    assert not long, f"{notebook.name}: code lines over {MAX_CODE_LINE} characters: {long}"
