"""``course_utils.handouts`` on small notebooks built in code: the student copy, the slide boundaries, the checks
made before a build touches its output folder, decks and pages that load nothing from the network, and the
Makefile's fetch of the decks' scripts.

The decks and the site themselves are built from executed notebooks and opened in Chromium in ``test_slides.py``.
"""

import json
import os
import re
import shutil
import subprocess

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_utils import handouts
from course_utils.paths import REPO_ROOT

MAKEFILE = REPO_ROOT / "Makefile"


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


def test_a_notebook_whose_run_stopped_at_an_error_is_named_before_the_last_build_is_removed(tmp_path):
    """It became a deck and a page cut off at the failing cell, with no word of the error."""
    nbformat.write(course_notebook(), tmp_path / "01_x.ipynb")
    site = tmp_path / "site"
    handouts.build_site(tmp_path, site)
    failed = course_notebook()
    failed.metadata["papermill"] = {"exception": True}
    nbformat.write(failed, tmp_path / "02_y.ipynb")
    for build in (handouts.build_slides, handouts.build_site):
        with pytest.raises(SystemExit, match=rf"{tmp_path / '02_y.ipynb'} stopped at an error .* rerun `make run`"):
            build(tmp_path, site)
    assert (site / "01_x.html").exists()


def test_a_notebook_never_run_is_named_with_the_folder_to_pass(tmp_path):
    """A notebook straight from notebooks/ became a deck and a page without a single output."""
    nbformat.write(handouts.student_notebook(course_notebook()), tmp_path / "01_x.ipynb")
    for build in (handouts.build_slides, handouts.build_site):
        with pytest.raises(SystemExit, match=rf"{tmp_path / '01_x.ipynb'} was never run .* --executed"):
            build(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def slide_js(tmp_path):
    """A --js folder holding every file the decks load (placeholders: no browser opens these decks)."""
    folder = tmp_path / "slide-js"
    for name in handouts.SLIDE_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("/* placeholder */\n")
    return folder


def test_a_js_folder_that_lacks_a_file_leaves_the_last_decks(tmp_path, slide_js):
    """The last decks were deleted before the --js folder was found wanting."""
    nbformat.write(course_notebook(), tmp_path / "01_x.ipynb")
    slides = tmp_path / "slides"
    handouts.build_slides(tmp_path, slides, slide_js)
    (slide_js / "requirejs" / "require.js").unlink()
    with pytest.raises(SystemExit, match=rf"--js {slide_js}: missing requirejs/require.js"):
        handouts.build_slides(tmp_path, slides, slide_js)
    assert (slides / "01_x.slides.html").exists()


def notebook_with_a_progress_bar() -> nbformat.NotebookNode:
    """The course notebook with a tqdm bar: its widget view, text fallback (as displayed) and saved final state."""
    notebook = course_notebook()
    run = notebook.cells[2]
    view = {"model_id": "box", "version_major": 2, "version_minor": 0}
    fallback = "training:   0%|          | 0/4 [00:00<?, ?it/s]"
    run.outputs.insert(
        0, new_output("display_data", data={"application/vnd.jupyter.widget-view+json": view, "text/plain": fallback})
    )
    notebook.cells.append(cell("markdown", "Read more at [the docs](https://example.org/docs)."))

    def model(name, **state):
        return {"model_module": "@jupyter-widgets/controls", "model_name": name, "state": state}

    states = {
        "box": model("HBoxModel", children=["IPY_MODEL_label", "IPY_MODEL_bar", "IPY_MODEL_counts"]),
        "label": model("HTMLModel", value="training:\u2007100%"),
        "bar": model("FloatProgressModel", min=0.0, max=4.0, value=4.0),
        "counts": model("HTMLModel", value="\u20074/4\u2007[00:01&lt;00:00,\u2007\u20073.9it/s]"),
    }
    notebook.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": states, "version_major": 2, "version_minor": 0}
    }
    return notebook


# What a browser would fetch: a script or style sheet from http(s), a module imported from there, or a script's URL
# kept in a string for a loader (nbconvert's widget renderer); links in the text are no fetch.
NETWORK_LOAD = re.compile(
    r"""<script[^>]*\ssrc=["']https?:|<link[^>]*\shref=["']https?:|\bfrom\s*["']https?:|\bimport\s*\(\s*["']https?:"""
    r"""|["']https?://[^"'\s]*\.(?:m?js|css)\b"""
)


def test_decks_and_pages_load_no_script_or_style_from_the_network(tmp_path, slide_js):
    """They loaded MathJax, mermaid, a widget renderer (decks) and require.js (pages) from cdnjs and unpkg."""
    nbformat.write(notebook_with_a_progress_bar(), tmp_path / "01_x.ipynb")
    [deck] = handouts.build_slides(tmp_path, tmp_path / "slides", slide_js)
    page = handouts.build_site(tmp_path, tmp_path / "site").parent / "01_x.html"
    for built in (deck, page):
        text = built.read_text()
        assert NETWORK_LOAD.findall(text) == [], built.name
        assert "https://example.org/docs" in text  # the text's links stay


def outputs_shown(notebook: nbformat.NotebookNode) -> list:
    """The outputs of the one code cell with outputs, as the decks and pages show them."""
    [run] = [c for c in handouts.without_widgets(notebook).cells if c.cell_type == "code" and c.outputs]
    return run.outputs


def test_a_progress_bar_shows_as_text_in_the_state_the_run_left():
    bar, printed = outputs_shown(notebook_with_a_progress_bar())
    assert bar.data == {"text/plain": "training: 100%|██████████| 4/4 [00:01<00:00,  3.9it/s]"}
    assert printed.text == "1\n"  # the other outputs stay as they were


def test_a_widget_without_saved_state_shows_its_text_fallback():
    notebook = notebook_with_a_progress_bar()
    del notebook.metadata["widgets"]
    assert outputs_shown(notebook)[0].data == {"text/plain": "training:   0%|          | 0/4 [00:00<?, ?it/s]"}


def test_no_course_notebook_writes_tex_or_a_mermaid_diagram():
    """The decks and pages leave MathJax and mermaid out (they came from a CDN): such markdown would show as source."""
    math_or_diagram = re.compile(r"\$[^$\s][^$\n]*\$|\$\$|\\\(|\\\[|```mermaid")
    found = [
        (path.name, match.group(0))
        for path in sorted(handouts.NOTEBOOK_DIR.glob(handouts.COURSE_NOTEBOOKS))
        for c in nbformat.read(path, as_version=4).cells
        if c.cell_type == "markdown"
        for match in math_or_diagram.finditer(c.source)
    ]
    assert found == [], "load MathJax / mermaid from a local copy in course_utils/handouts.py first"


FAKE_NPM = """#!/bin/sh
# npm pack [OPTIONS] NAME@VERSION: a tarball (one README naming it and the options), or a network error for the NAMEs
# in FAILING
for package; do :; done
for failing in $FAILING; do [ "${package%@*}" = "$failing" ] && { echo "npm ERR! network" >&2; exit 1; }; done
mkdir package && echo "$package $*" > package/README && tar czf fetched.tgz package && rm -r package && echo fetched.tgz
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_failed_script_fetch_leaves_no_stamp_and_no_partial_packages_and_is_retried(tmp_path):
    """One failed `npm pack` still wrote the stamp: the half-fetched folder was never fetched again and every
    `make slides` failed on it."""
    bin_folder, slides_js = tmp_path / "bin", tmp_path / "slides-js"
    bin_folder.mkdir()
    (bin_folder / "npm").write_text(FAKE_NPM)
    (bin_folder / "npm").chmod(0o755)

    def fetch(failing: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}", "FAILING": failing}
        command = ["make", "-s", "-f", str(MAKEFILE), "slides-js", f"SLIDES_JS={slides_js}"]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    failed = fetch("requirejs")
    assert failed.returncode == 0, failed.stderr  # make test goes on without the scripts
    assert "npm pack requirejs@" in failed.stdout
    assert sorted(p.name for p in slides_js.iterdir()) == []
    fetched = fetch("")
    assert fetched.returncode == 0, fetched.stderr
    assert sorted(p.name for p in slides_js.iterdir()) == [".fetched", "jquery", "requirejs", "reveal.js"]
    readme = (slides_js / "reveal.js" / "README").read_text()
    assert readme.startswith("reveal.js@")
    assert "--fetch-retries=0" in readme.split()  # offline, npm's own retries would hold make test for a minute
