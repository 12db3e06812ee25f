"""Tests of course_utils.classroom: the single-process classroom server, on a real localhost port.

The server runs on a background thread (:class:`BackgroundServer`) over a small procedural gallery and the tiny
CLIP with random weights; every answer is compared with what the widgets' callback returns for the same query
(the reference the page must match), so no score is assumed. Slow and broken queries are made with hooks that
wait on a ``threading.Event`` or raise, so nothing depends on timing. CPU only, no browser.
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import numpy as np
import pytest
from PIL import Image

from course_utils import classroom
from course_utils import widgets as cw
from course_utils.demo import build_demo_state
from course_utils.tasks.experiment import Experiment

WAIT = 60  # seconds a test waits for an answer before it fails (generous: the machine is shared)


@pytest.fixture(scope="module")
def experiment(small_catalogue, tiny_bundle) -> Experiment:
    catalogue = small_catalogue
    return Experiment(catalogue, tiny_bundle, catalogue.split("train"), catalogue.split("test"), "description")


@pytest.fixture
def state(experiment, tiny_bundle):
    """A fresh demo state per test (tests replace its hooks), built as notebook 07 builds it."""
    return build_demo_state(experiment, tiny_bundle, "synthetic", "sum")


@pytest.fixture
def server(state):
    with classroom.BackgroundServer(state, workers=2, max_pending=8) as running:
        yield running


def post(server, kind: str, body: bytes | None = None, **arguments) -> tuple[int, str]:
    """Status and text of ``POST /query/<kind>?arguments`` with ``body`` as the upload."""
    request = Request(f"{server.url}query/{kind}?{urlencode(arguments)}", data=body or b"", method="POST")
    try:
        with urlopen(request, timeout=WAIT) as response:
            return response.status, response.read().decode()
    except HTTPError as err:
        return err.code, err.read().decode()


def health(server) -> dict:
    with urlopen(server.url + "health", timeout=WAIT) as response:
        return json.load(response)


def without_timing(page: str) -> str:
    """The results HTML without the search time in its header (the only part that differs between runs)."""
    return re.sub(r" · \d+ ms", "", page)


def png(colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def shown_ids(page: str) -> list[str]:
    return re.findall(r'class="fc-result".*?<code>([^<]+)</code>', page)


def test_page_has_four_query_types_and_the_default_results(server, state):
    with urlopen(server.url, timeout=WAIT) as response:
        page = response.read().decode()
    for kind in classroom.QUERY_KINDS:
        assert f'data-kind="{kind}"' in page and f"fc-demo-{kind}" in page
    first = state.retriever.catalogue.ids[0]
    assert f'<option value="{first}" selected>' in page
    for condition in state.conditions:
        assert f'<option value="{condition}"' in page
    # the image demo opens with the first item's neighbours, exactly as the widget does
    expected = cw.run_image_query(state.retriever, first, 8)
    assert shown_ids(expected) and "".join(shown_ids(expected)) in "".join(shown_ids(page))
    assert "data.ready = 'yes'" in page or "dataset.ready = 'yes'" in page


@pytest.mark.parametrize(
    "kind, arguments",
    [
        ("text", {"text": "red striped shirt", "top_k": "5"}),
        ("image", {"item": None, "top_k": "6"}),
        ("conditional", {"item": None, "condition": "colour", "top_k": "4"}),
        ("composed", {"item": None, "modification": "is blue", "top_k": "5"}),
    ],
)
def test_each_query_type_answers_like_the_widgets(server, state, kind, arguments):
    arguments = {name: value or state.retriever.catalogue.ids[3] for name, value in arguments.items()}
    status, page = post(server, kind, **arguments)
    top_k = int(arguments["top_k"])
    reference = {
        "text": lambda: cw.run_text_query(state.retriever, arguments["text"], top_k),
        "image": lambda: cw.run_image_query(state.retriever, arguments["item"], top_k),
        "conditional": lambda: cw.run_conditional_query(state.retriever, arguments["item"], "colour", top_k),
        "composed": lambda: cw.run_composed_query(state.retriever, arguments["item"], "is blue", top_k),
    }[kind]()
    assert status == 200
    assert len(shown_ids(page)) == top_k
    assert without_timing(page) == without_timing(reference)


def test_an_upload_is_the_request_body(server, state):
    body = png()
    status, page = post(server, "image", body, source="upload", name="red.png", top_k="3")
    reference = cw.run_image_query(state.retriever, cw.Upload("red.png", body), 3)
    assert status == 200 and "upload red.png" in page
    assert without_timing(page) == without_timing(reference)
    # conditional and composed take an upload the same way
    status, page = post(server, "composed", body, source="upload", name="red.png", modification="is blue", top_k="3")
    assert "upload red.png" in page and len(shown_ids(page)) == 3


@pytest.mark.parametrize(
    "kind, body, arguments, message",
    [
        ("text", None, {"text": "   "}, "empty query: type a description"),
        ("image", None, {"item": "no-such-item"}, "unknown item id 'no-such-item'"),
        ("image", b"not an image", {"source": "upload", "name": "notes.png"}, "could not read 'notes.png' as an image"),
        ("image", None, {"source": "upload", "name": "empty.png"}, "the file 'empty.png' is empty"),
        ("conditional", None, {"item": "ITEM", "condition": ""}, "no condition chosen"),
        ("conditional", None, {"item": "ITEM", "condition": "mood"}, "no basis for criterion 'mood'"),
        ("composed", None, {"item": "ITEM", "modification": " "}, "empty modification"),
        ("text", None, {"text": "red", "top_k": "lots"}, "top_k must be a positive whole number, got 'lots'"),
        ("text", None, {"text": "red", "top_k": "0"}, "top_k must be a positive whole number, got 0"),
        ("text", None, {"text": "red", "top_k": "25"}, f"top_k must be at most {cw.MAX_TOP_K}"),
    ],
)
def test_bad_input_gets_the_widgets_message(server, state, kind, body, arguments, message):
    arguments = {
        name: state.retriever.catalogue.ids[0] if value == "ITEM" else value for name, value in arguments.items()
    }
    status, page = post(server, kind, body, **arguments)
    assert status == 200
    assert "fc-error" in page and message in page and "fc-result" not in page


def test_a_too_large_upload_is_refused_without_keeping_it(server):
    body = b"\0" * (cw.MAX_UPLOAD_BYTES + 1)
    status, page = post(server, "image", body, source="upload", name="huge.jpg")
    assert status == 200
    assert "the file 'huge.jpg' is 10.0 MiB; images up to 10 MiB are accepted" in page


def test_a_body_over_the_request_limit_is_not_read_and_the_server_goes_on(server, state):
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(
            b"POST /query/image?source=upload&name=x.png HTTP/1.1\r\nHost: localhost\r\n"
            + f"Content-Length: {classroom.MAX_REQUEST_BYTES + 1}\r\n\r\n".encode()
            + b"x" * 1000
        )
        reply = sock.recv(4096)  # the server answers 4xx or simply closes: it never waits for 64 MiB
    assert reply == b"" or reply.startswith(b"HTTP/1.1 4")
    status, page = post(server, "text", text="red shirt", top_k="2")
    assert status == 200 and len(shown_ids(page)) == 2


def test_unknown_query_kind_is_404(server):
    assert post(server, "telepathy", text="x")[0] == 404


def test_hooks_not_set_give_the_widgets_explanation(experiment, tiny_bundle):
    state = build_demo_state(experiment, tiny_bundle, descriptors=None, compositor="")
    item = state.retriever.catalogue.ids[0]
    with classroom.BackgroundServer(state, workers=1) as server:
        assert "Conditional search is not available" in post(server, "conditional", item=item, condition="colour")[1]
        assert "Composed search is not available" in post(server, "composed", item=item, modification="blue")[1]


def test_viewers_are_isolated(server, state):
    """Two viewers query at the same time, many times; each gets only its own answers, and the page stays the same."""
    with urlopen(server.url, timeout=WAIT) as response:
        page_before = response.read()
    uploads = {"alice": png((200, 30, 30)), "bob": png((30, 30, 200))}

    def viewer(name: str) -> list[str]:
        pages = []
        for round_ in range(6):
            if round_ % 2:
                pages.append(post(server, "image", uploads[name], source="upload", name=f"{name}.png", top_k="2")[1])
            else:
                pages.append(post(server, "text", text=f"{name} shirt", top_k="2")[1])
        return pages

    with ThreadPoolExecutor(2) as pool:
        alice, bob = pool.map(viewer, ["alice", "bob"])
    assert all("alice" in page and "bob" not in page for page in alice)
    assert all("bob" in page and "alice" not in page for page in bob)
    with urlopen(server.url, timeout=WAIT) as response:
        assert response.read() == page_before  # no viewer's query or upload shows on anyone's page


class Gate:
    """A conditional-encoder hook that waits until released (a slow query) and records that it was entered."""

    def __init__(self, encoder) -> None:
        self.encoder, self.entered, self.release = encoder, threading.Event(), threading.Event()

    def __call__(self, features, condition):
        self.entered.set()
        assert self.release.wait(WAIT), "the test never released the slow query"
        return self.encoder(features, condition)


def test_a_slow_query_does_not_block_the_others(server, state):
    gate = Gate(state.retriever.conditional_encoder)
    state.retriever.conditional_encoder = gate
    item = state.retriever.catalogue.ids[0]
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, server, "conditional", item=item, condition="colour", top_k="3")
        assert gate.entered.wait(WAIT)
        for _ in range(3):  # answered while the slow query still holds a worker
            status, page = post(server, "text", text="blue dress", top_k="2")
            assert status == 200 and len(shown_ids(page)) == 2
        with urlopen(server.url, timeout=WAIT) as response:
            assert response.status == 200
        assert not slow.done()
        gate.release.set()
        assert len(shown_ids(slow.result(WAIT)[1])) == 3


def test_text_queries_that_arrive_together_share_one_batch(server, state):
    """While one text batch is searched, the text queries that arrive wait and go into the next batch together;
    each viewer still gets the answer to its own query."""
    retriever, batches, first = state.retriever, [], threading.Event()
    search_by_texts = retriever.search_by_texts

    def gated(queries, *args, **kwargs):
        batches.append(list(queries))
        if len(batches) == 1:  # hold the first batch until the others are waiting on the server
            first.set()
            deadline = time.monotonic() + WAIT
            while server.service.counters.pending < 5:
                assert time.monotonic() < deadline, "the other queries never arrived"
                time.sleep(0.01)
        return search_by_texts(queries, *args, **kwargs)

    retriever.search_by_texts = gated
    texts = ["red dress", "blue shirt", "green skirt", "black coat", "white trousers"]
    with ThreadPoolExecutor(len(texts)) as pool:
        opening = pool.submit(post, server, "text", text=texts[0], top_k="2")
        assert first.wait(WAIT)
        pages = [opening] + [pool.submit(post, server, "text", text=text, top_k="2") for text in texts[1:]]
        pages = [future.result(WAIT)[1] for future in pages]
    assert batches[0] == ["red dress"] and sorted(batches[1]) == sorted(texts[1:]) and len(batches) == 2
    retriever.search_by_texts = search_by_texts
    for text, page in zip(texts, pages):
        assert without_timing(page) == without_timing(cw.run_text_query(retriever, text, 2))


def test_a_broken_text_query_in_a_batch_gets_a_message_and_the_others_their_results(state):
    search_by_texts = state.retriever.search_by_texts

    def fragile(queries, *args, **kwargs):
        if "boom" in queries:
            raise RuntimeError("the text tower fell over")
        return search_by_texts(queries, *args, **kwargs)

    state.retriever.search_by_texts = fragile
    service, answers = classroom.QueryService(state, workers=1), {}
    try:
        queries = [{"text": "red dress", "top_k": "2"}, {"text": "boom", "top_k": "2"}, {"text": "blue", "top_k": "x"}]
        service.run_texts(queries, answers.__setitem__)
    finally:
        service.shutdown()
    pages = [answers[position] for position in range(3)]
    assert len(shown_ids(pages[0])) == 2
    assert "unexpected error (RuntimeError): the text tower fell over" in pages[1]
    assert "top_k must be a positive whole number" in pages[2]


def test_a_broken_query_gets_a_message_and_the_server_goes_on(server, state):
    def broken(features, condition):
        raise RuntimeError("the hook fell over")

    state.retriever.conditional_encoder = broken
    item = state.retriever.catalogue.ids[0]
    status, page = post(server, "conditional", item=item, condition="colour")
    assert status == 200 and "unexpected error (RuntimeError): the hook fell over" in page
    assert len(shown_ids(post(server, "text", text="red", top_k="2")[1])) == 2


def test_a_viewer_who_leaves_mid_query_costs_nothing_more(server, state, caplog):
    caplog.set_level(logging.INFO, logger="tornado.access")
    gate = Gate(state.retriever.conditional_encoder)
    state.retriever.conditional_encoder = gate
    item = state.retriever.catalogue.ids[0]
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(
            f"POST /query/conditional?item={item}&condition=colour HTTP/1.1\r\nHost: localhost\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        assert gate.entered.wait(WAIT)
    # the viewer is gone; the query finishes on its thread and its answer is dropped
    gate.release.set()
    deadline = time.monotonic() + WAIT
    while health(server)["abandoned"] < 1:
        assert time.monotonic() < deadline, f"the abandoned query was never counted: {health(server)}"
        time.sleep(0.05)
    counters = health(server)
    assert counters["abandoned"] == 1 and counters["pending"] == 0
    # logged as what it was, in the same event loop step as the count: no answer sent (499), not a 200
    logged = [record.getMessage() for record in caplog.records if record.name == "tornado.access"]
    assert any(line.startswith("499 POST /query/conditional") for line in logged), logged
    assert not any(line.startswith("200 POST /query/conditional") for line in logged), logged
    status, page = post(server, "text", text="green skirt", top_k="3")
    assert status == 200 and len(shown_ids(page)) == 3


def test_too_many_waiting_queries_are_told_to_retry(experiment, tiny_bundle):
    state = build_demo_state(experiment, tiny_bundle, "synthetic", "sum")
    item = state.retriever.catalogue.ids[0]
    with classroom.BackgroundServer(state, workers=1, max_pending=1) as server, ThreadPoolExecutor(1) as pool:
        gate = Gate(state.retriever.conditional_encoder)  # after the start-up page, which runs a conditional query
        state.retriever.conditional_encoder = gate
        slow = pool.submit(post, server, "conditional", item=item, condition="colour", top_k="2")
        assert gate.entered.wait(WAIT)
        status, page = post(server, "text", text="red", top_k="2")
        assert status == 503 and "the server is busy (queries in progress: 1)" in page
        gate.release.set()
        assert slow.result(WAIT)[0] == 200
        assert health(server)["refused_busy"] == 1


def test_a_busy_server_refuses_an_upload_before_reading_it_and_frees_every_place(experiment, tiny_bundle):
    """The busy check ran after the whole body had arrived: a busy server first took in every upload (up to 10 MiB
    each, one per open connection) only to refuse it. The place is now taken before the body is read."""
    state = build_demo_state(experiment, tiny_bundle, "synthetic", "sum")
    item = state.retriever.catalogue.ids[0]
    with classroom.BackgroundServer(state, workers=1, max_pending=1) as server, ThreadPoolExecutor(1) as pool:
        gate = Gate(state.retriever.conditional_encoder)
        state.retriever.conditional_encoder = gate
        slow = pool.submit(post, server, "conditional", item=item, condition="colour", top_k="2")
        assert gate.entered.wait(WAIT)
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
            sock.sendall(  # headers of a 5 MiB upload, and none of its body
                b"POST /query/image?source=upload&name=x.png HTTP/1.1\r\nHost: localhost\r\n"
                + f"Content-Length: {5 * 2**20}\r\n\r\n".encode()
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 503")  # answered without waiting for the body
        gate.release.set()
        assert slow.result(WAIT)[0] == 200
        assert health(server)["refused_busy"] == 1
        for _ in range(3):  # a GET (405) and answered queries give their places back
            assert post(server, "text", text="red", top_k="2")[0] == 200
            with pytest.raises(HTTPError):
                urlopen(server.url + "query/text?text=red", timeout=WAIT)
        assert health(server)["pending"] == 0


@pytest.mark.parametrize("ip", ["127.0.0.1", "::1", "localhost", "127.0.0.5"])
def test_loopback_needs_no_warning(ip):
    assert classroom.exposure_warning(ip, 8866) is None


@pytest.mark.parametrize("ip, where", [("0.0.0.0", "every network interface"), ("192.168.1.20", "192.168.1.20")])
def test_binding_another_interface_warns_what_it_exposes(ip, where):
    warning = classroom.exposure_warning(ip, 8866)
    assert warning.startswith("WARNING") and where in warning and "8866" in warning
    assert "no login" in warning and "plain HTTP" in warning and "10 MiB" in warning


def test_serve_starts_the_classroom_server_unless_voila_is_asked(monkeypatch):
    from course_utils import serve

    chosen = []
    monkeypatch.setattr(serve, "serve_classroom", lambda args: chosen.append(("classroom", args.ip, args.port)) or 0)
    monkeypatch.setattr(serve, "serve_voila", lambda args: chosen.append(("voila", args.ip, args.port)) or 0)
    serve.main([])
    serve.main(["--voila", "--port", "9000"])
    serve.main(["--ip", "0.0.0.0"])
    assert chosen == [("classroom", "127.0.0.1", 8866), ("voila", "127.0.0.1", 9000), ("classroom", "0.0.0.0", 8866)]


def test_load_demo_state_builds_what_notebook_07_builds():
    """The one loading function, with the notebook's defaults except the weights (random, not fine-tuned: fast)."""
    from course_utils.data.descriptors import load_descriptors
    from course_utils.demo import CriterionProjection, load_demo_state
    from course_utils.models.compositors import Sum

    state = load_demo_state(profile="ci", pretrained=None, finetuned=False, device="cpu")
    gallery = state.experiment.test
    assert state.retriever.catalogue is gallery and state.retriever.embeddings.shape[0] == len(gallery)
    assert state.conditions == [name for name in load_descriptors("synthetic") if name in gallery.attribute_names]
    assert isinstance(state.retriever.conditional_encoder, CriterionProjection)
    assert isinstance(state.retriever.compositor, Sum)
    assert (state.reference_id, state.modification) == (
        gallery.triplets[0].reference_id,
        gallery.triplets[0].modification,
    )
    bare = load_demo_state(
        profile="ci", pretrained=None, finetuned=False, device="cpu", compositor="", conditional=False
    )
    assert bare.retriever.conditional_encoder is None and bare.retriever.compositor is None and bare.conditions == []


def test_health_reports_the_answer_times_of_the_last_queries(server):
    for text in ["red", "blue", "green"]:
        post(server, "text", text=text, top_k="2")
    with urlopen(server.url + "health?last=2", timeout=WAIT) as response:
        report = json.load(response)
    times = report["answer_seconds"]["text"]
    assert report["answered"] == 3 and report["pending"] == 0
    assert times["count"] == 2 and 0 <= times["p50"] <= times["p95"] <= times["max"]
    assert health(server)["answer_seconds"]["text"]["count"] == 3
    for last in ["two", "²", "0", "-1", ""]:  # "²" is a digit to str.isdigit, not to int
        with pytest.raises(HTTPError, match="400") as refused:
            urlopen(server.url + "health?" + urlencode({"last": last}), timeout=WAIT)
        error = json.load(refused.value)["error"]
        assert error == f"last must be a whole number of at least 1 (or left out for all), got {last!r}"
    with pytest.raises(ValueError, match="health answered 400: .*got '0'"):  # at once, not after the timeout
        classroom.wait_until_served(server.url, last=0)


def test_quantiles_of_the_answer_times_are_numpys():
    counters = classroom.ServerCounters()
    counters.seconds["text"].extend([0.4, 0.1, 0.3, 0.2, 10.0])
    report = counters.report()["answer_seconds"]
    # all five, sorted 0.1 0.2 0.3 0.4 10: the median is the middle one; p95 sits at position 0.95 * 4 = 3.8,
    # 0.8 of the way from 0.4 to 10
    assert report["text"] == {"count": 5, "p50": 0.3, "p95": pytest.approx(0.4 + 0.8 * 9.6), "max": 10.0}
    # the last two only: 0.2 and 10
    last_two = counters.report(last=2)["answer_seconds"]["text"]
    assert last_two == {"count": 2, "p50": pytest.approx(5.1), "p95": pytest.approx(0.2 + 0.95 * 9.8), "max": 10.0}
    assert list(report) == ["text"]  # kinds with no answer yet are left out
    values = np.random.default_rng(0).exponential(size=37).tolist()
    for q in [0.0, 0.5, 0.95, 1.0]:
        assert classroom._quantile(sorted(values), q) == pytest.approx(np.quantile(values, q))


def test_the_composed_demo_opens_on_the_states_reference(state, monkeypatch):
    """The page pairs the default modification with its own reference image (notebook 07's headless query), even
    when that item is not the first one or not among the items listed; a cut-short list says so."""
    gallery = state.retriever.catalogue
    reference = gallery.ids[5]
    state = dataclasses.replace(state, reference_id=reference, modification="is blue")
    monkeypatch.setattr(classroom, "MAX_CHOICES", 3)  # the first 3 items listed: the reference is not among them
    service = classroom.QueryService(state, workers=1)
    try:
        page = service.page.decode()
    finally:
        service.shutdown()
    sections = dict(re.findall(r'<section class="fc-demo fc-demo-(\w+)">(.*?)</section>', page))
    composed, image = sections["composed"], sections["image"]
    listed = composed.split('name="item">')[1].split("</select>")[0]
    options = re.findall(r'<option value="([^"]+)"( selected)?>', listed)
    assert options == [(item, "") for item in gallery.ids[:3]] + [(reference, " selected")]
    assert f"the first 3 of {len(gallery)} gallery items and the example's reference; upload a photo" in composed
    expected = cw.run_composed_query(state.retriever, reference, "is blue", cw.DEFAULT_TOP_K)
    assert f"item {reference}" in expected
    assert without_timing(expected) in without_timing(composed)
    # the image demo lists the same first items, the first one chosen, and says the list is cut short
    assert re.findall(r'<option value="([^"]+)"', image) == gallery.ids[:3]
    assert f'<option value="{gallery.ids[0]}" selected>' in image
    assert f"the first 3 of {len(gallery)} gallery items; upload a photo" in image


def test_a_get_runs_no_query(server):
    """Only a POST runs a query: a link prefetch or a crawler following ``/query/text?text=…`` gets 405."""
    with pytest.raises(HTTPError, match="405"):
        urlopen(f"{server.url}query/text?text=red&top_k=2", timeout=WAIT)
    assert health(server)["answered"] == 0 and "text" not in health(server)["answer_seconds"]


def test_stop_closes_open_connections_and_lets_running_queries_finish(state, caplog):
    """Stopping closes every connection (an idle keep-alive one too) and waits for the running query before the
    event loop closes: the query's thread then hands its answer to an open loop, and nothing fails in the log."""
    search_by_texts, entered, release = state.retriever.search_by_texts, threading.Event(), threading.Event()

    def held(queries, *args, **kwargs):
        entered.set()
        assert release.wait(WAIT), "the test never released the query"
        return search_by_texts(queries, *args, **kwargs)

    state.retriever.search_by_texts = held
    server = classroom.BackgroundServer(state, workers=1).start()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
    idle.request("GET", "/health")
    assert idle.getresponse().read()  # the connection stays open (keep-alive)
    with ThreadPoolExecutor(2) as pool:
        query = pool.submit(post, server, "text", text="red", top_k="2")
        assert entered.wait(WAIT)
        stopping = pool.submit(server.stop)
        with pytest.raises(OSError):  # the server closed the viewer's connection while its query still ran
            query.result(WAIT)
        release.set()
        stopping.result(WAIT)
    assert idle.sock.recv(1) == b""  # closed by the server, not left open
    assert not server._thread.is_alive() and server._loop.is_closed()
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_taken_port_fails_at_start_and_a_failed_start_closes_its_loop(state, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):  # said by start(), in the caller's thread
            classroom.BackgroundServer(state, workers=1, port=taken.getsockname()[1]).start()

    def broken_listen(service, sockets):
        raise RuntimeError("no server today")

    monkeypatch.setattr(classroom, "listen", broken_listen)
    server = classroom.BackgroundServer(state, workers=1)
    with pytest.raises(RuntimeError, match="no server today"):
        server.start()
    server._thread.join(WAIT)
    assert server._loop.is_closed() and not server._thread.is_alive()
    with socket.socket() as again:  # the port it had bound is free again
        again.bind(("127.0.0.1", server.port))
    server.stop()


@pytest.mark.parametrize(
    "ip, expected",
    [
        ("127.0.0.1", "http://127.0.0.1:8866/"),
        ("::1", "http://[::1]:8866/"),
        ("192.168.1.20", "http://192.168.1.20:8866/"),
        ("0.0.0.0", "http://127.0.0.1:8866/ on this machine; from other machines http://lab-pc:8866/"),
        ("", "http://127.0.0.1:8866/ on this machine; from other machines http://lab-pc:8866/"),
        ("::", "http://[::1]:8866/ on this machine; from other machines http://lab-pc:8866/"),
    ],
)
def test_the_printed_address_is_one_a_browser_opens(ip, expected, monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "lab-pc")
    assert classroom.where_to_open(ip, 8866).startswith(expected)
    assert classroom.page_url(classroom.local_host(ip), 8866) == expected.split(" ")[0]


def test_serve_prints_the_exposure_warning_in_both_modes(monkeypatch, capsys):
    from course_utils import serve

    monkeypatch.setattr(serve, "serve_classroom", lambda args: 0)
    monkeypatch.setattr(serve, "serve_voila", lambda args: 0)
    for argv in [["--ip", "0.0.0.0"], ["--voila", "--ip", "0.0.0.0"], ["--notebook", "x.ipynb", "--ip", "10.0.0.5"]]:
        serve.main(argv)
        assert capsys.readouterr().err.startswith("WARNING: listening on"), argv
    for argv in [[], ["--voila"]]:
        serve.main(argv)
        assert capsys.readouterr().err == "", argv


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--workers", "0"], "--workers"),
        (["--max-pending", "0"], "--max-pending"),
        (["--torch-threads", "0"], "--torch-threads"),
        (["--test-size", "0"], "--test-size"),
        (["--port", "70000"], "--port"),
        (["--port", "eighty"], "--port"),
        (["--voila", "--port", "0"], "--port"),
    ],
)
def test_bad_serve_flags_are_refused_with_the_flags_name(argv, flag, capsys):
    from course_utils import serve

    with pytest.raises(SystemExit) as refused:
        serve.parse_args(argv)
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {flag}: must be a whole number" in error and repr(argv[-1]) in error


def test_serve_names_a_missing_dataset_folder_without_a_traceback(tmp_path):
    from course_utils import serve

    missing = tmp_path / "no-such-folder"
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    arguments = ["--port", str(port), "--dataset", "fashion-product-small", "--data-root", str(missing)]
    with pytest.raises(SystemExit, match=f"cannot load the demo: .*{missing}"):
        serve.main(arguments)


def test_serve_says_a_taken_port_before_loading_the_model(monkeypatch):
    from course_utils import serve

    def load_demo_state(**_):
        raise AssertionError("the model was loaded before the port was bound")

    monkeypatch.setattr(serve, "load_demo_state", load_demo_state)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} is in use .*pass --port with a free one"):
            serve.main(["--port", str(port)])


def test_one_address_holding_connections_open_cannot_take_every_place(experiment, tiny_bundle, monkeypatch):
    """64 connections sending upload headers and no body used to lock every viewer out for the body timeout."""
    monkeypatch.setattr(classroom, "limited_client", lambda address: True)  # as a student's machine on the network
    state = build_demo_state(experiment, tiny_bundle, "synthetic", "sum")
    headers = b"POST /query/image?source=upload&name=x.png HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
    with classroom.BackgroundServer(state, workers=1) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) for _ in range(4)]
        for sock in held:
            sock.sendall(headers)
        deadline = time.monotonic() + WAIT
        while health(server)["pending"] < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, page = post(server, "image", body=png(), source="upload", name="y.png", top_k="2")
        assert status == 503 and f"{classroom.MAX_ARRIVING_PER_CLIENT} uploads from your address are still" in page
        assert post(server, "text", text="red", top_k="2")[0] == 200  # a query without an upload has none arriving
        for sock in held:
            sock.close()
        while health(server)["pending"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert post(server, "text", text="red", top_k="2")[0] == 200
    assert classroom.MAX_ARRIVING_PER_CLIENT < classroom.DEFAULT_MAX_PENDING


def test_queries_whose_body_has_arrived_do_not_count_against_their_address(experiment, tiny_bundle, monkeypatch):
    """A page sends a query per slider move and dropdown change without waiting for the last: a student moving a
    slider while the class is busy must not be refused for having several queries in progress. Nor when the server
    takes in several of them before it reads any (a loaded machine): a query without an upload has no body to wait
    for, so it never counts as arriving (it was refused in about one run of six under load)."""
    monkeypatch.setattr(classroom, "limited_client", lambda address: True)
    state = build_demo_state(experiment, tiny_bundle, "synthetic", "sum")
    item = state.retriever.catalogue.ids[0]
    with classroom.BackgroundServer(state, workers=1) as server, ThreadPoolExecutor(16) as pool:
        gate = Gate(state.retriever.conditional_encoder)
        state.retriever.conditional_encoder = gate
        first = pool.submit(post, server, "conditional", item=item, condition="colour", top_k="2")
        assert gate.entered.wait(WAIT)
        waiting = [pool.submit(post, server, "text", text=f"red {k}", top_k="2") for k in range(6)]
        deadline = time.monotonic() + WAIT
        while health(server)["pending"] < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health(server)["pending"] == 7  # more than the address's limit, all taken in
        # uploads one after another, each waiting behind the slow query once its body is in: an upload counts
        # against its address only while its body arrives, so more of them than the limit are all taken in
        for k in range(classroom.MAX_ARRIVING_PER_CLIENT + 1):
            waiting.append(pool.submit(post, server, "image", body=png(), source="upload", name=f"{k}.png", top_k="2"))
            while health(server)["pending"] < 8 + k and time.monotonic() < deadline:
                time.sleep(0.05)
            while server.service.counters.arriving_by_client and time.monotonic() < deadline:
                time.sleep(0.05)
        assert health(server)["pending"] == 8 + classroom.MAX_ARRIVING_PER_CLIENT
        gate.release.set()
        assert [answer.result(WAIT)[0] for answer in [first, *waiting]] == [200] * len([first, *waiting])
