"""The classroom server: notebook 07's four query demos as one web page that a whole class opens at once.

Why one process instead of Voilà: Voilà runs the notebook in a fresh kernel per page view (about 1.1 GiB and 20 s
each), so 30 students need about 33 GiB and wait minutes. Here the model, catalogue, gallery embeddings and index
are loaded ONCE (:func:`course_utils.demo.load_demo_state`, the objects notebook 07 builds) and every page view is
a static page plus small HTTP requests: a viewer costs a few kilobytes on the server, not a kernel.

Why tornado: it is already in the environment (Jupyter and Voilà run on it), it is a small, well-kept async HTTP
server with request-size limits, body streaming and connection-close callbacks built in, and it needs no new
dependency (no web framework, no JavaScript build).

Design, in the order a request sees it:

- ``GET /`` returns one page built at start-up (the same bytes for everyone: the gallery choices, and the default
  image, conditional and composed results that the widgets also show at once; the composed demo opens on the
  state's reference item and modification, the query notebook 07 runs headless). There is no session and no
  per-viewer state on the server, so one student's query or upload can never appear on another's page.
- ``POST /query/<kind>`` (``text``, ``image``, ``conditional``, ``composed``) carries the query in its URL
  arguments (``text``, ``item``, ``condition``, ``modification``, ``top_k``, ``source``, ``name``) and an upload,
  if any, as the raw request body. The answer is the HTML fragment of :mod:`course_utils.widgets`
  (``run_*_query``): the same result grid and the same messages for bad input as in JupyterLab.
- Model work runs on a bounded thread pool (``workers`` threads), never on the event loop, so the page, the
  uploads and the other queries keep flowing while a query computes; at most ``max_pending`` queries may be in
  progress (their upload being received, waiting for a thread or running), and one network address may have at
  most :data:`MAX_ARRIVING_PER_CLIENT` of them whose upload is still arriving; beyond that a viewer gets a "busy,
  try again" message (HTTP 503) before the body is read, instead of an ever longer queue: uploads held in memory
  stay under ``max_pending`` x the upload limit, and one student holding connections open cannot take every place.
  Text queries that arrive while a batch of them is searched go together into the next batch (one pass of the text
  tower for all: a class pressing Enter together costs a few passes, not one each); each still gets its own answer.
- Request limits: bodies above :data:`MAX_REQUEST_BYTES` are refused before they are read; up to that, bytes past
  :data:`course_utils.widgets.MAX_UPLOAD_BYTES` are read and dropped, and the viewer gets the widgets' "too large"
  message. ``top_k`` is capped at :data:`course_utils.widgets.MAX_TOP_K`. Slow senders are cut off by tornado's
  body timeout.
- A viewer who leaves mid-query costs nothing more: the query finishes on its thread, its answer is dropped
  (counted as ``abandoned`` on ``/health``, logged with status 499) and the server keeps answering everyone else.
- Stopping closes the open connections and lets the running queries finish before the event loop closes.

Run it with ``python -m course_utils.serve`` (see :mod:`course_utils.serve`); tests and a JupyterLab session can
run it on a background thread with :class:`BackgroundServer`.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import html
import ipaddress
import json
import logging
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import tornado.httpserver
import tornado.netutil
import tornado.web

from .demo import DemoState
from .widgets import (
    DEFAULT_TOP_K,
    MAX_CHOICES,
    MAX_TOP_K,
    MAX_UPLOAD_BYTES,
    BadQuery,
    Upload,
    check_upload_size,
    condition_choices,
    gallery_choices,
    message_html,
    run_composed_query,
    run_conditional_query,
    run_image_query,
    run_text_query,
    text_query_answers,
)

#: The four query types, as they appear in ``/query/<kind>``.
QUERY_KINDS = ("text", "image", "conditional", "composed")
#: Request bodies above this are refused before a byte is read (the connection is closed).
MAX_REQUEST_BYTES = 64 * 1024 * 1024
#: Threads that run queries (the model releases the GIL in its kernels; more threads than cores let a slow query
#: run beside quick ones).
DEFAULT_WORKERS = 4
#: Queries that may be in progress (running or waiting for a thread) before viewers are told to try again.
DEFAULT_MAX_PENDING = 64
#: The most requests one address on the network may have whose body is still arriving, so that a student opening
#: connections and sending no upload cannot hold every place. Only a request that announces a body (an upload) counts,
#: and only until its body has arrived: a page sending a query per slider move is not limited, however many of its
#: queries the server takes in at once. Loopback (this machine, the load benchmark's pages, a reverse proxy in front)
#: is not limited at all.
MAX_ARRIVING_PER_CLIENT = 4
#: Most text queries searched in one batch (one pass of the text tower).
MAX_TEXT_BATCH = 64
#: Answer times kept per query kind for ``/health``.
RECENT_QUERIES = 1000
#: Addresses that bind every network interface of this machine.
EVERY_INTERFACE = ("", "0.0.0.0", "::")
#: HTTP status logged for a query whose viewer left before its answer (nginx's "client closed request").
CLIENT_GONE = 499

log = logging.getLogger("course_utils.classroom")


def limited_client(address: str) -> bool:
    """Whether requests from ``address`` count against :data:`MAX_ARRIVING_PER_CLIENT` (every address but
    loopback)."""
    return not ipaddress.ip_address(address).is_loopback


@dataclass
class ServerCounters:
    """What ``/health`` reports; changed on the event loop thread only."""

    pending: int = 0  # queries taken in (upload being received, waiting for a thread or running), not yet answered
    answered: int = 0  # answers sent
    abandoned: int = 0  # answers computed for a viewer who had gone
    refused_busy: int = 0  # queries refused: ``max_pending`` in progress, or one address's bodies still arriving
    arriving_by_client: Counter = field(default_factory=Counter)  # network address -> its bodies still arriving
    # seconds from a query's arrival to its answer (waiting for a thread included), the last RECENT_QUERIES per kind
    seconds: dict[str, deque] = field(
        default_factory=lambda: {kind: deque(maxlen=RECENT_QUERIES) for kind in QUERY_KINDS}
    )

    def report(self, last: int | None = None) -> dict:
        """The counts, and p50 / p95 / max of the recent answer times per query kind (JSON-ready).

        Args:
            last: summarise only the last ``last`` answers of each kind (at least 1; default: all kept).
        """
        times = {}
        for kind, values in self.seconds.items():
            if values:
                ordered = sorted(list(values)[-last:] if last else values)
                times[kind] = {
                    "count": len(ordered),
                    "p50": _quantile(ordered, 0.5),
                    "p95": _quantile(ordered, 0.95),
                    "max": ordered[-1],
                }
        return {
            "pending": self.pending,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "refused_busy": self.refused_busy,
            "answer_seconds": times,
        }


def _quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method)."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def exposure_warning(ip: str, port: int) -> str | None:
    """The warning to print when the server binds ``ip`` beyond this machine; ``None`` for a loopback address."""
    try:
        loopback = ip == "localhost" or ipaddress.ip_address(ip).is_loopback
    except ValueError:  # a host name: it resolves to some interface, so warn
        loopback = False
    if loopback:
        return None
    where = "every network interface" if ip in EVERY_INTERFACE else f"the interface {ip}"
    return (
        f"WARNING: listening on {where}, port {port}. Anyone who can reach this machine on that port can open the "
        f"demo page, run queries on its CPUs and upload images (up to {MAX_UPLOAD_BYTES // 2**20} MiB each; decoded in "
        "memory, never stored). "
        "There is no login and no encryption (plain HTTP), and the page shows the whole gallery. Use it only on a "
        "trusted classroom network, keep the firewall closed to the outside, and stop the server (Ctrl+C) after class."
    )


def page_url(host: str, port: int) -> str:
    """``http://host:port/``, an IPv6 address in brackets (``http://[::1]:8866/``)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def local_host(ip: str) -> str:
    """The address this machine opens a server bound to ``ip`` at: ``ip``, or loopback for an every-interface bind."""
    if ip not in EVERY_INTERFACE:
        return ip
    return "::1" if ip == "::" else "127.0.0.1"


def where_to_open(ip: str, port: int) -> str:
    """Where viewers open a page served on ``ip:port``, as the servers print it: the address itself, or, for an
    every-interface bind (which no browser can open), this machine's loopback address and, for the other machines,
    its host name."""
    if ip not in EVERY_INTERFACE:
        return page_url(ip, port)
    return (
        f"{page_url(local_host(ip), port)} on this machine; from other machines "
        f"{page_url(socket.gethostname(), port)} (or this machine's address on the classroom network)"
    )


def parse_top_k(arguments: dict[str, str]) -> int | str:
    """A query's ``top_k`` argument (:data:`~course_utils.widgets.DEFAULT_TOP_K` when absent) as an int; text that is
    not a number is passed on for the widgets' message.

    Raises:
        BadQuery: a number above :data:`~course_utils.widgets.MAX_TOP_K`.
    """
    value = arguments.get("top_k", str(DEFAULT_TOP_K))
    try:
        top_k = int(value)
    except ValueError:
        return value  # run_*_query answers "top_k must be a positive whole number, got '…'"
    if top_k > MAX_TOP_K:
        raise BadQuery(f"top_k must be at most {MAX_TOP_K} on this page, got {top_k}")
    return top_k


def answer_query(state: DemoState, kind: str, arguments: dict[str, str], upload: Upload | None = None) -> str:
    """The results HTML of one query (runs on a pool thread): the widgets' callback for ``kind``.

    Args:
        state: the shared, read-only demo state.
        kind: one of :data:`QUERY_KINDS`.
        arguments: the request's URL arguments (``text``, ``item``, ``condition``, ``modification``, ``top_k``).
        upload: the uploaded image of an image query, or ``None`` to query with the gallery item ``item``.
    """
    retriever = state.retriever
    try:
        top_k = parse_top_k(arguments)
    except BadQuery as err:
        return message_html(str(err))
    image = upload if upload is not None else arguments.get("item", "")
    if kind == "text":
        return run_text_query(retriever, arguments.get("text", ""), top_k)
    if kind == "image":
        return run_image_query(retriever, image, top_k)
    if kind == "conditional":
        return run_conditional_query(retriever, image, arguments.get("condition", ""), top_k)
    if kind == "composed":
        return run_composed_query(retriever, image, arguments.get("modification", ""), top_k)
    raise ValueError(f"unknown query kind {kind!r}; expected one of {QUERY_KINDS}")


def text_answers(state: DemoState, queries: list[dict[str, str]]) -> Iterator[tuple[int, str]]:
    """``(position, results HTML)`` of each of several text queries as soon as it is ready (runs on a pool
    thread): what :func:`answer_query` gives each, with the queries of one ``top_k`` searched in one batch
    (:func:`~course_utils.widgets.text_query_answers`)."""
    by_top_k = {}
    for position, arguments in enumerate(queries):
        try:
            by_top_k.setdefault(parse_top_k(arguments), []).append(position)
        except BadQuery as err:
            yield position, message_html(str(err))
    for top_k, positions in by_top_k.items():
        texts = [queries[position].get("text", "") for position in positions]
        for index, answer in text_query_answers(state.retriever, texts, top_k):
            yield positions[index], answer


def _settle(answer: asyncio.Future, page: str) -> None:
    """Give ``answer`` its ``page`` unless it already has one (event loop thread)."""
    if not answer.done():
        answer.set_result(page)


def _settle_from_thread(
    loop: asyncio.AbstractEventLoop, answers: list[asyncio.Future], position: int, page: str
) -> None:
    """:func:`_settle` ``answers[position]`` on ``loop``, from a pool thread."""
    loop.call_soon_threadsafe(_settle, answers[position], page)


class QueryService:
    """The shared part of the server: the demo state (read-only), the bounded thread pool and the counters.

    Text queries are batched: while one batch of them is searched, the text queries that arrive wait and go
    together into the next batch (one pass of the text tower for all of them instead of one each: a class that
    presses Enter together costs the server a few passes, not thirty). The other kinds run one per thread."""

    def __init__(self, state: DemoState, workers: int = DEFAULT_WORKERS, max_pending: int = DEFAULT_MAX_PENDING):
        if workers < 1 or max_pending < 1:
            raise ValueError(f"workers and max_pending must be at least 1, got {workers} and {max_pending}")
        self.state, self.max_pending = state, max_pending
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="classroom-query")
        self.counters = ServerCounters()
        self.page = page_html(state, self).encode()
        self.page_gzip = gzip.compress(self.page, compresslevel=6, mtime=0)  # once, not per page view
        # text queries waiting for the next batch, and the task that searches them (event loop thread only)
        self._texts_waiting: list[tuple[dict[str, str], asyncio.Future]] = []
        self._text_batches: asyncio.Task | None = None

    def run(self, kind: str, arguments: dict[str, str], upload: Upload | None = None) -> str:
        """:func:`answer_query`, with any unexpected error turned into a message (and logged with its traceback)."""
        try:
            return answer_query(self.state, kind, arguments, upload)
        except Exception as err:  # a viewer gets a message, never a dead request; the log keeps the traceback
            log.exception("query %s failed", kind)
            return message_html(f"unexpected error ({type(err).__name__}): {err}")

    def run_texts(self, queries: list[dict[str, str]], deliver: Callable[[int, str], None]) -> None:
        """:func:`text_answers`, each answer handed to ``deliver(position, page)`` as soon as it is ready; after an
        unexpected error, the queries not yet answered are answered alone by :meth:`run` (so one broken query
        gets its message and the others their results)."""
        waiting = set(range(len(queries)))
        try:
            for position, page in text_answers(self.state, queries):
                waiting.discard(position)
                deliver(position, page)
        except Exception:
            log.exception("a batch of %d text queries failed; answering them one by one", len(queries))
            for position in sorted(waiting):
                deliver(position, self.run("text", queries[position]))

    async def answer(self, kind: str, arguments: dict[str, str], upload: Upload | None = None) -> str:
        """The answer to one query, computed on the pool (call on the event loop)."""
        loop = asyncio.get_running_loop()
        if kind != "text":
            return await loop.run_in_executor(self.executor, self.run, kind, arguments, upload)
        answer = loop.create_future()
        self._texts_waiting.append((arguments, answer))
        if self._text_batches is None or self._text_batches.done():
            self._text_batches = asyncio.ensure_future(self._search_text_batches())
        return await answer

    async def _search_text_batches(self) -> None:
        """Search the waiting text queries, :data:`MAX_TEXT_BATCH` at a time, until none waits."""
        loop = asyncio.get_running_loop()
        while self._texts_waiting:
            batch = self._texts_waiting[:MAX_TEXT_BATCH]
            del self._texts_waiting[:MAX_TEXT_BATCH]
            queries, answers = [arguments for arguments, _ in batch], [answer for _, answer in batch]
            try:
                await loop.run_in_executor(
                    self.executor, self.run_texts, queries, functools.partial(_settle_from_thread, loop, answers)
                )
            except Exception as err:  # e.g. the pool was shut down: every waiting viewer still gets an answer
                for answer in answers:
                    _settle(answer, message_html(f"unexpected error ({type(err).__name__}): {err}"))

    def shutdown(self) -> None:
        """Cancel the queries not started and wait for the running ones (at most a query's time), so that no pool
        thread hands an answer to an event loop that has closed."""
        self.executor.shutdown(wait=True, cancel_futures=True)


# --- the page ------------------------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:16px 24px;color:#222;max-width:1300px}
h1{font-size:22px;margin:4px 0}
.fc-demo{border-top:1px solid #ddd;padding:8px 0 12px}
.fc-demo h3{margin:4px 0}
.fc-form{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:6px 0;font-size:14px}
.fc-form input[type=text]{width:360px;padding:4px}
.fc-form select{max-width:420px}
.fc-form button{background:#0072B2;color:#fff;border:0;border-radius:4px;padding:5px 14px;cursor:pointer}
.fc-note{color:#555;font-size:13px}
.fc-output{min-height:240px;contain:layout paint}
"""
# `.fc-output` keeps room for one row of results, and its layout and paint are contained: an answer arriving
# redraws its own box, not the sections below it (with 30 pages on one machine, each redraw costs every viewer).

_SCRIPT = """
const MESSAGE = %(message)s, SEARCHING = %(searching)s, SEARCHING_AFTER_MS = 300;
const recent = {};  // per form: the last query key and when it ran (the widgets' Debouncer, 0.75 s)
function showMessage(output, text) {
  output.innerHTML = MESSAGE;
  output.querySelector('.fc-message').textContent = text;
}
async function runQuery(form) {
  const kind = form.dataset.kind, output = form.parentElement.querySelector('.fc-output');
  const params = new URLSearchParams();
  for (const el of form.elements) if (el.name && el.type !== 'file') params.set(el.name, el.value);
  let body = null;
  const file = form.querySelector('input[type=file]');
  if (file && form.dataset.source === 'upload') {
    params.set('source', 'upload');
    if (file.files.length) { body = file.files[0]; params.set('name', body.name); }
  }
  const key = params.toString() + (body ? ':' + body.size + ':' + body.lastModified : '');
  const now = performance.now(), last = recent[kind];
  if (last && last.key === key && now - last.time < 750) return;
  recent[kind] = {key: key, time: now};
  const ticket = (form.ticket = (form.ticket || 0) + 1);  // only the latest answer is shown
  // "searching…" only when the answer is slow: a fast answer replaces the old results in one redraw
  const slow = setTimeout(() => { if (ticket === form.ticket) output.innerHTML = SEARCHING; }, SEARCHING_AFTER_MS);
  try {
    const response = await fetch('query/' + kind + '?' + params.toString(), {method: 'POST', body: body});
    const text = await response.text();
    if (ticket === form.ticket) output.innerHTML = text;
  } catch (err) {
    if (ticket === form.ticket) showMessage(output, 'the server did not answer (' + err.message + '): is it running?');
  } finally {
    clearTimeout(slow);
  }
}
for (const form of document.querySelectorAll('.fc-form')) {
  form.dataset.source = 'item';
  form.addEventListener('submit', (event) => { event.preventDefault(); runQuery(form); });
  form.addEventListener('change', (event) => {
    const el = event.target;
    if (el.type === 'file') form.dataset.source = 'upload';
    if (el.name === 'item') form.dataset.source = 'item';
    if (el.type === 'range') el.nextElementSibling.textContent = el.value;
    runQuery(form);
  });
}
document.documentElement.dataset.ready = 'yes';
"""


def _options(values: list[tuple[str, str]], selected: str) -> str:
    """``<option>`` elements of ``(value, label)`` pairs, the one whose value is ``selected`` chosen."""
    return "".join(
        f'<option value="{html.escape(value)}"{" selected" if value == selected else ""}>{html.escape(label)}</option>'
        for value, label in values
    )


def page_html(state: DemoState, service: QueryService) -> str:
    """The demo page: four forms, each with its results area, and a small script that posts queries.

    The image demos open with the results the widgets show at once, computed here once for every viewer by
    ``service``: the first gallery item's, and for the composed demo the state's default query
    (``reference_id`` + ``modification``, the query notebook 07 runs headless), its reference chosen in the list.
    """
    retriever, gallery = state.retriever, state.retriever.catalogue
    conditions = condition_choices(retriever, state.conditions)
    slider = (
        f'<label>top k <input type="range" name="top_k" min="1" max="{MAX_TOP_K}" value="{DEFAULT_TOP_K}">'
        f"<output>{DEFAULT_TOP_K}</output></label>"
    )
    button = '<button type="submit">Search</button>'

    def image_inputs(selected: str) -> str:
        """The gallery list (``selected`` chosen), saying when it is cut short, and the upload."""
        listed = ""
        if len(gallery) > MAX_CHOICES:
            also = "" if selected in gallery.ids[:MAX_CHOICES] else " and the example's reference"
            listed = (
                f'<span class="fc-note">the first {MAX_CHOICES} of {len(gallery)} gallery items{also}; '
                "upload a photo to search with any other image</span>"
            )
        choices = gallery_choices(retriever, MAX_CHOICES, include=selected)
        return (
            f'<label>gallery item <select name="item">{_options(choices, selected)}</select></label>{listed}'
            '<label>or upload <input type="file" name="upload" accept="image/*"></label>'
        )

    def demo(kind: str, title: str, inputs: str, initial: str) -> str:
        return (
            f'<section class="fc-demo fc-demo-{kind}"><h3>{html.escape(title)}</h3>'
            f'<form class="fc-form" data-kind="{kind}" autocomplete="off">{inputs}{slider}{button}</form>'
            f'<div class="fc-output">{initial}</div></section>'
        )

    first, top_k = gallery.ids[0], str(DEFAULT_TOP_K)
    condition = conditions[0] if conditions else ""
    reference, modification = state.reference_id, state.modification
    sections = [
        demo(
            "text",
            "Text → image search",
            '<label>describe <input type="text" name="text" class="fc-text-query" maxlength="300" '
            'placeholder="e.g. red striped cotton shirt"></label>',
            message_html("Type a description and press Enter.", "hint"),
        ),
        demo(
            "image", "Image → image search", image_inputs(first), service.run("image", {"item": first, "top_k": top_k})
        ),
        demo(
            "conditional",
            "Conditional search (image + condition)",
            image_inputs(first)
            + f'<label>same <select name="condition">{_options([(c, c) for c in conditions], condition)}</select>'
            "</label>",
            service.run("conditional", {"item": first, "condition": condition, "top_k": top_k}),
        ),
        demo(
            "composed",
            "Composed search (image + modification text)",
            image_inputs(reference) + f'<label>change <input type="text" name="modification" maxlength="300" '
            f'value="{html.escape(modification)}" placeholder="e.g. make it blue"></label>',
            service.run("composed", {"item": reference, "modification": modification, "top_k": top_k}),
        ),
    ]
    script = _SCRIPT % {
        "message": json.dumps(message_html("")),
        "searching": json.dumps(message_html("searching…", "hint")),
    }
    identity = html.escape(retriever.bundle.identity)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Fashion retrieval demo</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head><body>'
        "<h1>Fashion retrieval demo: four query types</h1>"
        f'<p class="fc-note">{len(gallery)} gallery items (test split) · model {identity} · your queries and uploads '
        "are seen only by your page; nothing is stored.</p>"
        + "".join(sections)
        + f"<script>{script}</script></body></html>"
    )


# --- handlers ------------------------------------------------------------------------------------------------------


class PageHandler(tornado.web.RequestHandler):
    def initialize(self, service: QueryService) -> None:
        self.service = service

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Vary", "Accept-Encoding")
        if "gzip" in self.request.headers.get("Accept-Encoding", ""):
            self.set_header("Content-Encoding", "gzip")  # compressed at start-up; tornado leaves it as it is
            self.finish(self.service.page_gzip)
        else:
            self.finish(self.service.page)


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, service: QueryService) -> None:
        self.service = service

    def get(self) -> None:
        text = self.get_argument("last", None)
        try:
            last = None if text is None else int(text)
        except ValueError:  # e.g. "two", or "²" (a digit to str.isdigit, not to int): refused below
            last = 0
        if last is not None and last < 1:
            self.set_status(400)
            self.finish({"error": f"last must be a whole number of at least 1 (or left out for all), got {text!r}"})
            return
        report = self.service.counters.report(last)
        self.finish({"gallery": len(self.service.state.retriever.catalogue), **report})


@tornado.web.stream_request_body
class QueryHandler(tornado.web.RequestHandler):
    """``POST /query/<kind>``: arguments in the URL, an upload as the raw body (kept up to the limit).

    Not ``GET``: a link prefetch or a crawler must not run a query."""

    def initialize(self, service: QueryService) -> None:
        self.service = service

    def prepare(self) -> None:
        """Take one of the ``max_pending`` places before the body is read, or answer "busy" at once: a busy server
        must not first take in every viewer's upload (up to 10 MiB each) only to refuse it."""
        self.body, self.body_size, self.gone, self.querying = bytearray(), 0, False, False
        self.holds_place = self.arriving = False
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        counters, client = self.service.counters, self.request.remote_ip
        # a query without an upload has no body to wait for (Content-Length 0, or none and not chunked)
        headers = self.request.headers
        sends_body = headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers
        if sends_body and limited_client(client) and counters.arriving_by_client[client] >= MAX_ARRIVING_PER_CLIENT:
            busy = (
                f"{MAX_ARRIVING_PER_CLIENT} uploads from your address are still arriving: wait for them, then try again"
            )
        elif counters.pending >= self.service.max_pending:
            busy = f"the server is busy (queries in progress: {counters.pending}): try again in a few seconds"
        else:
            busy = None
        if busy:
            counters.refused_busy += 1
            self.set_status(503)
            self.finish(message_html(busy, "info"))
            return
        counters.pending += 1
        self.holds_place = True
        if sends_body:
            counters.arriving_by_client[client] += 1
            self.arriving = True

    def _body_arrived(self) -> None:
        """The request's body is in (or will never come): it no longer counts among its address's arriving ones."""
        if self.arriving:
            self.arriving = False
            counters, client = self.service.counters, self.request.remote_ip
            counters.arriving_by_client[client] -= 1
            if not counters.arriving_by_client[client]:
                del counters.arriving_by_client[client]

    def _leave_place(self) -> None:
        self._body_arrived()
        if self.holds_place:
            self.holds_place = False
            self.service.counters.pending -= 1

    def on_finish(self) -> None:  # every answered request, an error (a GET's 405) included
        self._leave_place()

    def data_received(self, chunk: bytes) -> None:
        self.body_size += len(chunk)
        if self.body_size <= MAX_UPLOAD_BYTES:
            self.body += chunk  # past the upload limit the bytes are counted and dropped

    def on_connection_close(self) -> None:
        self.gone = True
        if not self.querying:  # left while sending: no query will run; a running one leaves its place when done
            self._leave_place()

    async def post(self, kind: str) -> None:
        self._body_arrived()
        arrived = time.perf_counter()
        try:
            arguments = {name: self.get_argument(name) for name in self.request.arguments}
            upload = None
            if arguments.get("source") == "upload":
                name = arguments.get("name") or "upload"
                try:
                    check_upload_size(self.body_size, name)
                except BadQuery as err:
                    self.finish(message_html(str(err)))
                    return
                upload = Upload(name, bytes(self.body))
            self.body = bytearray()
            self.querying = True
            page = await self.service.answer(kind, arguments, upload)
        finally:
            self._leave_place()
        counters = self.service.counters
        counters.seconds[kind].append(time.perf_counter() - arrived)
        if self.gone:
            counters.abandoned += 1
            self.set_status(CLIENT_GONE)  # what the access log records: no answer was sent
            return
        counters.answered += 1
        self.finish(page)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """One log line per request without its arguments (they hold what a student typed)."""
    status = handler.get_status()
    level = logging.WARNING if status >= 500 else logging.INFO
    logging.getLogger("tornado.access").log(
        level,
        "%d %s %s %.0f ms",
        status,
        handler.request.method,
        handler.request.path,
        1000 * handler.request.request_time(),
    )


def make_app(service: QueryService) -> tornado.web.Application:
    """The tornado application: ``/`` (the page), ``/query/<kind>`` and ``/health``."""
    kinds = "|".join(QUERY_KINDS)
    return tornado.web.Application(
        [
            (r"/", PageHandler, {"service": service}),
            (rf"/query/({kinds})", QueryHandler, {"service": service}),
            (r"/health", HealthHandler, {"service": service}),
        ],
        log_function=_log_request,
        # answers are not gzipped: their thumbnails (base64 PNG) shrink by about a quarter for ~5 ms of the event
        # loop per answer; the page is compressed once at start-up (PageHandler)
        compress_response=False,
    )


def bind(ip: str = "127.0.0.1", port: int = 0) -> list[socket.socket]:
    """Listening sockets on ``ip:port`` (``0``: a free port; ``""``: every interface), bound before anything slow
    starts, so that a taken port is said at once. Raises ``OSError`` (e.g. the port is in use)."""
    return tornado.netutil.bind_sockets(port, address=ip or None, family=socket.AF_UNSPEC)


def listen(service: QueryService, sockets: list[socket.socket]) -> tornado.httpserver.HTTPServer:
    """Serve ``service`` on ``sockets`` (from :func:`bind`) on the running event loop."""
    server = tornado.httpserver.HTTPServer(
        make_app(service),
        max_body_size=MAX_REQUEST_BYTES,
        idle_connection_timeout=120,
        body_timeout=60,  # a sender slower than this is cut off
    )
    server.add_sockets(sockets)
    return server


async def serve_forever(
    service: QueryService, sockets: list[socket.socket], announce: Callable[[str], None] = print
) -> None:
    """Serve on ``sockets`` until cancelled (Ctrl+C in :func:`course_utils.serve.main`, or
    :meth:`BackgroundServer.stop`); ``announce`` gets the line that says where to open the page once it is served.

    Stopping closes every open connection (keep-alive ones too) and waits for the running queries, so that the
    event loop closes only once no pool thread can hand it an answer."""
    server = listen(service, sockets)
    # an IPv4 address when there is one: ``""`` and ``localhost`` bind an IPv4 and an IPv6 socket, in either order
    host, port = min((sock.getsockname()[:2] for sock in sockets), key=lambda address: ":" in address[0])
    announce(f"classroom server: {where_to_open(host, port)}  (Ctrl+C stops it)")
    try:
        await asyncio.Event().wait()
    finally:
        server.stop()
        await server.close_all_connections()
        service.shutdown()


class BackgroundServer:
    """The classroom server on its own thread and event loop, e.g. for tests or from a JupyterLab session.

    Example::

        with BackgroundServer(load_demo_state()) as server:
            print(server.url)
    """

    def __init__(
        self,
        state: DemoState,
        ip: str = "127.0.0.1",
        port: int = 0,
        workers: int = DEFAULT_WORKERS,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.service = QueryService(state, workers, max_pending)
        self.ip, self.port = ip, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address on this machine."""
        return page_url(local_host(self.ip), self.port)

    def start(self) -> BackgroundServer:
        """Bind (a taken port raises ``OSError`` here), then serve on a thread; returns once the page is served."""
        sockets = bind(self.ip, self.port)
        self.port = sockets[0].getsockname()[1]
        serving, failure = threading.Event(), []

        async def serve() -> None:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            await serve_forever(self.service, sockets, announce=lambda _line: serving.set())

        def run() -> None:
            try:
                asyncio.run(serve())  # closes its event loop however ``serve`` ends
            except asyncio.CancelledError:  # stop()
                pass
            except BaseException as err:  # serving failed to start: report it to start()
                failure.append(err)
                for sock in sockets:
                    sock.close()
            finally:
                serving.set()

        self._thread = threading.Thread(target=run, name="classroom-server", daemon=True)
        self._thread.start()
        serving.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (see :func:`serve_forever`) and wait up to ``timeout`` seconds for the thread to end."""
        if self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(timeout)
        self.service.shutdown()  # a server that never started still has its pool

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until_served(url: str, timeout: float = 30.0, last: int | None = None) -> dict:
    """Poll ``{url}health`` until it answers; returns its JSON (used by the benchmark and the browser test).

    ``last``: summarise the answer times of the last ``last`` queries of each kind only (at least 1).
    """
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urlopen(url + "health" + (f"?last={last}" if last is not None else ""), timeout=5) as response:
                return json.load(response)
        except HTTPError as err:  # the server answered, with a refusal: waiting longer would not change it
            raise ValueError(f"{url}health answered {err.code}: {err.read().decode(errors='replace')}") from None
        except (URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no classroom server answered at {url} within {timeout:.0f} s") from None
            time.sleep(0.25)
