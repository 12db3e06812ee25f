"""End-to-end test of the served demo page: Voilà on localhost, driven by a real headless Chromium.

Starts Voilà as ``python -m course_utils.serve`` does, on a free port, opens the page in Debian's ``/usr/bin/chromium`` through the
Playwright Python package (no ``playwright install`` download), types a text query, waits for result thumbnails,
uploads a photo and a non-image file to the image demo, and saves screenshots under ``outputs/browser/``. Needs the
browser (``.ci/install_browser.sh``); fast once the model caches are warm (a cold first page view pretrains the tiny
CLIP, hence the long page timeout).
Run with ``pytest -m browser tests/test_browser.py``.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from course_utils.paths import REPO_ROOT, outputs_dir
from course_utils.serve import voila_command

TEST_CACHE = REPO_ROOT / "outputs" / "test-cache"  # the notebook runs' cache (tests/test_notebooks.py)

pytestmark = pytest.mark.browser

QUERY = "red striped shirt with long sleeves"
TOP_K = 8  # the notebook's default top_k
# Seconds for the page's first run (kernel start + the whole notebook). With warm caches that is 20-70 s on two
# cores; on a fresh clone this test runs before the notebook suite, so the page also pretrains and fine-tunes the tiny
# CLIP once (cached for everything after it), which can take many minutes.
PAGE_TIMEOUT = float(os.environ.get("FASHION_COURSE_BROWSER_TIMEOUT", "1200"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def red_png() -> bytes:
    """A small red PNG, the "photo" the test uploads."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def find_chromium() -> str | None:
    """``$FASHION_COURSE_CHROMIUM``, else Debian's ``/usr/bin/chromium``, else ``chromium`` on the PATH."""
    for candidate in (os.environ.get("FASHION_COURSE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    path = find_chromium()
    if path is None:
        pytest.skip(
            "no chromium found (/usr/bin/chromium or $FASHION_COURSE_CHROMIUM); run .ci/install_browser.sh as root"
        )
    return path


@pytest.fixture(scope="module")
def page_url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
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
