"""The student copy and the slide boundaries of ``course_utils.handouts`` on small notebooks built in code.

The decks and the site themselves are built from executed notebooks and opened in Chromium in ``test_slides.py``.
"""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_utils import handouts


def cell(kind: str, source: str, *tags: str):
    made = new_code_cell(source) if kind == "code" else new_markdown_cell(source)
    made.metadata["tags"] = list(tags)
    return made


def course_notebook() -> nbformat.NotebookNode:
    run = cell("code", "print(1)")
    run.outputs, run.execution_count = [new_output("stream", text="1\n")], 3
    return new_notebook(
        cells=[
            cell("markdown", "# 01 · Title"),
            cell("code", "seed = 0", "parameters"),
            run,
            cell("markdown", "## Exercises\n1. Predict, then run."),
            cell("markdown", "**Worked solutions** in [solutions/01_x.py](solutions/01_x.py)", "solution"),
            cell("markdown", "Last words."),
        ]
    )


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "notebooks"
    (folder / "profiles").mkdir(parents=True)
    (folder / "solutions").mkdir()
    nbformat.write(course_notebook(), folder / "01_x.ipynb")
    (folder / "profiles" / "01_x.json").write_text(json.dumps({"ci": {"seed": 1}}))
    (folder / "solutions" / "01_x.py").write_text('"""Answers."""\n')
    return folder


def test_the_student_notebook_drops_the_solution_cells_and_every_output():
    notebook = course_notebook()
    before = nbformat.writes(notebook)
    student = handouts.student_notebook(notebook)
    kept = [c.source for c in notebook.cells if "solution" not in c.metadata["tags"]]
    assert [c.source for c in student.cells] == kept
    assert all(c.outputs == [] and c.execution_count is None for c in student.cells if c.cell_type == "code")
    assert nbformat.writes(notebook) == before  # the notebook it was made from is untouched


def test_the_student_copy_has_the_notebooks_and_profiles_but_no_solutions(source, tmp_path):
    out = tmp_path / "student"
    written = handouts.student_copy(out, source)
    assert written == [out / "01_x.ipynb"]
    copied = nbformat.read(out / "01_x.ipynb", as_version=4)
    assert not any("solution" in c.metadata.get("tags", []) for c in copied.cells)
    assert json.loads((out / "profiles" / "01_x.json").read_text()) == {"ci": {"seed": 1}}
    assert not (out / "solutions").exists()


def test_a_second_student_copy_keeps_nothing_the_source_no_longer_has(source, tmp_path):
    out = tmp_path / "student"
    handouts.student_copy(out, source)
    (source / "01_x.ipynb").rename(source / "02_y.ipynb")
    (source / "profiles" / "01_x.json").unlink()
    (out / "notes.txt").write_text("a student's own file")
    handouts.student_copy(out, source)
    assert sorted(p.name for p in out.glob("*.ipynb")) == ["02_y.ipynb"]
    assert list((out / "profiles").iterdir()) == []
    assert (out / "notes.txt").read_text() == "a student's own file"  # only course notebooks are replaced


@pytest.mark.parametrize("inside", ["notebooks", "notebooks/student"])
def test_the_student_copy_refuses_a_folder_inside_the_notebooks(source, tmp_path, inside):
    with pytest.raises(SystemExit, match="must lie outside"):
        handouts.student_copy(tmp_path / inside, source)


def test_an_out_that_is_a_file_is_named(source, tmp_path):
    out = tmp_path / "student"
    out.write_text("")
    with pytest.raises(SystemExit, match=f"--out {out} is a file"):
        handouts.student_copy(out, source)


def test_a_damaged_notebook_is_named_before_the_last_build_is_removed(source, tmp_path):
    out = tmp_path / "student"
    handouts.student_copy(out, source)
    whole = (source / "01_x.ipynb").read_text()
    (source / "02_y.ipynb").write_text(whole[: len(whole) // 2])  # a run killed while writing it
    with pytest.raises(SystemExit, match=rf"{source / '02_y.ipynb'} is not a readable notebook \(NotJSONError\); pass"):
        handouts.student_copy(out, source)
    assert (out / "01_x.ipynb").exists()  # the earlier copy is still whole


@pytest.mark.parametrize(
    ("content", "error"),
    [("[]", "AttributeError"), ("{}", "ValidationError"), ('{"cells": 5, "metadata": {}, "nbformat": 4}', "TypeError")],
)
def test_json_that_is_no_notebook_is_named(source, tmp_path, content, error):
    """Before, a JSON list or object of another shape gave a traceback from nbformat naming no file."""
    (source / "02_y.ipynb").write_text(content)
    with pytest.raises(SystemExit, match=rf"{source / '02_y.ipynb'} is not a readable notebook \({error}\)"):
        handouts.student_copy(tmp_path / "student", source)


def test_a_folder_without_course_notebooks_is_named_with_what_to_do(tmp_path):
    with pytest.raises(SystemExit, match=f"no notebooks NN_\\*.ipynb in {tmp_path}; run `make run`"):
        handouts.build_site(tmp_path, tmp_path / "site")


def test_headings_start_slides_and_each_step_after_code_a_sub_slide():
    notebook = new_notebook(
        cells=[
            cell("markdown", "# 01 · Title"),
            cell("code", "seed = 0", "parameters"),
            cell("markdown", "Intro under the title."),
            cell("code", "a = 1"),
            cell("code", "b = 2"),
            cell("markdown", "Why the next cell matters."),
            cell("code", "c = 3"),
            cell("markdown", "## A section"),
            cell("markdown", "### A sub-section"),
            cell("markdown", "Its words."),
            cell("markdown", "Answers", "solution"),
            cell("code", "d = 4"),
        ]
    )
    types = [c.metadata["slideshow"]["slide_type"] for c in handouts.with_slide_metadata(notebook).cells]
    assert types == ["slide", "skip", "-", "-", "subslide", "subslide", "-", "slide", "subslide", "-", "skip", "-"]


def test_the_site_leaves_out_both_parameter_cells_as_the_decks_do(tmp_path):
    """It kept the defaults and dropped the values papermill injected: a full run's page read profile = "ci"."""
    executed = course_notebook()
    executed.cells.insert(2, cell("code", 'profile = "full"', "injected-parameters"))
    executed.cells[1].source = 'profile = "ci"'
    nbformat.write(executed, tmp_path / "01_x.ipynb")
    page = (handouts.build_site(tmp_path, tmp_path / "site").parent / "01_x.html").read_text()
    assert "Last words." in page and "profile" not in page
