"""The classroom builds open in a real browser: a reveal.js deck and the static site, in headless Chromium.

Builds the decks and the site with ``course_utils.handouts`` from the executed ``ci`` notebooks in ``outputs/ci/``
(written by tests/test_notebooks.py, which ``make test`` runs first) or, when those are absent, from a small
executed notebook made here; opens one deck and the site index from ``file://`` URLs with Debian's Chromium through
the Playwright Python package (no browser download), checks that reveal.js initialised and moves to the next slide,
follows the index's first link, and saves screenshots under ``outputs/browser/``. Needs the offline slide scripts
that ``make slides`` fetches into ``.venv/slides-js`` (skips with the reason otherwise).
"""

from __future__ import annotations

import tempfile

import nbformat
import pytest
from test_browser import CHROMIUM_FLAGS, chromium  # noqa: F401  (the fixture finds /usr/bin/chromium)

from course_utils import handouts
from course_utils.paths import REPO_ROOT, outputs_dir

pytestmark = pytest.mark.browser

SLIDES_JS = REPO_ROOT / ".venv" / "slides-js"
EXECUTED_CI = REPO_ROOT / "outputs" / "ci"


def small_executed_notebook(folder):
    """A two-slide notebook with one executed output, standing in for the course's executed notebooks."""
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# 01 · A small deck\nWhat the first slide says."),
            nbformat.v4.new_code_cell("print(1 + 1)", outputs=[nbformat.v4.new_output("stream", text="2\n")]),
            nbformat.v4.new_markdown_cell("## A second slide\nMore text."),
        ]
    )
    nbformat.write(notebook, folder / "01_small_deck.ipynb")
    return folder


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    if not all((SLIDES_JS / name).is_file() for name in handouts.SLIDE_FILES):
        pytest.skip(f"offline slide scripts missing in {SLIDES_JS}: run `make slides` once (npm pack reveal.js ...)")
    root = tmp_path_factory.mktemp("classroom")
    has_ci = list(EXECUTED_CI.glob("01_*.ipynb"))
    executed = EXECUTED_CI if has_ci else small_executed_notebook(root)
    if has_ci:  # one notebook is enough to check the build; copy it so the decks stay small
        executed = root / "executed"
        executed.mkdir()
        (executed / has_ci[0].name).write_bytes(has_ci[0].read_bytes())
    decks = handouts.build_slides(executed, root / "slides", SLIDES_JS)
    index = handouts.build_site(executed, root / "site", root / "slides")
    return decks[0], index


def test_a_deck_and_the_site_open_in_chromium(builds, chromium):  # noqa: F811
    from playwright.sync_api import sync_playwright

    deck, index = builds
    shots = outputs_dir() / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 800},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(deck.as_uri())
            page.locator(".reveal.ready").wait_for(state="attached", timeout=30_000)
            first = page.locator(".slides section.present").first.inner_text()
            page.screenshot(path=str(shots / "slides_first.png"))
            page.keyboard.press("ArrowRight")
            page.wait_for_function("document.location.hash.length > 2", timeout=10_000)
            second = page.locator(".slides section.present").first.inner_text()
            page.screenshot(path=str(shots / "slides_second.png"))
            assert first.strip() and second.strip() and first != second

            page.goto(index.as_uri())
            links = page.locator("#notebooks li a")
            assert links.count() >= 2  # the notebook page and its deck
            page.screenshot(path=str(shots / "site_index.png"))
            links.first.click()
            page.wait_for_load_state()
            assert page.locator("h1").first.inner_text().strip()[:2].isdigit()  # "01 · ..."
            page.screenshot(path=str(shots / "site_notebook.png"))
        finally:
            context.close()
