"""End-to-end tests of the served demo page, driven by a real headless Chromium.

Two servers, both started as ``python -m course_utils.serve`` does, on free localhost ports:

- the classroom server (the default): four viewers open the page at once and each types a text query
  (``benchmarks/bench_classroom.py`` with 4 pages: the benchmark's own code), then one viewer uploads a photo and a
  non-image file and runs the conditional and composed demos; screenshots go to ``outputs/browser/``;
- Voilà (``--voila``): a text query and two uploads through the notebook's widgets.

Chromium is Debian's ``/usr/bin/chromium`` driven through the Playwright Python package (no ``playwright
install`` download); install it with ``.ci/install_browser.sh``. Fast once the model caches are warm (a cold
cache pretrains the tiny CLIP first, hence the long start-up timeouts).
Run with ``pytest -m browser tests/test_browser.py``.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from course_utils.classroom import wait_until_served
from course_utils.paths import REPO_ROOT, outputs_dir
from course_utils.serve import voila_command
from tests.conftest import load_benchmark

TEST_CACHE = REPO_ROOT / "outputs" / "test-cache"  # the notebook runs' cache (tests/test_notebooks.py)

bench = load_benchmark("bench_classroom")  # the browser test runs the benchmark's own viewers

pytestmark = pytest.mark.browser

QUERY = "red striped shirt with long sleeves"
TOP_K = 8  # the notebook's default top_k
# Seconds for the page's first run (kernel start + the whole notebook). With warm caches that is 20-70 s on two
# cores; on a fresh clone this test runs before the notebook suite, so the page also pretrains and fine-tunes the tiny
# CLIP once (cached for everything after it), which can take many minutes.
PAGE_TIMEOUT = float(os.environ.get("FASHION_COURSE_BROWSER_TIMEOUT", "1200"))
CHROMIUM_FLAGS = bench.CHROMIUM_FLAGS


def red_png() -> bytes:
    """A small red PNG, the "photo" the test uploads."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Wait until the server accepts connections (a TCP probe: a GET would execute the notebook)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"voila exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.25)
    pytest.fail(f"voila did not listen on port {port} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stop Voilà and the kernels it started (by their process ids; kernels run in their own sessions)."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    for child in children:  # Voilà normally shuts its kernels down itself; make sure
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        child.kill()


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip(
        "playwright.sync_api", reason="the playwright Python package is not installed (requirements.txt)"
    )
    path = bench.find_chromium()
    if path is None:
        pytest.skip(
            "no chromium found (/usr/bin/chromium or $FASHION_COURSE_CHROMIUM); run .ci/install_browser.sh as root"
        )
    return path


@pytest.fixture(scope="module")
def page_url(tmp_path_factory) -> Iterator[str]:
    port = bench.free_port()
    folder = tmp_path_factory.mktemp("voila")
    log = folder / "voila.log"
    # a page view must not touch figures/ or data/cache; it shares the notebook runs' test cache
    env = {**os.environ, "FASHION_COURSE_FIGURES": str(folder / "figures"), "FASHION_COURSE_CACHE": str(TEST_CACHE)}
    with open(log, "w") as handle:
        # The command `python -m course_utils.serve` runs (without first importing the package a second time).
        process = subprocess.Popen(
            voila_command(port=port, show_tracebacks=True),
            cwd=REPO_ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, process, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(process)
        print(f"voila log: {log}")


def test_text_query_shows_result_images(chromium, page_url):
    from playwright.sync_api import sync_playwright

    shots = outputs_dir() / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,  # a fresh --user-data-dir
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(page_url, wait_until="commit", timeout=PAGE_TIMEOUT * 1000)
            box = page.locator(".fc-demo-text input[type='text']")
            box.wait_for(state="visible", timeout=PAGE_TIMEOUT * 1000)
            loaded = time.monotonic() - start
            box.fill(QUERY)
            box.press("Enter")
            thumbs = page.locator(".fc-demo-text .fc-result img.fc-thumb")
            thumbs.nth(TOP_K - 1).wait_for(state="visible", timeout=60_000)
            answered = time.monotonic() - start - loaded
            header = page.locator(".fc-demo-text .fc-header").inner_text()
            count = thumbs.count()
            widths = [thumbs.nth(i).evaluate("img => img.naturalWidth") for i in range(count)]
            # The image demo's upload button (its file input is not in the DOM: use the file chooser it opens),
            # first with a photo, then with a file that is not an image.
            for name, content, shown in [
                ("red.png", red_png(), ".fc-header"),
                ("notes.png", b"not an image", ".fc-error"),
            ]:
                with page.expect_file_chooser(timeout=30_000) as chooser:
                    page.locator(".fc-demo-image .widget-upload").click()
                chooser.value.set_files(files=[{"name": name, "mimeType": "image/png", "buffer": content}])
                page.locator(f".fc-demo-image {shown}", has_text=name).wait_for(timeout=60_000)
            uploaded = page.locator(".fc-demo-image .fc-message").inner_text()
            tracebacks = page.get_by_text("Traceback (most recent call last)").count()
            page.locator(".fc-demo-text").screenshot(path=str(shots / "07_text_demo.png"))
            # Voila scrolls inside a container, so grow the viewport to the tallest content for a whole-page shot.
            height = page.evaluate("Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))")
            page.set_viewport_size({"width": 1280, "height": min(int(height), 16000)})
            page.screenshot(path=str(shots / "07_retrieval_demo.png"), full_page=True)
        finally:
            context.close()
    print(
        f"page ready in {loaded:.1f} s, query answered in {answered:.1f} s; {count} thumbnails; screenshots in {shots}"
    )
    assert count == TOP_K
    assert all(width > 0 for width in widths), "a result thumbnail did not decode"
    assert QUERY in header and f"top {TOP_K}" in header
    assert "could not read 'notes.png' as an image" in uploaded
    assert tracebacks == 0, "the page shows a Python traceback"


# --- the classroom server (the default of `python -m course_utils.serve`) --------------------------------------------


@pytest.fixture(scope="module")
def classroom_url(tmp_path_factory) -> Iterator[str]:
    port = bench.free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path_factory.mktemp("classroom") / "server.log"
    env = {**os.environ, "FASHION_COURSE_CACHE": str(TEST_CACHE)}  # the notebook runs' warm cache
    process = bench.start_server(port, "ci", 4, log, env)  # python -m course_utils.serve --port … --profile ci
    try:
        bench.wait_for_server(url, process, log, PAGE_TIMEOUT)
        yield url
    finally:
        bench.stop_server(process)
        print(f"classroom server log: {log}")


@pytest.mark.parametrize("when", list(bench.TYPE_WHEN))
def test_four_viewers_at_once_each_get_their_results(chromium, classroom_url, when):
    """The benchmark's run, at 4 pages: one browser, 4 contexts, each types the query and waits for its thumbnails
    (as soon as its page is ready, all at the same moment once every page is, or once the browser is also idle)."""
    import asyncio

    shot = outputs_dir() / "browser" / f"classroom_4_pages_{when}.png"
    queries = bench.viewer_queries(4)  # four different queries: each page must show its own
    results = asyncio.run(
        bench.run_viewers(
            classroom_url, queries, chromium, TOP_K, timeout_s=120, deadline_s=300, screenshot=shot, when=when
        )
    )
    summary = bench.summarise(results)
    print(summary)
    assert summary["served"] == 4 and summary["failures"] == 0, summary["failure_reasons"]
    waited = [result.waited_s for result in results]
    assert all(w is None for w in waited) if when == "ready" else all(w >= 0 for w in waited)
    for query, result in zip(queries, results):
        assert result.thumbnails == TOP_K
        assert query in result.header and f"top {TOP_K}" in result.header
    assert shot.stat().st_size > 0
    assert wait_until_served(classroom_url)["answered"] >= 4


def test_uploads_conditional_and_composed_on_the_classroom_page(chromium, classroom_url):
    from playwright.sync_api import sync_playwright

    shots = outputs_dir() / "browser"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(classroom_url, timeout=120_000)
            page.wait_for_function("document.documentElement.dataset.ready === 'yes'", timeout=120_000)
            upload = page.locator(".fc-demo-image input[type=file]")
            upload.set_input_files(files=[{"name": "red.png", "mimeType": "image/png", "buffer": red_png()}])
            page.locator(".fc-demo-image .fc-header", has_text="upload red.png").wait_for(timeout=60_000)
            image_cards = page.locator(".fc-demo-image .fc-result img.fc-thumb").count()
            upload.set_input_files(files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"}])
            bad_upload = page.locator(".fc-demo-image .fc-error", has_text="notes.png")
            bad_upload.wait_for(timeout=60_000)
            page.locator(".fc-demo-conditional select[name=condition]").select_option("colour")
            page.locator(".fc-demo-conditional .fc-header", has_text="same colour").wait_for(timeout=60_000)
            change = page.locator(".fc-demo-composed input[name=modification]")
            change.fill("is blue")
            change.press("Enter")
            page.locator(".fc-demo-composed .fc-header", has_text="“is blue”").wait_for(timeout=60_000)
            composed_cards = page.locator(".fc-demo-composed .fc-result img.fc-thumb").count()
            tracebacks = page.get_by_text("Traceback (most recent call last)").count()
            page.screenshot(path=str(shots / "classroom_page.png"), full_page=True)
            message = bad_upload.inner_text()
        finally:
            browser.close()
    assert image_cards == TOP_K and composed_cards == TOP_K
    assert "could not read 'notes.png' as an image" in message
    assert tracebacks == 0, "the page shows a Python traceback"
