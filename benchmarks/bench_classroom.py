"""A classroom opening the demo page at once: N headless Chromium pages against the classroom server on localhost.

Starts ``python -m course_utils.serve`` on a free localhost port (or uses ``--url``, which must be a loopback
address), waits until it answers, then opens N pages at once in ONE headless Chromium (one browser, N contexts:
N independent viewers with their own cookies and cache), types a text query in each and waits for its result
thumbnails — by default four times (``--type-when``), each in a fresh browser: each viewer typing as soon as its
own page is ready (its query then overlaps the other pages still loading on the same cores); all viewers typing at
the same moment once every page is ready; all together once every page is ready *and* the browser has gone
idle (a class told "now type" once everyone sees the page: N Chromium renderers keep the cores busy for seconds
after their pages' scripts have run, a start-up tail that is the browsers', not the demo's); and, from that same
moment, each viewer pressing Enter at its own time, drawn uniformly over ``--spread`` seconds (people finish
typing at different moments; all-settled is the worst case of this). Reports p50 / p95 / max, over the viewers
served, of the time to a ready page (navigation start -> the page's script has run, on the page's own clock), of
the time to results (Enter -> ``top_k`` decoded thumbnails under a header naming the query, page clock), and of the
server's own answer time for the phase's queries (arrival -> answer, from its ``/health``: it separates the server
from a browser whose N renderers share the same cores); failures with their reason; the peak memory of the serving
process(es) (RSS) and, separately, of the browser's processes (sum of RSS, which counts shared pages once per
process, and of PSS, which shares them out).

Before the browser, the same N viewers run as plain HTTP clients (threads released together: GET the page, POST
the query, accepting gzip as browsers do), twice: the second time the server has drawn the result thumbnails
already (``--no-http`` skips both): on a 2-core machine N Chromium renderers take most of the CPU from the server,
which students' browsers, on their own machines, would not; these rows show the server alone. Each phase also
reports the CPU seconds the server spent in it.

Bounded and local: every wait has a timeout, the whole page phase has ``--deadline``, the server it started is
stopped at the end, and nothing but 127.0.0.1 is contacted. Needs Debian's chromium (``.ci/install_browser.sh``)
and the playwright Python package; run it with warm caches (the server's first start on an empty cache trains
the tiny CLIP first).

    .venv/bin/python benchmarks/bench_classroom.py                 # 30 pages, ci profile
    .venv/bin/python benchmarks/bench_classroom.py --pages 8 --screenshots outputs/browser
    .venv/bin/python benchmarks/bench_classroom.py --json results/bench/classroom/<time>-course.json  # kept
    .venv/bin/python benchmarks/bench_classroom.py --readme     # README › Serving a classroom from the kept runs
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import html
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlencode, urlparse
from urllib.request import Request, urlopen

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import bench_records  # noqa: E402
from course_utils.classroom import wait_until_served  # noqa: E402
from course_utils.json_files import write_json  # noqa: E402
from course_utils.paths import REPO_ROOT, outputs_dir  # noqa: E402

# Words of the procedural catalogue: each viewer types its own query ("navy floral dress", …), as a class would.
COLOURS = ["red", "blue", "green", "black", "white", "yellow", "pink", "grey", "navy", "orange", "purple", "brown"]
PATTERNS = ["striped", "floral", "checked", "plain"]
GARMENTS = ["shirt", "dress", "trousers", "skirt", "jacket", "coat"]
TOP_K = 8  # the page's default top k
TYPE_WHEN = {
    "ready": "each types when its page is ready",
    "all-ready": "all type together once all are ready",
    "all-settled": "all type together once all are ready and the browser is idle",
    "spread": "each presses Enter at its own moment within {spread:g} s once all are ready and the browser is idle",
}
SPREAD_S = 5.0  # 'spread': Enter times drawn uniformly over this many seconds (a class typing three-word queries)
QUIET_CORES = 0.25  # 'all-settled': the browser counts as idle below this many cores busy over QUIET_WINDOW_S
QUIET_WINDOW_S = 1.0
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
# Installed in a ready page before Enter is pressed: notes when Enter goes down and resolves `window.fcAnswered`
# once `top_k` result thumbnails sit, decoded, under a header that names the query (a MutationObserver on the
# results area: no polling that would itself load 30 pages). Times are the page's own clock (performance.now()).
WATCH_RESULTS = """([query, k]) => {
  const box = document.querySelector('.fc-demo-text input[name=text]');
  const output = document.querySelector('.fc-demo-text .fc-output');
  window.fcAsked = null;
  box.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && window.fcAsked === null) window.fcAsked = performance.now();
  });
  const thumbs = () => [...output.querySelectorAll('.fc-result img.fc-thumb')];
  const shown = () => {
    const header = output.querySelector('.fc-header');
    return !!header && header.textContent.includes(query) && thumbs().length === k;
  };
  window.fcAnswered = new Promise((resolve) => {
    const observer = new MutationObserver(async () => {
      if (!shown()) return;
      observer.disconnect();
      const images = thumbs();
      await Promise.all(images.map((img) => img.decode().catch(() => null)));
      resolve({seconds: (performance.now() - window.fcAsked) / 1000,
               decoded: images.filter((img) => img.naturalWidth > 0).length});
    });
    observer.observe(output, {childList: true, subtree: true});
  });
}"""
# Navigation start -> the page fully received (responseEnd), and -> the end of DOMContentLoaded (the page's
# script has run: the forms answer); page clock, seconds.
PAGE_SECONDS = """() => {
  const navigation = performance.getEntriesByType('navigation')[0];
  return [navigation.responseEnd / 1000, navigation.domContentLoadedEventEnd / 1000];
}"""


def viewer_queries(pages: int, seed: int = 0) -> list[str]:
    """``pages`` different text queries (colour, pattern, garment), in a seeded order."""
    combos = [f"{c} {p} {g}" for c in COLOURS for p in PATTERNS for g in GARMENTS]
    random.Random(seed).shuffle(combos)
    if pages > len(combos):
        raise ValueError(f"at most {len(combos)} different queries, asked for {pages}")
    return combos[:pages]


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


@dataclass
class PageResult:
    """One viewer; ``None`` where it did not get there.

    ``received_s``, ``ready_s`` and ``results_s`` are the page's own times (navigation start -> the page received;
    -> its script has run; Enter -> thumbnails decoded); ``*_wall_s`` are the same spans seen from this script
    (with the browser's own latency); ``opened_s`` places them on one clock for every viewer of a phase: this one's
    page was ready ``opened_s + ready_wall_s`` seconds after the phase began, and Enter went down ``waited_s`` later.
    """

    page: int
    opened_s: float | None = None  # the phase's start -> this viewer began opening its page (this script's clock)
    received_s: float | None = None
    ready_s: float | None = None
    results_s: float | None = None
    ready_wall_s: float | None = None
    results_wall_s: float | None = None
    waited_s: float | None = None  # all but 'ready': ready -> Enter (the starting line, plus its delay in 'spread')
    thumbnails: int = 0
    header: str = ""
    failure: str | None = None


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds ``processes`` have spent so far (those that have exited count 0)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


class ServerCpu:
    """CPU seconds (user + system) the server's process tree spends from now until :meth:`used`.

    Unlike wall-clock times this does not grow when other programs share the cores: it is what serving the class
    costs, whoever else runs.
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.start = self._total()

    def _total(self) -> float:
        return cpu_seconds(MemoryMonitor._tree(self.pid)) if self.pid is not None else 0.0

    def used(self) -> float | None:
        return round(self._total() - self.start, 2) if self.pid is not None else None


class MemoryMonitor:
    """Peak memory of the server's process tree (RSS) and of this script's chromium processes (RSS and PSS).

    Samples RSS on a thread every ``interval`` seconds until :meth:`stop`; PSS, which reads every process's
    /proc/<pid>/smaps (costly with ~100 browser processes on busy cores), only when :meth:`sample_pss` is called
    (once, with every page open and answered).
    """

    def __init__(self, server_pid: int | None, interval: float = 1.0) -> None:
        self.server_pid, self.interval = server_pid, interval
        self.peak = {"server_rss": 0, "browser_rss": 0, "browser_pss": 0, "browser_processes": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree(pid: int) -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _browser(self) -> list[psutil.Process]:
        server = {p.pid for p in self._tree(self.server_pid)} if self.server_pid else set()
        found = []
        for process in self._tree(os.getpid())[1:]:
            try:
                if process.pid not in server and "chrom" in process.name().lower():
                    found.append(process)
            except psutil.NoSuchProcess:
                continue
        return found

    @staticmethod
    def _sum(processes: list[psutil.Process], field: str) -> int:
        total = 0
        for process in processes:
            try:
                info = process.memory_full_info() if field == "pss" else process.memory_info()
                total += getattr(info, field)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.server_pid:
                self._max("server_rss", self._sum(self._tree(self.server_pid), "rss"))
            browser = self._browser()
            self._max("browser_rss", self._sum(browser, "rss"))
            self._max("browser_processes", len(browser))
            self._stop.wait(self.interval)

    def browser_cpu_seconds(self) -> float:
        """User + system CPU seconds the browser's processes have spent so far."""
        return cpu_seconds(self._browser())

    def sample_pss(self) -> None:
        self._max("browser_pss", self._sum(self._browser(), "pss"))

    def _max(self, key: str, value: int) -> None:
        self.peak[key] = max(self.peak[key], value)

    def start(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(10)
        return dict(self.peak)


class Together:
    """A starting line: viewers wait until every one has arrived (or failed), then press Enter together.

    With ``settle`` (a coroutine function) the line opens only once it has returned: e.g. :func:`browser_quiet`,
    a class told to type once every page has finished loading rather than at the instant the last one appears.
    """

    def __init__(self, viewers: int, settle=None) -> None:
        self.waiting, self.all_here, self.settle = viewers, asyncio.Event(), settle

    def arrive(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        if self.settle is not None:
            await self.settle()
        self.all_here.set()


async def browser_quiet(monitor: MemoryMonitor, timeout_s: float) -> None:
    """Return once this script's browser processes use fewer than :data:`QUIET_CORES` cores over a
    :data:`QUIET_WINDOW_S` window (the pages' loading work is done), or after ``timeout_s``.

    Every Chromium renderer keeps working for seconds after its page's script has run (measured with a trivial
    page as with the demo page): pressing Enter at that instant measures the browsers' start-up tail as much as
    the demo."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = monitor.browser_cpu_seconds()
        await asyncio.sleep(QUIET_WINDOW_S)
        if monitor.browser_cpu_seconds() - before < QUIET_CORES * QUIET_WINDOW_S:
            return


async def one_viewer(
    context,
    url: str,
    index: int,
    query: str,
    top_k: int,
    timeout_s: float,
    phase_start: float,
    together: Together | None = None,
    delay_s: float = 0.0,
) -> PageResult:
    """Open the page in ``context``, type ``query`` in the text demo, wait for its results; ``phase_start``: when
    the phase began (``time.perf_counter()``), the clock its viewers share.

    Without ``together`` the viewer presses Enter as soon as its page is ready (while other pages may still load);
    with it, once every viewer's page is ready, ``delay_s`` seconds after the starting line opens."""
    result, arrived = PageResult(index), False
    page = await context.new_page()
    timeout_ms = timeout_s * 1000
    start = time.perf_counter()
    result.opened_s = start - phase_start
    try:
        await page.goto(url, wait_until="commit", timeout=timeout_ms)
        await page.wait_for_function(
            "document.documentElement.dataset.ready === 'yes'", timeout=timeout_ms, polling=100
        )
        box = page.locator(".fc-demo-text input[name=text]")
        await box.wait_for(state="visible", timeout=timeout_ms)
        result.ready_wall_s = time.perf_counter() - start
        result.received_s, result.ready_s = await page.evaluate(PAGE_SECONDS)
        await box.fill(query)
        await page.evaluate(WATCH_RESULTS, [query, top_k])
        if together is not None:
            arrived = True
            together.arrive()
            await asyncio.wait_for(together.all_here.wait(), timeout_s)
            await asyncio.sleep(delay_s)
        asked = time.perf_counter()
        if together is not None:
            result.waited_s = asked - start - result.ready_wall_s
        await box.press("Enter")
        answer = await asyncio.wait_for(page.evaluate("window.fcAnswered"), timeout_s)
        result.results_wall_s = time.perf_counter() - asked
        result.results_s = answer["seconds"]
        result.thumbnails = answer["decoded"]
        result.header = await page.locator(".fc-demo-text .fc-header").inner_text()
        if result.thumbnails != top_k:
            result.failure = f"{result.thumbnails} of {top_k} result thumbnails decoded"
        elif await page.get_by_text("Traceback (most recent call last)").count():
            result.failure = "the page shows a Python traceback"
    except Exception as err:  # a failed viewer is a result, not a crash of the benchmark
        result.failure = f"{type(err).__name__}: {(str(err).strip() or 'timed out').splitlines()[0][:200]}"
    finally:
        if together is not None and not arrived:
            together.arrive()  # a failed viewer must not hold the others at the starting line
    return result


async def run_viewers(
    url: str,
    queries: list[str],
    chromium: str,
    top_k: int = TOP_K,
    timeout_s: float = 60.0,
    deadline_s: float = 300.0,
    screenshot: Path | None = None,
    monitor: MemoryMonitor | None = None,
    when: str = "ready",
    spread_s: float = SPREAD_S,
) -> list[PageResult]:
    """One viewer per query, all at once, in one headless Chromium (one context each); all stay open until the
    last is done. ``when`` (a key of :data:`TYPE_WHEN`): each viewer presses Enter once its page is ready, or all
    at the same moment once every page is ready ('all-ready'), and the browser is idle ('all-settled'), or, from
    that moment, each at its own time drawn uniformly (seeded) over ``spread_s`` seconds ('spread').
    ``monitor``: samples memory during the run (and tells when the browser is idle; one is made if not given)."""
    pages = len(queries)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            contexts = [await browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(pages)]
            own_monitor, monitor = monitor is None, (monitor or MemoryMonitor(None)).start()
            settle = (lambda: browser_quiet(monitor, timeout_s)) if when in ("all-settled", "spread") else None
            line = Together(pages, settle) if when != "ready" else None
            rng = random.Random(0)
            delays = [rng.uniform(0, spread_s) if when == "spread" else 0.0 for _ in queries]
            phase_start = time.perf_counter()
            work = [
                one_viewer(context, url, i, query, top_k, timeout_s, phase_start, line, delay)
                for i, (context, query, delay) in enumerate(zip(contexts, queries, delays))
            ]
            try:
                results = await asyncio.wait_for(asyncio.gather(*work), deadline_s)
            except asyncio.TimeoutError:
                results = [
                    PageResult(i, failure=f"the whole run passed --deadline {deadline_s:.0f} s") for i in range(pages)
                ]
            monitor.sample_pss()
            if screenshot is not None and contexts and contexts[0].pages:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                await contexts[0].pages[0].screenshot(path=str(screenshot), full_page=True)
        finally:
            await browser.close()
            if own_monitor:
                monitor.stop()
    return list(results)


def summarise(results: list[PageResult]) -> dict:
    """Served / failed counts, p50 / p95 / max (and min) of each time over the served viewers (a failed viewer's
    times are not those of a viewer served), and :func:`first_enter_after_last_ready`."""

    def stats(values: list[float]) -> dict:
        if not values:
            return {"p50": None, "p95": None, "max": None, "min": None}
        array = np.asarray(values)
        return {
            "p50": float(np.percentile(array, 50)),
            "p95": float(np.percentile(array, 95)),
            "max": float(array.max()),
            "min": float(array.min()),
        }

    served = [r for r in results if r.failure is None and r.results_s is not None]
    return {
        "pages": len(results),
        "served": len(served),
        "failures": len(results) - len(served),
        "failure_reasons": sorted({r.failure for r in results if r.failure}),
        **{
            key: stats([getattr(r, key) for r in served if getattr(r, key) is not None])
            for key in ("received_s", "ready_s", "results_s", "ready_wall_s", "results_wall_s", "waited_s")
        },
        "first_enter_after_last_ready_s": first_enter_after_last_ready(results),
    }


def first_enter_after_last_ready(results: list[PageResult]) -> float | None:
    """Seconds from the moment the last page was ready to the first Enter of any viewer, on this script's clock
    (:attr:`PageResult.opened_s`); ``None`` where no viewer waited at a starting line (each typed when its page was
    ready) or none got there."""
    ready = [r.opened_s + r.ready_wall_s for r in results if r.opened_s is not None and r.ready_wall_s is not None]
    entered = [
        r.opened_s + r.ready_wall_s + r.waited_s for r in results if r.opened_s is not None and r.waited_s is not None
    ]
    return round(min(entered) - max(ready), 3) if entered else None


def start_server(
    port: int, profile: str, workers: int, log: Path, env: dict | None = None, precomputed: list[str] | None = None
) -> subprocess.Popen:
    """``python -m course_utils.serve`` on 127.0.0.1:``port``, its output in ``log`` (``env``: its environment).

    ``precomputed``: run ``precomputed_server.py`` instead, with the answers to these text queries computed
    before it serves (the server's share of a query then is almost nothing)."""
    program = [str(Path(__file__).with_name("precomputed_server.py"))] if precomputed else ["-m", "course_utils.serve"]
    command = [sys.executable, *program, "--port", str(port), "--profile", profile, "--workers", str(workers)]
    if precomputed:
        command += ["--top-k", str(TOP_K), "--texts", *precomputed]
    with open(log, "w") as handle:
        return subprocess.Popen(command, cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)


def stop_server(process: subprocess.Popen) -> None:
    """Ctrl+C (the server's own clean stop), then terminate / kill if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def wait_for_server(url: str, process: subprocess.Popen | None, log: Path | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log else ""
            raise RuntimeError(f"the server exited with {process.returncode}:\n{tail}")
        try:
            wait_until_served(url, timeout=min(5.0, max(0.1, deadline - time.monotonic())))
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def span(stats: dict | None) -> str:
    """``p50 / p95 / max`` in seconds, or a dash."""
    if not stats or stats.get("p50") is None:
        return "–"
    return f"{stats['p50']:.2f} / {stats['p95']:.2f} / {stats['max']:.2f}"


# The two plain-HTTP phases: the first time the server also draws the result thumbnails, the second they are drawn.
HTTP_MODES = ("plain HTTP clients (no browser)", "plain HTTP clients (no browser), the same queries again")
ACCEPT_GZIP = {"Accept-Encoding": "gzip"}  # what browsers send: the server may compress what it answers


def read_body(response) -> bytes:
    """The body of ``response``, decompressed when the server gzipped it."""
    body = response.read()
    return gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body


def http_viewers(url: str, queries: list[str], top_k: int = TOP_K, timeout_s: float = 60.0) -> list[PageResult]:
    """The server alone: one client thread per query, released together, each GETs the page, then POSTs its query
    (accepting gzip, as browsers do).

    No browser, so the times are the server's (and the loopback's): ``ready_s`` is the page fully received,
    ``results_s`` the answer fully received.
    """
    barrier = threading.Barrier(len(queries))

    def viewer(index: int, query: str) -> PageResult:
        result = PageResult(index)
        try:
            barrier.wait(timeout_s)
            start = time.perf_counter()
            with urlopen(Request(url, headers=ACCEPT_GZIP), timeout=timeout_s) as response:
                page = read_body(response)
            result.ready_s = result.received_s = time.perf_counter() - start
            if b'data-kind="text"' not in page:
                raise ValueError("the page has no text demo")
            request = Request(
                f"{url}query/text?{urlencode({'text': query, 'top_k': top_k})}",
                data=b"",
                method="POST",
                headers=ACCEPT_GZIP,
            )
            asked = time.perf_counter()
            with urlopen(request, timeout=timeout_s) as response:
                answer = read_body(response).decode()
            result.results_s = time.perf_counter() - asked
            header = re.search(r'class="fc-header"[^>]*>(.*?)</div>', answer)
            result.header = html.unescape(header.group(1)) if header else ""
            result.thumbnails = answer.count('class="fc-result"')
            if result.thumbnails != top_k or query not in result.header:
                result.failure = f"{result.thumbnails} of {top_k} results, header {result.header[:80]!r}"
        except Exception as err:  # a failed client is a result
            result.failure = f"{type(err).__name__}: {str(err)[:200]}"
        return result

    with ThreadPoolExecutor(len(queries)) as pool:
        return list(pool.map(viewer, range(len(queries)), queries))


def starting_line(summary: dict) -> str:
    """``" (first Enter 8.5 s after the last page was ready)"`` for a phase whose viewers waited at a starting line
    (``""`` for one without). A record kept before the viewers' start times has only each viewer's own wait from
    its ready page to its Enter, and the shortest of those is what it shows (in 'spread' not the gap after the last
    page was ready: a viewer ready earlier can have pressed Enter sooner after its own page)."""
    if "first_enter_after_last_ready_s" in summary:
        gap = summary["first_enter_after_last_ready_s"]
        return f" (first Enter {gap:.1f} s after the last page was ready)" if gap is not None else ""
    waited = summary["waited_s"]["min"]
    return f" (shortest wait from a viewer's ready page to its Enter: {waited:.1f} s)" if waited is not None else ""


def answers_so_far(url: str) -> int:
    """How many answer times the server has kept so far: each query it answered, or computed for a viewer who had
    gone (its ``/health``'s ``answered`` + ``abandoned``; the benchmark's viewers send text queries only)."""
    report = wait_until_served(url)
    return report["answered"] + report["abandoned"]


class ServerPhase:
    """What one phase costs the server, from now until :meth:`measured`: its CPU seconds (:class:`ServerCpu`) and
    the answer times of this phase's text queries alone, as many of the last ones from ``/health`` as it answered
    meanwhile (:func:`answers_so_far` before and after, so that where some viewers never pressed Enter the window
    does not reach back into an earlier phase's answers)."""

    def __init__(self, url: str, server_pid: int | None) -> None:
        self.url, self.cpu, self.answered_before = url, ServerCpu(server_pid), answers_so_far(url)

    def measured(self, results: list[PageResult], monitor: MemoryMonitor) -> dict:
        """``{"results", "cpu_s", "memory", "server_seconds"}`` of the phase whose viewers gave ``results``
        (``memory``: ``monitor``'s peaks, which stops it; ``server_seconds`` ``None`` when no answer was sent)."""
        cpu_s, memory = self.cpu.used(), monitor.stop()
        answered = answers_so_far(self.url) - self.answered_before
        server_seconds = wait_until_served(self.url, last=answered)["answer_seconds"].get("text") if answered else None
        return {"results": results, "cpu_s": cpu_s, "memory": memory, "server_seconds": server_seconds}


def table(rows: list[dict]) -> str:
    """The README table: one row per phase (``mode``, ``summary``, ``server_seconds``, ``cpu_s``, ``memory``)."""
    lines = [
        "| viewers at once | served | failures | page ready s | text query s | server answer s | server CPU s "
        "| server RSS peak | browser peak RSS sum / PSS sum |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        summary, memory = row["summary"], row["memory"]
        server = gib(memory["server_rss"]) if memory.get("server_rss") else "–"
        browser = (
            f"{gib(memory['browser_rss'])} / {gib(memory['browser_pss'])} ({memory['browser_processes']} processes)"
            if memory.get("browser_rss")
            else "no browser"
        )
        mode = row["mode"] + starting_line(summary)
        lines.append(
            f"| {summary['pages']}, {mode} | {summary['served']} | {summary['failures']} | "
            f"{span(summary['ready_s'])} | {span(summary['results_s'])} | {span(row['server_seconds'])} | "
            f"{row['cpu_s'] if row['cpu_s'] is not None else '–'} | {server} | {browser} |"
        )
    return "\n".join(lines)


# --- the README's section, rendered from the committed runs -------------------------------------------------------

RECORDS = bench_records.BENCH_RECORDS / "classroom"
README_MARKERS = ("<!-- bench-classroom:start -->", "<!-- bench-classroom:end -->")
# issue 17's goals: p95 of a ready page and of a text query, and the memory of the serving process
GOAL_READY_S, GOAL_QUERY_S, GOAL_MEMORY_BYTES = 10.0, 1.0, 6 * 2**30
PHASES = {  # a phase's key -> its name in the README's lists, in the order the benchmark runs them
    "http": "plain HTTP, thumbnails drawn the first time",
    "http-again": "plain HTTP, thumbnails drawn",
    "ready": "each types when its page is ready",
    "all-ready": "all at once when every page is ready",
    "all-settled": "all at once once the browser is idle",
    "spread": "Enter presses spread over `--spread` seconds",
}


def phase_key(phase: dict) -> str:
    """A recorded phase's key in :data:`PHASES`."""
    return phase.get("when") or {HTTP_MODES[0]: "http", HTTP_MODES[1]: "http-again"}[phase["mode"]]


def _p95s(runs: list[dict], key: str, measure: str = "results_s") -> list[float]:
    """The p95 of ``measure`` in phase ``key`` of each run that has the phase."""
    return [
        phase["summary"][measure]["p95"]
        for run in runs
        for phase in run["phases"]
        if phase_key(phase) == key and phase["summary"][measure]["p95"] is not None
    ]


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values) + " s"


def _runs(count: int) -> str:
    """``"1 run"``, ``"3 runs"``."""
    return f"{count} run" + ("" if count == 1 else "s")


def _met(runs: list[dict], holds) -> str:
    return f"{sum(bool(holds(run)) for run in runs)} of {_runs(len(runs))}"


def runs_by_host(runs: list[dict]) -> dict[str, list[dict]]:
    """``runs`` grouped by their processor (:func:`course_utils.bench_records.cpu_generation`; records kept before
    runs named it form the group ``""``), in the order of each host's first run."""
    hosts: dict[str, list[dict]] = {}
    for run in runs:
        hosts.setdefault(bench_records.cpu_generation(run["conditions"]), []).append(run)
    return hosts


def readme_section(runs: list[dict]) -> str:
    """The README's measured part of the classroom section: one :func:`host_section` per host
    (:func:`runs_by_host`). Every number comes from ``runs``."""
    return "\n\n".join(host_section(host_runs) for host_runs in runs_by_host(runs).values())


def host_section(runs: list[dict]) -> str:
    """The measured part for the runs of one host: the last classroom-server run's table (with the all-at-once
    phase of the last ``--server precomputed`` run as its last row), each run's text-query p95 per phase, and how
    many runs meet each of issue 17's goals."""
    course = [run for run in runs if run["conditions"]["server"] == "course"]
    precomputed = [run for run in runs if run["conditions"]["server"] == "precomputed"]
    processor = bench_records.processor(runs[0]["conditions"])
    if not course:
        raise SystemExit(f"no run of the classroom server (--server course) among the records of {processor}")
    last, conditions = course[-1], course[-1]["conditions"]
    rows = list(last["phases"])
    if precomputed:
        rows += [
            {
                **phase,
                "mode": f"{phase['mode']}, against `--server precomputed` "
                f"of {precomputed[-1]['conditions']['date_utc'][-5:]} UTC",
            }
            for phase in precomputed[-1]["phases"]
            if phase_key(phase) == "all-settled"
        ]
    commits = sorted({run["conditions"].get("commit", "unknown") for run in runs})
    setups = [run_setup(run) for run in runs]
    setup = (
        f"all with {setups[0]}, {processor}"
        if len(set(setups)) == 1
        else "set up run by run, oldest first: "
        + "; ".join(f"{run['conditions']['date_utc']} UTC {each}" for run, each in zip(runs, setups))
        + f"; {processor}"
    )
    intro = (
        f"**Measured {course[0]['conditions']['date_utc']} to {runs[-1]['conditions']['date_utc']} UTC**: "
        f"{_runs(len(course))} of the classroom server and {len(precomputed)} with `--server precomputed`, one after "
        f"another, {setup}, load average before each run "
        f"{', '.join(str(run['conditions']['load_average_before_after'][0]) for run in runs)}; commit "
        f"{', '.join(commits)}; the "
        f"records are in `results/bench/classroom/`. The table is the last run of the classroom server "
        f"({conditions['date_utc']} UTC, load average {conditions['load_average_before_after'][0]} before it)"
        + ("; its last row is the all-at-once phase of the last precomputed run" if precomputed else "")
        + ". p50 / p95 / max seconds over the served viewers:"
    )
    per_phase = "; ".join(
        f"{name} {_seconds(_p95s(course, key))}" for key, name in PHASES.items() if _p95s(course, key)
    )
    every_run = f"**Text query p95 in each run**, oldest first: {per_phase}."
    if precomputed:
        every_run += (
            f" With `--server precomputed`, {PHASES['all-settled']}: {_seconds(_p95s(precomputed, 'all-settled'))}."
        )
    browser = [key for key in PHASES if not key.startswith("http")]

    def all_served(run: dict) -> bool:
        return all(phase["summary"]["failures"] == 0 for phase in run["phases"])

    def ready_in_time(run: dict) -> bool:
        return all(p95 <= GOAL_READY_S for key in browser for p95 in _p95s([run], key, "ready_s"))

    def answered_in_time(key: str):
        return lambda run: all(p95 <= GOAL_QUERY_S for p95 in _p95s([run], key))

    ready = [p95 for key in browser for p95 in _p95s(course, key, "ready_s")]
    memory = [run_max(run, "server_rss") for run in course]
    queries = "; ".join(
        f"{name} in {_met(course, answered_in_time(key))}" for key, name in PHASES.items() if _p95s(course, key)
    )
    goals = (
        f"**Against the goals**, over the {_runs(len(course))} of the classroom server: every viewer served with "
        f"no failure in {_met(course, all_served)}; page ready ≤ {GOAL_READY_S:g} s at p95 in every Chromium "
        f"phase in {_met(course, ready_in_time)} (p95 {min(ready):.1f}–{max(ready):.1f} s); the serving "
        f"process {gib(min(memory))}–{gib(max(memory))} at its peak (≤ {GOAL_MEMORY_BYTES / 2**30:g} GiB in "
        f"{_met(course, lambda run: run_max(run, 'server_rss') <= GOAL_MEMORY_BYTES)}); a text query "
        f"≤ {GOAL_QUERY_S:g} s at p95: {queries}."
    )
    return "\n\n".join([intro, table(rows), every_run, goals])


def run_setup(run: dict) -> str:
    """``"`--pages 30`, ci profile, 4 query threads, one different query per viewer, x86_64, 2 cores, 24 GiB"``: what
    a run's record says its numbers depend on (the cores it pinned and the browser's niceness only where it set
    them)."""
    conditions = run["conditions"]
    queries = conditions["queries"]
    pinned = [
        f"{side} on cores {conditions[f'{side}_cpus']}"
        for side in ("server", "browser")
        if conditions[f"{side}_cpus"] != "all"
    ]
    nice = [f"browser niceness {conditions['browser_nice']}"] if conditions["browser_nice"] else []
    return ", ".join(
        [
            f"`--pages {run['phases'][0]['summary']['pages']}`",
            f"{conditions['profile']} profile",
            f"{conditions['workers']} query threads",
            "one different query per viewer" if queries == "one per viewer" else f"every viewer querying {queries!r}",
            *pinned,
            *nice,
            conditions["machine"],
        ]
    )


def run_max(run: dict, field: str) -> int:
    """The largest ``memory[field]`` over a run's phases (0 when no phase has it)."""
    return max((phase["memory"].get(field) or 0 for phase in run["phases"]), default=0)


def write_readme(check: bool, readme: Path = bench_records.README, folder: Path = RECORDS) -> int:
    """README › Serving a classroom's measured part from the runs kept in ``folder`` (``check``: compare only)."""
    return bench_records.render_readme(Path(__file__).name, folder, README_MARKERS, readme_section, check, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=30, help="viewers opening the page at once (default 30)")
    parser.add_argument("--profile", default="ci", choices=["ci", "full"], help="the server's catalogue")
    parser.add_argument("--workers", type=int, default=4, help="the server's query threads")
    parser.add_argument("--url", default=None, help="use a running server on this loopback URL instead of starting one")
    parser.add_argument(
        "--server",
        default="course",
        choices=["course", "precomputed"],
        help="'course': the classroom server; 'precomputed': the same with the viewers' text answers "
        "computed before the phases (benchmarks/precomputed_server.py), to separate the "
        "browsers' share of the time to results from the server's",
    )
    parser.add_argument(
        "--query",
        default=None,
        help="one query for every viewer (default: a different one per viewer, e.g. 'navy floral dress')",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds each wait of a page may take")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds the whole page phase may take")
    parser.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for the server")
    parser.add_argument("--no-http", action="store_true", help="skip the browser-less phase")
    parser.add_argument(
        "--type-when",
        nargs="+",
        choices=list(TYPE_WHEN),
        default=list(TYPE_WHEN),
        help="browser phases, each in a fresh browser: 'ready' = each viewer types as soon as its "
        "page is ready (its query overlaps other pages still loading); 'all-ready' = all type "
        "at the same moment once every page is ready; 'all-settled' = the same once the browser "
        "is idle too; 'spread' = from then on, each at its own moment within --spread seconds "
        "(default: all four)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=SPREAD_S,
        help=f"'spread': seconds over which the viewers' Enter presses are drawn (default {SPREAD_S:g})",
    )
    parser.add_argument("--screenshots", type=Path, default=None, help="save the first page's screenshot here")
    parser.add_argument("--json", type=Path, default=None, help="write results here (default outputs/bench/)")
    parser.add_argument(
        "--server-cpus",
        type=int,
        nargs="+",
        default=None,
        help="pin the server to these CPU cores (e.g. 0), to see it apart from the browser",
    )
    parser.add_argument(
        "--browser-cpus",
        type=int,
        nargs="+",
        default=None,
        help="pin the browser (and this script) to these CPU cores (e.g. 1)",
    )
    parser.add_argument(
        "--browser-nice",
        type=int,
        default=0,
        help="run the browser at this niceness (e.g. 10: it yields the cores to the server, as "
        "students' browsers on their own machines would); default 0",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help=f"run nothing: render the README's classroom benchmark section from the records in "
        f"{RECORDS.relative_to(REPO_ROOT)}/ (with --check: only compare, exit 1 when it differs)",
    )
    parser.add_argument("--check", action="store_true", help="with --readme: compare only")
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme(args.check)
    if args.server_cpus and args.url:
        parser.error(
            "--server-cpus pins the server this script starts, and with --url it starts none: leave out "
            "--server-cpus, or --url to let the script start (and pin) its own server"
        )
    if not 1 <= args.pages <= 100:
        parser.error(f"--pages must be between 1 and 100 (one machine, bounded), got {args.pages}")
    chromium = find_chromium()
    if chromium is None:
        print("no chromium found: run `bash .ci/install_browser.sh` as root", file=sys.stderr)
        return 2
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"--url must be on this machine (127.0.0.1 or localhost), got {args.url}")

    folder = outputs_dir() / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    process, log, startup_s = None, None, None
    if args.url:
        url = args.url.rstrip("/") + "/"
    else:
        port = free_port()
        url, log = f"http://127.0.0.1:{port}/", folder / "bench_classroom_server.log"
        started = time.perf_counter()
    queries = [args.query] * args.pages if args.query else viewer_queries(args.pages)
    if not args.url:
        process = start_server(
            port,
            args.profile,
            args.workers,
            log,
            precomputed=sorted(set(queries)) if args.server == "precomputed" else None,
        )
    screenshot = args.screenshots / f"classroom_{args.pages}_pages.png" if args.screenshots else None
    server_pid = process.pid if process else None
    rows = []
    try:
        wait_for_server(url, process, log, args.startup_timeout)
        if process is not None:
            startup_s = round(time.perf_counter() - started, 1)
        run_conditions = bench_records.RunConditions()  # the date, command, load and CPU ticks as the phases start
        if args.server_cpus and process is not None:
            for server_process in MemoryMonitor._tree(process.pid):
                server_process.cpu_affinity(args.server_cpus)
        # first, so that no browser shares the cores with it; twice: the first time the server also draws the
        # result thumbnails (PNG), the second time they are drawn and the server does what each query must
        for mode in [] if args.no_http else HTTP_MODES:
            monitor, server = MemoryMonitor(server_pid).start(), ServerPhase(url, server_pid)
            results = http_viewers(url, queries, TOP_K, args.timeout)
            rows.append({"mode": mode, **server.measured(results, monitor)})
        if args.browser_cpus:
            os.sched_setaffinity(0, args.browser_cpus)  # inherited by the browser this script starts
        if args.browser_nice:
            os.nice(args.browser_nice)  # this process and the browser it starts; the server keeps its priority
        for when in args.type_when:
            monitor, server = MemoryMonitor(server_pid), ServerPhase(url, server_pid)  # run_viewers starts monitor
            results = asyncio.run(
                run_viewers(
                    url, queries, chromium, TOP_K, args.timeout, args.deadline, screenshot, monitor, when, args.spread
                )
            )
            rows.append(
                {
                    "mode": f"headless Chromium pages, {TYPE_WHEN[when].format(spread=args.spread)}",
                    "when": when,
                    **server.measured(results, monitor),
                }
            )
        conditions = run_conditions.finish(
            profile=args.profile,
            workers=args.workers,
            queries=args.query or "one per viewer",
            server="given by --url" if args.url else args.server,
            browser_nice=args.browser_nice,
            server_cpus=args.server_cpus or "all",
            browser_cpus=args.browser_cpus or "all",
            server_startup_s=startup_s,
            chromium=chromium,
        )
    finally:
        if process is not None:
            stop_server(process)

    for row in rows:
        row["summary"] = summarise(row["results"])
    record = {
        "conditions": conditions,
        "phases": [
            {**{k: v for k, v in row.items() if k != "results"}, "pages": [asdict(r) for r in row["results"]]}
            for row in rows
        ],
    }
    out = args.json or folder / f"bench_classroom_{args.pages}.json"
    write_json(out, record)  # atomic, like every record the course keeps
    (load_before, load_after), steal = conditions["load_average_before_after"], bench_records.cpu_steal(conditions)
    print(
        f"{conditions['date_utc']} UTC · {conditions['machine']} · load average {load_before:.1f} before, "
        f"{load_after:.1f} after · CPU steal {steal or 'unknown'} · profile {args.profile} · {args.workers} query "
        f"threads · server {conditions['server']}, start {startup_s} s · cores: server "
        f"{conditions['server_cpus']}, browser {conditions['browser_cpus']} · browser niceness {args.browser_nice}"
    )
    print(table(rows))
    browser = rows[-1]["summary"]
    print(
        "p50 / p95 / max seconds over the served viewers. Chromium rows, on the page's clock: page ready = "
        f"navigation start -> the page's script has run; text query = Enter -> {TOP_K} thumbnails decoded. Plain "
        "HTTP rows: page and answer fully received. Server answer: arrival -> answer of the phase's text queries, "
        "thread wait included (its /health); server CPU: user + system seconds the server spent in the phase. "
        f"Chromium, page received (navigation start -> responseEnd): {span(browser['received_s'])}; seen from this "
        f"script (browser latency included): ready {span(browser['ready_wall_s'])}, results "
        f"{span(browser['results_wall_s'])}."
    )
    failures = sum(row["summary"]["failures"] for row in rows)
    for row in rows:
        for reason in row["summary"]["failure_reasons"]:
            print(f"failure ({row['mode']}): {reason}")
    print(f"per-page results: {out}" + (f"; screenshot: {screenshot}" if screenshot else ""))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
