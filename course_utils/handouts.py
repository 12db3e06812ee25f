"""Handouts for the course: a student copy without solutions, reveal.js slide decks and a static HTML site.

``python -m course_utils.handouts student --out student/`` copies ``notebooks/`` without the cells tagged
``solution`` and without ``notebooks/solutions/`` (``make student``).
``python -m course_utils.handouts slides --executed outputs --out outputs/slides [--js DIR]`` turns executed
notebooks into reveal.js decks, and ``site --executed outputs --out outputs/site`` into static HTML pages with an
index (``make slides`` builds both from the full run's executed copies).

Slide boundaries are set on a copy at build time, so the committed notebooks carry no slide metadata: a ``#`` or
``##`` heading starts a slide; a ``###`` heading, and each cell that follows a code cell, starts a sub-slide below it,
so a section reads top to bottom one step per screen — the step's explanation, one code cell and its outputs (a
step taller than the screen scrolls); the papermill parameter cells and the pointers to the solutions are left
out of the decks and the site. The decks' JavaScript (reveal.js 4, require.js, jQuery) comes from ``--js DIR`` —
the unpacked npm packages ``reveal.js/``, ``requirejs/`` and ``jquery/``, copied next to the decks so they work
offline in a classroom (``make slides`` fetches them once with ``npm pack``) — or, without it, from
nbconvert's default CDN URLs. Nothing else is loaded from the network: a widget output (a tqdm progress bar) is
shown as text, in the state the run left it; MathJax and mermaid are left out (no course notebook writes TeX or a
mermaid diagram: tests/test_handouts.py checks), and so is require.js on the site (only widgets needed it there).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
from pathlib import Path

import nbformat

from .paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
SOLUTION_TAG = "solution"
COURSE_NOTEBOOKS = "[0-9][0-9]_*.ipynb"
SKIPPED_ON_SLIDES = {"parameters", "injected-parameters", SOLUTION_TAG}
# What the decks load, relative to --js: reveal.js 4 (its CSS, white theme, notes plugin), require.js and jQuery.
SLIDE_FILES = (
    "reveal.js/dist/reveal.js",
    "reveal.js/dist/reveal.css",
    "reveal.js/dist/theme/white.css",
    "reveal.js/dist/theme/fonts/source-sans-pro/source-sans-pro.css",  # white.css imports it
    "reveal.js/dist/theme/fonts/source-sans-pro/source-sans-pro-regular.woff",
    "reveal.js/dist/theme/fonts/source-sans-pro/source-sans-pro-italic.woff",
    "reveal.js/dist/theme/fonts/source-sans-pro/LICENSE",
    "reveal.js/plugin/notes/notes.js",
    "reveal.js/LICENSE",
    "requirejs/require.js",
    "jquery/dist/jquery.min.js",
)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def template_block(name: str, content: str = "") -> str:
    """The block ``name`` of nbconvert's templates, replaced by ``content`` (by nothing: left out)."""
    return f"{{%- block {name} -%}}{content}{{%- endblock {name} -%}}"


# nbconvert's templates without the blocks that load scripts from a CDN: MathJax and mermaid, and on the site
# require.js (the decks need it to start reveal.js and load it from js/). In place of MathJax the decks get a stand-in
# with no typeset maths, which the reveal template's slide-change handler asks for (MathJax.Hub.getAllJax).
DECK_TEMPLATE = (
    "{%- extends 'index.html.j2' -%}"
    + template_block("html_head_js_mermaidjs")
    + template_block("html_head_js_mathjax", "<script>var MathJax = {Hub: {getAllJax: () => null}};</script>")
)
PAGE_TEMPLATE = (
    "{%- extends 'index.html.j2' -%}"
    + template_block("html_head_js_mermaidjs")
    + template_block("html_head_js_mathjax")
    + template_block("html_head_js_requirejs")
)


def course_notebooks(folder: Path, what_to_do: str) -> list[tuple[Path, nbformat.NotebookNode]]:
    """``NN_*.ipynb`` in ``folder``, in order, each read: all of them before a build touches its output folder.

    Raises:
        SystemExit: no such notebook in ``folder``, or one that cannot be read (truncated, not JSON, not UTF-8, not a
            valid notebook);
            the message names the folder or the file and ``what_to_do``.
    """
    paths = sorted(folder.glob(COURSE_NOTEBOOKS))
    if not paths:
        raise SystemExit(f"no notebooks NN_*.ipynb in {folder}; {what_to_do}")
    notebooks = []
    for path in paths:
        try:
            notebook = nbformat.read(path, as_version=4)
            nbformat.validate(notebook)  # JSON of another shape ([], {}, a cell without metadata) fails here
        except (ValueError, OSError, AttributeError, TypeError, KeyError, nbformat.ValidationError) as err:
            # nbformat's NotJSONError is a ValueError, as is a non-UTF-8 byte; the others come from JSON of
            # another shape, which nbformat's reader does not check
            raise SystemExit(f"{path} is not a readable notebook ({type(err).__name__}); {what_to_do}") from None
        notebooks.append((path, notebook))
    return notebooks


def executed_notebooks(folder: Path) -> list[tuple[Path, nbformat.NotebookNode]]:
    """The executed course notebooks in ``folder`` (for the decks and the site).

    Raises:
        SystemExit: as ``course_notebooks``, and for a notebook whose run stopped at an error (papermill recorded an
            exception) or that was never run (no code cell has an output); the message names the file.
    """
    notebooks = course_notebooks(
        folder,
        "run `make run` (full, into outputs/), or `make run-ci` (into outputs/ci/) and pass that folder as --executed",
    )
    for path, notebook in notebooks:
        if notebook.metadata.get("papermill", {}).get("exception"):
            raise SystemExit(
                f"{path} stopped at an error when it ran; it holds the traceback: fix the notebook, then rerun "
                "`make run` (or `make run-ci` for outputs/ci/)"
            )
        if not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
            raise SystemExit(
                f"{path} was never run (no code cell has an output): pass the folder of the executed copies as "
                "--executed, outputs/ after `make run` or outputs/ci after `make run-ci`"
            )
    return notebooks


def prepare_out(out: Path, stale: str) -> None:
    """Create the folder ``out`` and remove its files matching ``stale`` left by an earlier build, so a build's
    folder holds exactly what that build wrote (a notebook deleted or renamed since would otherwise linger)."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {out} is a file; pass a folder (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(stale):
        leftover.unlink()


def tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def student_notebook(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy without the cells tagged ``solution`` and without outputs."""
    copy = nbformat.from_dict(notebook)
    copy.cells = [cell for cell in copy.cells if SOLUTION_TAG not in tags(cell)]
    for cell in copy.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return copy


def student_copy(out: Path, source: Path = NOTEBOOK_DIR) -> list[Path]:
    """Write the student copy of ``source`` (notebooks and profiles, no solutions) to ``out``; the paths written.

    Notebooks and profiles that an earlier copy left in ``out`` are replaced, so the copy never keeps a notebook
    (with its solutions) that ``source`` no longer has.
    """
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise SystemExit(f"--out {out} must lie outside {source}")
    notebooks = course_notebooks(source, "pass the course's notebooks/ folder")
    prepare_out(out, COURSE_NOTEBOOKS)
    written = []
    for path, notebook in notebooks:
        target = out / path.name
        nbformat.write(student_notebook(notebook), target)
        written.append(target)
    shutil.rmtree(out / "profiles", ignore_errors=True)
    if (source / "profiles").is_dir():
        shutil.copytree(source / "profiles", out / "profiles")
    return written


def slide_type(cell, previous_shown_type: str | None) -> str:
    """reveal.js slide type of a cell, given the type of the last cell shown before it (``None`` for the first).

    Parameter and solution cells are skipped; ``#``/``##`` headings start slides; a ``###`` heading, or any cell
    right after a code cell, starts a sub-slide, so each sub-slide is one step: its explanation, one code cell and
    that cell's outputs; the rest continues the slide.
    """
    if tags(cell) & SKIPPED_ON_SLIDES:
        return "skip"
    if cell.cell_type == "markdown":
        first = cell.source.lstrip().split("\n", 1)[0]
        if first.startswith(("# ", "## ")):
            return "slide"
        if first.startswith("### "):
            return "subslide"
    if previous_shown_type == "code":
        return "subslide"
    return "-"


def widget_text(model_id: str, widget_states: dict) -> str | None:
    """A widget as text, in the state the run saved: a box its children's text, an HTML or label widget its value, a
    progress bar tqdm's 10-character bar; ``None`` when no state was saved for it or for a part of it, or a part is a
    widget of another kind."""
    model = widget_states.get(model_id)
    if model is None:
        return None
    kind, state = model.get("model_name"), model.get("state", {})
    if kind in ("HBoxModel", "VBoxModel", "BoxModel"):
        parts = [widget_text(child.removeprefix("IPY_MODEL_"), widget_states) for child in state.get("children", [])]
        return None if None in parts else ("\n" if kind == "VBoxModel" else "").join(parts)
    if kind in ("HTMLModel", "LabelModel"):
        # tqdm pads with figure spaces (U+2007) so its HTML keeps the terminal's columns
        return html.unescape(re.sub(r"<[^>]*>", "", state.get("value", ""))).replace("\u2007", " ")
    if kind in ("FloatProgressModel", "IntProgressModel"):
        span = state.get("max", 100) - state.get("min", 0)
        filled = round(10 * (state.get("value", 0) - state.get("min", 0)) / span) if span else 10
        return "|" + "█" * filled + " " * (10 - filled) + "|"
    return None


def without_widgets(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy whose widget outputs are text (their saved state, else their own text fallback, else left out), so
    the decks and pages need no widget renderer from the network."""
    copy = nbformat.from_dict(notebook)
    widget_states = copy.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in copy.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            if WIDGET_VIEW not in output.get("data", {}):
                outputs.append(output)
                continue
            text = widget_text(output.data[WIDGET_VIEW].get("model_id", ""), widget_states)
            text = output.data.get("text/plain") if text is None else text
            if text is not None:
                outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": text}))
        cell.outputs = outputs
    return copy


def with_slide_metadata(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    copy = nbformat.from_dict(notebook)
    previous_shown_type = None
    for cell in copy.cells:
        cell.metadata["slideshow"] = {"slide_type": slide_type(cell, previous_shown_type)}
        if cell.metadata["slideshow"]["slide_type"] != "skip":
            previous_shown_type = cell.cell_type
    return copy


def check_slide_js(js: Path) -> None:
    """Raise SystemExit naming ``js`` and the files it lacks when it does not hold every file the decks load."""
    missing = [name for name in SLIDE_FILES if not (js / name).is_file()]
    if missing:
        raise SystemExit(
            f"--js {js}: missing {', '.join(missing)}; expected the unpacked npm packages reveal.js@4, "
            "requirejs and jquery (`make slides` fetches them into .venv/slides-js with `npm pack`; if a fetch "
            "broke off there, delete that folder and run `make slides` again)"
        )


def copy_slide_js(js: Path, out: Path) -> None:
    """Copy the JavaScript and CSS the decks load from ``js`` (unpacked npm packages, checked) to ``out/js/``."""
    for name in SLIDE_FILES:
        (out / "js" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(js / name, out / "js" / name)


def build_slides(executed: Path, out: Path, js: Path | None = None) -> list[Path]:
    """One reveal.js deck ``out/<notebook>.slides.html`` per executed notebook; the decks written."""
    from nbconvert import SlidesExporter

    notebooks = executed_notebooks(executed)
    if js is not None:
        check_slide_js(js)
    prepare_out(out, "[0-9][0-9]_*.slides.html")
    # A 1600 x 1000 slide (scaled to the screen) fits 100-character code lines and the course's figures.
    exporter = SlidesExporter(
        raw_template=DECK_TEMPLATE,
        reveal_scroll=True,
        reveal_theme="white",
        reveal_width="1600",
        reveal_height="1000",
        reveal_number="c/t",
        reveal_transition="none",
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    if js is not None:  # offline decks: reveal.js, its style sheets, require.js and jQuery from out/js/
        copy_slide_js(js, out)
        exporter.reveal_url_prefix = "js/reveal.js"
        exporter.require_js_url = "js/requirejs/require.js"
        exporter.jquery_url = "js/jquery/dist/jquery.min.js"
    written = []
    for path, notebook in notebooks:
        body, _ = exporter.from_notebook_node(with_slide_metadata(without_widgets(notebook)))
        target = out / f"{path.stem}.slides.html"
        target.write_text(body)
        written.append(target)
    return written


def notebook_title(notebook: nbformat.NotebookNode, fallback: str) -> str:
    """The first markdown heading of a notebook, without its ``#``."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            return cell.source.lstrip()[2:].split("\n", 1)[0].strip()
    return fallback


def build_site(executed: Path, out: Path, slides: Path | None = None) -> Path:
    """Static HTML pages of the executed notebooks plus ``index.html`` linking them (and their decks); the index."""
    from nbconvert import HTMLExporter

    notebooks = executed_notebooks(executed)
    prepare_out(out, "[0-9][0-9]_*.html")
    exporter = HTMLExporter(template_name="lab", raw_template=PAGE_TEMPLATE)
    exporter.exclude_input_prompt = exporter.exclude_output_prompt = True
    rows = []
    for path, notebook in notebooks:
        # As on the slides: the solution cells point to notebooks/solutions/, which the site does not carry; both
        # parameter cells go (the defaults alone would show a full run's page as profile = "ci")
        notebook.cells = [cell for cell in notebook.cells if not tags(cell) & SKIPPED_ON_SLIDES]
        body, _ = exporter.from_notebook_node(without_widgets(notebook))
        (out / f"{path.stem}.html").write_text(body)
        deck = slides / f"{path.stem}.slides.html" if slides else None
        link = f' · <a href="{html.escape(os.path.relpath(deck, out))}">slides</a>' if deck and deck.exists() else ""
        rows.append(f'<li><a href="{path.stem}.html">{html.escape(notebook_title(notebook, path.stem))}</a>{link}</li>')
    index = out / "index.html"
    index.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>fashion-clip-course</title>"
        "<style>body{font-family:sans-serif;max-width:50em;margin:3em auto;line-height:1.6}</style></head><body>"
        f"<h1>fashion-clip-course</h1><p>Executed notebooks from <code>{html.escape(executed.name)}/</code>.</p>"
        f"<ol id='notebooks'>{''.join(rows)}</ol></body></html>"
    )
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.handouts", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="copy notebooks/ without solutions")
    student.add_argument("--out", type=Path, default=REPO_ROOT / "student")
    for name in ("slides", "site"):
        command = commands.add_parser(name, help=f"build the {name} from executed notebooks")
        command.add_argument("--executed", type=Path, default=REPO_ROOT / "outputs")
        command.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / name)
    commands.choices["slides"].add_argument("--js", type=Path, default=None)
    commands.choices["site"].add_argument("--slides", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "student":
        written = student_copy(args.out)
        print(f"student copy: {len(written)} notebooks without solutions in {args.out}")
    elif args.command == "slides":
        written = build_slides(args.executed, args.out, args.js)
        print(f"slides: {len(written)} decks in {args.out}" + ("" if args.js else " (scripts from the CDN)"))
    else:
        print(f"site: {build_site(args.executed, args.out, args.slides)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
