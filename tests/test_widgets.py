"""Tests of course_utils.widgets: the four query callbacks, input checks, debouncing and the widget wiring.

The retriever runs over six solid-colour items with a hand-made 3-d "CLIP" (image -> its RGB direction, text ->
the colour word it names), so every score below is computed by hand. No browser, no kernel, CPU only.
"""

from __future__ import annotations

import datetime
import io
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import StubBundle
from PIL import Image

from course_utils import widgets as cw
from course_utils.data import ArrayImage, Catalogue, Item
from course_utils.models.compositors import Sum
from course_utils.retriever import FashionRetriever

COLOURS = {  # item id -> (RGB, caption)
    "i0": ((255, 0, 0), "red shirt <b>bold</b>"),
    "i1": ((220, 40, 40), "dark red dress"),
    "i2": ((0, 255, 0), "green skirt"),
    "i3": ((0, 0, 255), "blue jacket"),
    "i4": ((40, 40, 220), "dark blue coat"),
    "i5": ((128, 128, 128), "grey bag"),
}


def rgb(colour) -> torch.Tensor:
    return F.normalize(torch.tensor(colour, dtype=torch.float32), dim=0)


@pytest.fixture
def retriever() -> FashionRetriever:
    pixels = np.stack([np.full((8, 8, 3), colour, np.uint8) for colour, _ in COLOURS.values()])
    items = [
        Item(item_id, (caption,), ("title",), {"colour": caption.split()[0]}, "test", ArrayImage(pixels, i))
        for i, (item_id, (_, caption)) in enumerate(COLOURS.items())
    ]
    catalogue = Catalogue("stub", items)
    embeddings = torch.stack([rgb(colour) for colour, _ in COLOURS.values()])
    return FashionRetriever(StubBundle(), catalogue, image_embeddings=embeddings)


def png_bytes(colour=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def shown_ids(page: str) -> list[str]:
    """Item ids of the result cards, in order (the query card is not a result)."""
    return re.findall(r'<figure class="fc-result".*?<code>(.*?)</code>', page, flags=re.S)


def shown_scores(page: str) -> list[str]:
    return re.findall(r"score (-?[0-9.]+)", page)


# --- text -------------------------------------------------------------------------------------------------------------


def test_text_query_ranks_by_hand_computed_cosine(retriever):
    page = cw.run_text_query(retriever, "  red dress ", top_k=3)
    # "red" -> (1, 0, 0): i0 = 1, i1 = 220 / |(220, 40, 40)| = 220 / 227.16 = 0.968, grey i5 = 1 / sqrt(3) = 0.577.
    assert shown_ids(page) == ["i0", "i1", "i5"]
    assert shown_scores(page) == ["1.000", "0.968", "0.577"]
    assert page.count('<img class="fc-thumb" src="data:image/png;base64,') == 3
    assert "text “red dress”" in page and "top 3 of 6 gallery items" in page


def test_a_text_longer_than_the_model_reads_says_so_above_its_results(retriever):
    long_text = "red " + "very " * retriever.bundle.context_length + "long"
    pages = cw.run_text_queries(retriever, ["red shirt", long_text])
    note = cw.context_note(retriever.bundle.context_length)
    assert note not in pages[0] and shown_ids(pages[0])
    assert note in pages[1] and shown_ids(pages[1]) == shown_ids(pages[0])  # results all the same


def test_text_query_escapes_captions(retriever):
    page = cw.run_text_query(retriever, "red", top_k=1)
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page


def test_text_queries_in_one_batch_answer_each_like_one_query(retriever):
    texts = ["red dress", "", "  blue shirt", 7, "red dress"]
    pages = cw.run_text_queries(retriever, texts, top_k=2)
    assert len(pages) == len(texts)
    for text, page in zip(texts, pages):  # results and messages alike, each in its place
        assert re.sub(r" · \d+ ms", "", page) == re.sub(r" · \d+ ms", "", cw.run_text_query(retriever, text, top_k=2))
    assert shown_ids(pages[0]) == shown_ids(pages[4]) == ["i0", "i1"]
    assert "empty query" in pages[1] and "got int" in pages[3]
    assert all("top_k must be" in page for page in cw.run_text_queries(retriever, texts[:2], top_k=0))


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_text_gives_a_message_not_results(retriever, text):
    page = cw.run_text_query(retriever, text, top_k=3)
    assert 'class="fc-message fc-error"' in page and "empty query" in page and "<img" not in page


@pytest.mark.parametrize("top_k", [0, -2, "3", True, 2.5])
def test_bad_top_k_gives_a_message(retriever, top_k):
    assert "top_k must be a positive whole number" in cw.run_text_query(retriever, "red", top_k=top_k)


def test_top_k_larger_than_gallery_is_clamped(retriever):
    assert len(shown_ids(cw.run_text_query(retriever, "blue", top_k=50))) == 6
    assert len(shown_ids(cw.run_image_query(retriever, "i0", top_k=50))) == 5  # the query item is left out
    retriever.conditional_encoder = lambda features, condition: features
    assert len(shown_ids(cw.run_conditional_query(retriever, "i0", "colour", top_k=6))) == 5


@pytest.mark.parametrize("text", ["\u200b", "\x00", " \u200b\ufeff\u3000 "])
def test_text_of_invisible_characters_only_is_an_empty_query_or_modification(retriever, text):
    """A zero-width space or a NUL is no description: it got the results of an empty text tower input."""
    page = cw.run_text_query(retriever, text, top_k=2)
    assert "empty query: type a description" in page and not shown_ids(page)
    assert "empty query" in cw.run_text_queries(retriever, ["red", text], top_k=2)[1]
    retriever.compositor = Sum(3)
    page = cw.run_composed_query(retriever, "i5", text, top_k=2)
    assert "empty modification: describe the change" in page and not shown_ids(page)
    assert shown_ids(cw.run_text_query(retriever, "\u200b blue", top_k=2)) == ["i3", "i4"]  # visible words: searched


def test_a_numpy_integer_top_k_is_a_whole_number_as_for_the_retriever(retriever):
    """``np.int64(2)`` (e.g. from a numpy array of settings) was refused as "not a positive whole number"."""
    retriever.conditional_encoder = channel_encoder
    retriever.compositor = Sum(3)
    for k in (np.int64(2), np.int32(2)):
        assert shown_ids(cw.run_text_query(retriever, "blue", top_k=k)) == ["i3", "i4"]
        assert shown_ids(cw.run_image_query(retriever, "i3", top_k=k)) == ["i4", "i5"]
        assert len(shown_ids(cw.run_conditional_query(retriever, "i3", "not-red", top_k=k))) == 2
        assert shown_ids(cw.run_composed_query(retriever, "i5", "make it red", top_k=k)) == ["i1", "i0"]
    assert "top_k must be a positive whole number, got np.int64(0)" in cw.run_text_query(retriever, "red", np.int64(0))


# --- image ------------------------------------------------------------------------------------------------------------


def test_image_query_by_item_id_leaves_the_item_out(retriever):
    page = cw.run_image_query(retriever, "i3", top_k=2)
    # i3 = (0, 0, 1): i4 scores 220 / 227.16 = 0.968, then grey 0.577; i3 itself is excluded.
    assert shown_ids(page) == ["i4", "i5"]
    assert shown_scores(page) == ["0.968", "0.577"]
    assert 'class="fc-query"' in page and "item i3" in page


def test_unknown_id_and_server_paths_are_refused(retriever, tmp_path):
    assert "unknown item id 'nope'" in cw.run_image_query(retriever, "nope", top_k=2)
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes())
    page = cw.run_image_query(retriever, str(path), top_k=2)  # a served page must not read server files
    assert "unknown item id" in page and "<img" not in page
    assert "no query image" in cw.run_image_query(retriever, None, top_k=2)


def test_uploaded_png_is_encoded_like_a_gallery_image(retriever):
    page = cw.run_image_query(retriever, cw.Upload("mine.png", png_bytes((0, 250, 0))), top_k=2)
    assert shown_ids(page) == ["i2", "i5"]  # green: i2 = 1.0 (no self-exclusion for uploads), grey 0.577
    assert shown_scores(page) == ["1.000", "0.577"]
    assert "upload mine.png" in page and page.count("fc-thumb") == 3  # query card + 2 results


@pytest.mark.parametrize(
    ("content", "reason"), [(b"", "is empty"), (b"not an image at all", "could not read 'bad.jpg'")]
)
def test_bad_uploads_give_a_message(retriever, content, reason):
    page = cw.run_image_query(retriever, cw.Upload("bad.jpg", content), top_k=2)
    assert reason in page and "fc-error" in page and "<img" not in page


def test_oversized_upload_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(cw, "MAX_UPLOAD_BYTES", 10)
    with pytest.raises(cw.BadQuery, match="up to"):
        cw.decode_image_bytes(png_bytes(), "big.png")


def test_upload_content_reads_ipywidgets_8_values():
    assert cw.upload_content(()) is None
    value8 = ({"name": "a.png", "type": "image/png", "size": 3, "content": memoryview(b"abc")},)
    assert cw.upload_content(value8) == cw.Upload("a.png", b"abc")


def test_unreadable_gallery_thumbnail_shows_a_placeholder(retriever):
    item = Item("x", ("no picture",), ("title",), {}, "test", None)
    catalogue = Catalogue("one", [item, *retriever.catalogue.items[:2]])
    small = FashionRetriever(StubBundle(), catalogue, image_embeddings=torch.eye(3))
    page = cw.run_text_query(small, "red", top_k=3)
    assert page.count("image unavailable") == 1 and page.count("fc-thumb") == 2


# --- conditional and composed -----------------------------------------------------------------------------------------


def channel_encoder(features: torch.Tensor, condition: str) -> torch.Tensor:
    """Hand-made conditional encoder: keep one colour channel ("blueness") or two ("not-red")."""
    masks = {"blueness": torch.tensor([0.0, 0.0, 1.0]), "not-red": torch.tensor([0.0, 1.0, 1.0])}
    return F.normalize(features * masks[condition], dim=-1)


def test_conditional_without_encoder_explains_how_to_enable_it(retriever):
    page = cw.run_conditional_query(retriever, "i3", "colour", top_k=2)
    assert "fc-info" in page and "no conditional encoder is set" in page and "notebook 05" in page.lower()


def test_conditional_query_uses_the_hook(retriever):
    retriever.conditional_encoder = channel_encoder
    page = cw.run_conditional_query(retriever, "i3", "not-red", top_k=4)
    # Under "not-red" i3 is (0, 0, 1), i4 is (0, 40, 220) / 223.6 -> 0.984, i1 (0, 40, 40) and grey i5 both -> 0.707,
    # green i2 and red i0 -> 0; i3 itself is excluded.
    ids, scores = shown_ids(page), shown_scores(page)
    assert ids[0] == "i4" and set(ids[1:3]) == {"i1", "i5"} and ids[3] in {"i0", "i2"}
    assert scores == ["0.984", "0.707", "0.707", "0.000"]
    assert "same not-red" in page
    assert "fc-error" in cw.run_conditional_query(retriever, "i3", "no such condition", top_k=2)  # the hook's KeyError
    assert "no condition chosen" in cw.run_conditional_query(retriever, "i3", "", top_k=2)


def test_composed_without_compositor_explains_how_to_enable_it(retriever):
    page = cw.run_composed_query(retriever, "i5", "make it red", top_k=2)
    assert "fc-info" in page and "no compositor is set" in page


def test_composed_query_with_the_sum_compositor(retriever):
    retriever.compositor = Sum(3)
    page = cw.run_composed_query(retriever, "i5", "make it red", top_k=2)
    # query = normalize(grey + red) = (1.577, .577, .577) / 1.776 = (.888, .325, .325)
    # i1: (.888 * 220 + .325 * 80) / 227.16 = 0.9746 beats pure red i0: 0.888; the grey reference is excluded.
    assert shown_ids(page) == ["i1", "i0"]
    assert shown_scores(page) == ["0.975", "0.888"]
    assert math.isclose(float(shown_scores(page)[1]), (1 + 1 / math.sqrt(3)) / math.sqrt(3.1547), abs_tol=1e-3)
    assert "empty modification" in cw.run_composed_query(retriever, "i5", " ", top_k=2)
    assert "unknown item id" in cw.run_composed_query(retriever, "zz", "red", top_k=2)


def message_text(page: str) -> str:
    """The text of a page's message box (escaped as shown)."""
    return re.search(r'<div class="fc-message[^>]*>(.*?)</div>', page, flags=re.S).group(1)


def test_messages_keep_their_quotes_and_a_hooks_key_error_shows_its_key_bare(retriever):
    """Every message lost its quotes at both ends ("pick an attribute such as 'colour"), not only a KeyError's."""
    retriever.conditional_encoder = channel_encoder
    assert message_text(cw.run_conditional_query(retriever, "i3", "", top_k=2)) == (
        "no condition chosen: pick an attribute such as 'colour'"
    )
    assert message_text(cw.run_conditional_query(retriever, "i3", "no such condition", top_k=2)) == "no such condition"


def test_a_one_item_gallery_says_its_only_item_has_no_neighbours(retriever):
    """A gallery item is left out of its own results: with one item that left "top_k must be ..., got 0"."""
    alone = FashionRetriever(
        StubBundle(), Catalogue("one", retriever.catalogue.items[:1]), image_embeddings=torch.eye(3)[:1]
    )
    alone.conditional_encoder = channel_encoder
    alone.compositor = Sum(3)
    for page in (
        cw.run_image_query(alone, "i0", top_k=8),
        cw.run_conditional_query(alone, "i0", "not-red", top_k=8),
        cw.run_composed_query(alone, "i0", "make it blue", top_k=8),
    ):
        assert message_text(page) == (
            "the gallery has no item other than the query 'i0' (an item is left out of its own results): "
            "upload an image to search this gallery"
        )
    assert shown_ids(cw.run_image_query(alone, cw.Upload("red.png", png_bytes()), top_k=8)) == ["i0"]  # an upload can


# --- debouncing and widgets -------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_debouncer_drops_quick_repeats_only():
    clock = FakeClock()
    debouncer = cw.Debouncer(interval=0.5, clock=clock)
    assert debouncer.allow("red")
    clock.now += 0.2
    assert not debouncer.allow("red")  # Enter then blur: same query 0.2 s later
    assert debouncer.allow("blue")  # a different query always runs
    clock.now += 0.6
    assert debouncer.allow("blue")  # the same query again, deliberately, later


def test_text_demo_runs_on_submit_and_debounces_the_search_click(retriever):
    demo = cw.text_demo(retriever, top_k=2)
    clock = FakeClock()
    demo.debouncer = cw.Debouncer(interval=1.0, clock=clock)
    assert demo.controls["text"].continuous_update is False and demo.controls["top_k"].continuous_update is False
    assert "fc-hint" in demo.results.value
    demo.controls["text"].value = "blue"  # what Enter sends with continuous_update=False
    assert shown_ids(demo.results.value) == ["i3", "i4"] and demo.queries_served == 1
    demo.controls["search"].click()  # same query at once: dropped
    assert demo.queries_served == 1
    clock.now += 2
    demo.controls["search"].click()
    assert demo.queries_served == 2
    demo.controls["text"].value = ""
    assert "empty query" in demo.results.value


def test_image_demo_switches_between_gallery_and_upload(retriever):
    demo = cw.image_demo(retriever, top_k=1)
    assert shown_ids(demo.results.value) == ["i1"] and demo.queries_served == 1  # the first item's neighbour at once
    demo.controls["item"].value = "i2"
    assert shown_ids(demo.results.value) == ["i5"]
    when = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
    upload = {
        "name": "r.png",
        "type": "image/png",
        "size": 1,
        "content": memoryview(png_bytes()),
        "last_modified": when,
    }
    demo.controls["upload"].value = (upload,)
    assert "upload r.png" in demo.results.value and shown_ids(demo.results.value) == ["i0"]
    demo.controls["top_k"].value = 2  # still the upload
    assert shown_ids(demo.results.value) == ["i0", "i1"]
    demo.controls["item"].value = "i3"
    assert "item i3" in demo.results.value and shown_ids(demo.results.value) == ["i4", "i5"]


@pytest.mark.parametrize("kind", ["image", "conditional", "composed"])
def test_the_image_demos_search_the_source_chosen_last_even_when_its_value_is_unchanged(retriever, kind):
    """After an upload, choosing again the item the list showed kept searching the upload; after an item pick,
    choosing the same file again (the page sends the same value) kept searching the item."""
    retriever.conditional_encoder = channel_encoder
    retriever.compositor = Sum(3)
    demo = {
        "image": lambda: cw.image_demo(retriever, top_k=1),
        "conditional": lambda: cw.conditional_demo(retriever, ["not-red"], top_k=1),
        "composed": lambda: cw.composed_demo(retriever, "make it red", top_k=1),
    }[kind]()
    demo.debouncer = cw.Debouncer(interval=1.0, clock=FakeClock())  # no time passes: only a repeat is dropped
    item, upload = demo.controls["item"], demo.controls["upload"]
    assert "item i0" in demo.results.value and demo.queries_served == 1  # the first item, at once
    content = png_bytes((0, 250, 0))
    photo = {"name": "g.png", "type": "image/png", "size": len(content), "content": memoryview(content)}
    photo["last_modified"] = 1735689600000  # as the page sends a file: its time in milliseconds
    upload.set_state({"value": [photo]})
    assert "upload g.png" in demo.results.value and demo.queries_served == 2
    item.set_state({"index": 0})  # the viewer picks i0 again, as the page sends it
    assert "item i0" in demo.results.value and "upload g.png" not in demo.results.value
    assert upload.value == () and demo.queries_served == 3
    upload.set_state({"value": [photo]})  # the same file chosen again
    assert "upload g.png" in demo.results.value and demo.queries_served == 4
    assert item.value is None and item.index is None  # the list shows no item while an upload is searched
    demo.controls["search"].click()  # the same query at once: the debouncer drops it
    assert demo.queries_served == 4


def test_hook_demos_show_the_not_set_message_at_once(retriever):
    assert "no conditional encoder is set" in cw.conditional_demo(retriever).results.value
    assert "no compositor is set" in cw.composed_demo(retriever).results.value
    retriever.compositor = Sum(3)
    demo = cw.composed_demo(retriever, top_k=1)
    demo.controls["item"].value = "i5"
    demo.controls["modification"].value = "make it red"
    assert shown_ids(demo.results.value) == ["i1"]


def test_the_composed_demo_opens_on_the_reference_its_modification_was_written_for(retriever):
    """Like the classroom page: the reference is selected (and listed, even past ``max_choices``), and the opening
    results are its composed query's, not the first item's."""
    retriever.compositor = Sum(3)
    demo = cw.composed_demo(retriever, "make it red", top_k=1, max_choices=2, reference="i5")
    assert demo.controls["item"].value == "i5" and "i5" in dict(map(reversed, demo.controls["item"].options))
    expected = cw.run_composed_query(retriever, "i5", "make it red", 1)
    assert "item i5" in demo.results.value and shown_ids(demo.results.value) == shown_ids(expected)
    assert cw.composed_demo(retriever, "make it red", top_k=1).controls["item"].value == "i0"  # default: first


def test_gallery_choices_list_the_first_items_and_the_one_asked_for(retriever):
    """The image demos' drop-down (the classroom page lists the same): id and caption, the first ``max_choices``
    items, then an item asked for that comes later (the composed demo's reference)."""
    assert cw.gallery_choices(retriever, 2) == [("i0", "i0 — red shirt <b>bold</b>"), ("i1", "i1 — dark red dress")]
    assert [item_id for item_id, _ in cw.gallery_choices(retriever, 2, include="i4")] == ["i0", "i1", "i4"]
    assert [item_id for item_id, _ in cw.gallery_choices(retriever, 2, include="i1")] == ["i0", "i1"]  # no repeat
    demo = cw.image_demo(retriever, max_choices=2)
    assert demo.controls["item"].options == (("i0 — red shirt <b>bold</b>", "i0"), ("i1 — dark red dress", "i1"))


def test_condition_choices_are_the_encoders_else_every_attribute(retriever):
    assert cw.condition_choices(retriever, ["mood"]) == ["mood"]
    assert cw.condition_choices(retriever) == cw.condition_choices(retriever, []) == ["colour"]
    assert cw.conditional_demo(retriever).controls["condition"].options == ("colour",)


def test_the_sliders_stop_at_the_largest_top_k_the_page_allows(retriever, monkeypatch):
    monkeypatch.setattr(cw, "MAX_TOP_K", 3)
    assert cw.text_demo(retriever, top_k=5).controls["top_k"].max == 3
    assert cw.text_demo(retriever).controls["top_k"].value == 3  # DEFAULT_TOP_K (8), capped


def test_unexpected_errors_are_shown_not_swallowed():
    def broken() -> str:
        raise ZeroDivisionError("boom")

    demo = cw.QueryDemo("t", {}, broken, lambda: "k", "hint")
    demo.refresh()
    assert "unexpected error (ZeroDivisionError): boom" in demo.results.value


# --- the served page (course_utils.serve; the end-to-end check is tests/test_browser.py) ----------------------------


def test_serve_command_binds_localhost_without_a_browser(monkeypatch):
    from course_utils import serve

    command = serve.voila_command(port=9999)
    assert command[1:4] == ["-m", "voila", str(serve.DEMO_NOTEBOOK)]
    assert "--port=9999" in command and "--no-browser" in command and "--Voila.ip=127.0.0.1" in command
    encryption = serve.kernel_config().KernelManager.get("transport_encryption")  # the runner's kernels' setting
    assert ("--KernelManager.transport_encryption=auto" in command) == (encryption == "auto")
    assert serve.main(["--notebook", "/nonexistent.ipynb"]) == 2
    monkeypatch.setenv("VOILA_BASE_URL", "/")
    assert cw.running_in_voila()
    monkeypatch.delenv("VOILA_BASE_URL")
    monkeypatch.delenv("VOILA_KERNEL_ID", raising=False)
    assert not cw.running_in_voila()


@pytest.mark.parametrize(
    ("argv", "refused"),
    [
        (
            ["--voila", "--profile", "full", "--dataset", "fashion-product-small"],
            "--voila ignores --profile, --dataset",
        ),
        (["--voila", "--profile", "ci"], "--voila ignores --profile"),  # given, even at its default
        (["--notebook", "x.ipynb", "--test-size", "50", "--workers", "8"], "--notebook ignores --test-size, --workers"),
        (["--show-tracebacks", "--port", "9000"], "the classroom server ignores --show-tracebacks"),
    ],
)
def test_serve_refuses_flags_its_way_of_serving_ignores(argv, refused, capsys):
    """``--voila`` served the notebook's own parameters and dropped ``--profile full`` and the rest in silence."""
    from course_utils import serve

    with pytest.raises(SystemExit) as error:
        serve.parse_args(argv)
    assert error.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"error: {refused}:" in message
    if "--show-tracebacks" in argv:
        assert "add --voila, or drop the flag" in message
    else:  # where the README says how to serve another configuration under Voilà
        assert "parameterised copy" in message and "serve it with --notebook" in message
        assert "README › Query demos as a web page, 'Other parameters on the page'" in message


def test_serve_keeps_the_flags_each_way_of_serving_reads():
    from course_utils import serve

    voila = serve.parse_args(["--voila", "--show-tracebacks", "--port", "9000", "--ip", "0.0.0.0"])
    assert (voila.voila, voila.show_tracebacks, voila.port, voila.ip) == (True, True, 9000, "0.0.0.0")
    classroom = serve.parse_args(["--profile", "full", "--workers", "2", "--port", "9000"])
    assert (classroom.profile, classroom.workers, classroom.show_tracebacks, classroom.seed) == ("full", 2, False, 0)
