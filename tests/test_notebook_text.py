"""What the notebooks say, checked without running them: no hand-typed metrics in prose, readable code lines,
figures drawn in the cell that shows them.

Measured numbers reach the prose only through cells that render Markdown from the run's own results, so the
``ci`` profile shows ``ci`` numbers and ``full`` shows ``full``. A metric-like number typed into a markdown cell
(a decimal such as 0.193, a percentage such as +54 %, an ``R@K = x``) fails here unless it is an external figure
listed with its source in ``REFERENCES.md`` (seed projects, papers, recipe constants). Numbers inside inline code
(parameters such as ``test_size=300``) are code, not claims, and are not scanned.
"""

from __future__ import annotations

import ast
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


FIGURE_FACTORIES = ("subplots", "figure")  # plt.subplots(...), plt.figure(...)


def figure_names(tree: ast.AST) -> set[str]:
    """Names a cell binds to what ``plt.subplots`` / ``plt.figure`` return (``fig``, ``ax``, ``axes``, ...)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            function = node.value.func
            if isinstance(function, ast.Attribute) and function.attr in FIGURE_FACTORIES:
                names |= {n.id for target in node.targets for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def bound_names(tree: ast.AST) -> set[str]:
    """Every name a cell binds: assignments, loop targets, function parameters, imports, definitions."""
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
    names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    return names | {
        (a.asname or a.name).split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }


def figures_drawn_outside_their_cell(sources: list[tuple[int, str]]) -> list[str]:
    """Cells that draw on a figure another cell created, or create one without showing it.

    Jupyter's inline backend shows a figure, and closes it, at the end of the cell that created it: drawing on it
    in a later cell never reaches the screen (only ``save_figure`` sees the finished figure).
    """
    found, figures = [], {}  # figure name -> the cell that created it
    for i, source in sources:
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for name in sorted((used & set(figures)) - bound_names(tree)):
            found.append(f"cell {i} draws on {name!r} of cell {figures[name]}")
        created = figure_names(tree)
        if created and "plt.show()" not in source and "display(fig" not in source:
            found.append(f"cell {i} creates {sorted(created)} without plt.show()")
        figures = {name: cell for name, cell in figures.items() if name not in bound_names(tree)}
        figures |= dict.fromkeys(created, i)
    return found


def test_the_figure_check_flags_a_figure_finished_in_a_later_cell():
    split = [(1, "fig, ax = plt.subplots()\nax.plot(x)"), (2, "ax.set(xscale='log')\nplt.show()")]
    assert figures_drawn_outside_their_cell(split) == [
        "cell 1 creates ['ax', 'fig'] without plt.show()",
        "cell 2 draws on 'ax' of cell 1",
    ]
    whole = [(1, "fig, ax = plt.subplots()\nax.plot(x)\nplt.show()"), (2, "for ax in grid:\n    ax.plot(x)")]
    assert figures_drawn_outside_their_cell(whole) == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_figure_is_drawn_and_shown_in_one_cell(notebook):
    found = figures_drawn_outside_their_cell(cells(notebook, "code"))
    assert not found, (
        f"{notebook.name}: Jupyter shows and closes a figure at the end of the cell that created it, so the student "
        f"sees it unfinished; create, draw, save and show each figure in one cell: {found}"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_ends_with_its_exercises_their_scope_and_the_link_to_the_solutions(notebook):
    """The learner's path through every notebook ends the same way: the exercises (tagged ``exercises``), a cell
    that says which catalogue they run on (``tasks.exercises_scope``: on a real one, how to translate them), and
    the link to the worked solutions (tagged ``solution``, left out of ``make student``)."""
    cells = json.loads(notebook.read_text())["cells"][-3:]
    assert [cell["cell_type"] for cell in cells] == ["markdown", "code", "markdown"]
    assert [cell["metadata"].get("tags", []) for cell in cells] == [["exercises"], [], ["solution"]]
    assert "".join(cells[0]["source"]).startswith("## Exercises\n")
    assert "cu.tasks.exercises_scope(experiment" in "".join(cells[1]["source"])
    assert f"notebooks/solutions/{notebook.stem}.py" in "".join(cells[2]["source"])


def solution_functions(notebook) -> set[str]:
    """The functions defined in a notebook's worked solutions (``notebooks/solutions/NN_*.py``)."""
    tree = ast.parse((REPO_ROOT / "notebooks" / "solutions" / f"{notebook.stem}.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_student_copy_asks_for_nothing_only_the_solutions_hold(notebook):
    """`make student` leaves the solutions out, so no cell a student keeps may send them to a solution's function
    (03's exercises 8 and 9 did: "set the records beside this run's with the solution's picks_by_grid")."""
    kept = [
        cell for cell in json.loads(notebook.read_text())["cells"] if "solution" not in cell["metadata"].get("tags", [])
    ]
    text = "\n".join("".join(cell["source"]) for cell in kept)
    pointed_at = set(re.findall(r"solutions?['’]?s?\s+`(\w+)`", text))  # "the solution's `picks_by_grid`"
    assert sorted(pointed_at & solution_functions(notebook)) == []
