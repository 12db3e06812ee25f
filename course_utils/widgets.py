"""Query demos over a :class:`~course_utils.retriever.FashionRetriever` (notebook 07), for JupyterLab and Voila.

Four demos, one per query type: text, image (a gallery item or an uploaded file), conditional (image +
condition, via ``retriever.conditional_encoder``) and composed (image + modification text, via
``retriever.compositor``). The logic lives in plain callbacks — ``run_text_query(retriever, text, top_k)`` and
friends — that return an HTML string (a grid of base64 PNG thumbnails with rank, score and caption, or a clear
message for empty or bad input), so they are unit-tested without a browser and notebooks call them directly
when ``INTERACTIVE`` is false. The ``*_demo`` builders only wire ipywidgets to those callbacks: text boxes and
sliders use ``continuous_update=False`` (nothing runs per keystroke) and a :class:`Debouncer` drops the
repeats that Enter + blur + a Search click would otherwise fire. One module because the four demos share their
input checks, thumbnails and HTML (long, but one idea: the demo page's interface).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import os
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
from PIL import Image

from .checks import is_whole_number
from .data.records import CorruptImage, OversizedImage, decode_image, opaque_rgb

#: Largest upload accepted by the image demos (bytes); bigger files get a message instead of a decode.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Thumbnail side in pixels (images are shrunk to fit, never enlarged; the page scales them to this size).
THUMB_SIZE = 128
#: Gallery items listed in an image demo's drop-down (an upload covers any other image).
MAX_CHOICES = 200
#: Largest ``top_k`` the demos offer (their sliders stop there; the classroom page refuses more).
MAX_TOP_K = 24
#: Results a demo shows until the viewer moves its slider.
DEFAULT_TOP_K = 8
#: Thumbnails kept per retriever (about 10-40 kB each); the cache is emptied when it grows past this.
MAX_CACHED_THUMBNAILS = 5000

_THUMBNAILS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # retriever -> {item id: data URI}


@dataclass(frozen=True)
class Upload:
    """An uploaded file as the image demos receive it: its name (for messages) and its bytes."""

    name: str
    content: bytes


# A query image as the callbacks accept it: a gallery item id, an uploaded file (or its bytes), or a PIL image.
QueryImage = str | Upload | bytes | Image.Image


class BadQuery(ValueError):
    """A query the demos refuse with a message (empty text, unknown id, unreadable file)."""


def running_in_voila() -> bool:
    """True inside a kernel started by Voilà (it sets ``VOILA_*`` variables), so a served page gets live widgets."""
    return "VOILA_BASE_URL" in os.environ or "VOILA_KERNEL_ID" in os.environ


# --- HTML pieces -----------------------------------------------------------------------------------------------


def message_html(text: str, kind: str = "error") -> str:
    """A coloured box with ``text`` (escaped); ``kind`` is ``"error"`` (red), ``"info"`` (blue) or ``"hint"`` (grey)."""
    colours = {"error": ("#D55E00", "#fdf0e8"), "info": ("#0072B2", "#eaf3fa"), "hint": ("#777777", "#f6f6f6")}
    border, background = colours.get(kind, colours["error"])
    return (
        f'<div class="fc-message fc-{kind}" style="border-left:5px solid {border};background:{background};'
        f'padding:8px 12px;margin:6px 0;font-size:14px">{html.escape(text, quote=False)}</div>'
    )


def image_data_uri(image: Image.Image, size: int = THUMB_SIZE) -> str:
    """``data:image/png;base64,...`` of ``image`` shrunk to fit ``size`` x ``size`` (aspect ratio kept)."""
    image = opaque_rgb(image)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _item_thumbnail(retriever, item_id: str) -> str | None:
    """Cached data URI of a gallery item's image, or ``None`` when the image cannot be read."""
    cache = _THUMBNAILS.setdefault(retriever, {})
    uri = cache.get(item_id, "")  # one lookup: another thread (the classroom server's pool) may empty the cache
    if uri != "":
        return uri
    try:
        uri = image_data_uri(retriever.thumbnail(item_id))
    except (CorruptImage, FileNotFoundError, OSError):
        uri = None
    if len(cache) >= MAX_CACHED_THUMBNAILS:
        cache.clear()
    cache[item_id] = uri
    return uri


def _card(uri: str | None, lines: Sequence[str], tooltip: str, css_class: str, border: str) -> str:
    """One thumbnail with a few caption lines (already escaped)."""
    if uri is None:
        picture = (
            f'<div style="width:{THUMB_SIZE}px;height:{THUMB_SIZE}px;display:flex;align-items:center;'
            'justify-content:center;background:#eee;color:#777;font-size:12px">image unavailable</div>'
        )
    else:
        picture = (
            f'<img class="fc-thumb" src="{uri}" alt="{html.escape(tooltip)}" width="{THUMB_SIZE}" '
            f'height="{THUMB_SIZE}" style="object-fit:contain;image-rendering:auto;background:#fff">'
        )
    text = "<br>".join(lines)
    return (
        f'<figure class="{css_class}" title="{html.escape(tooltip)}" style="margin:0;padding:6px;'
        f'border:2px solid {border};border-radius:6px;width:{THUMB_SIZE + 16}px;font-size:12px;line-height:1.3">'
        f'{picture}<figcaption style="margin-top:4px">{text}</figcaption></figure>'
    )


def results_html(
    retriever, results: pd.DataFrame, heading: str, query_card: str = "", elapsed: float | None = None
) -> str:
    """A grid of result thumbnails with rank, cosine score, caption and item id.

    Args:
        retriever: the :class:`~course_utils.retriever.FashionRetriever` that produced ``results``.
        results: its result frame (``rank``, ``item_id``, ``score``, ``caption`` columns).
        heading: what was asked, e.g. ``'text “red dress”'`` (escaped here).
        query_card: HTML of the query image card shown first (image queries), or ``""``.
        elapsed: seconds the search took, shown in the heading.
    """
    timing = f" · {elapsed * 1000:.0f} ms" if elapsed is not None else ""
    header = (
        f'<div class="fc-header" style="font-size:14px;margin:4px 0 8px">{html.escape(heading)} — top '
        f"{len(results)} of {len(retriever.catalogue)} gallery items{timing}</div>"
    )
    cards = [query_card] if query_card else []
    # the four columns shown, not itertuples over every attribute column (a classroom renders this per query)
    for rank, item_id, score, caption in zip(results["rank"], results["item_id"], results["score"], results["caption"]):
        caption = str(caption)
        short = caption if len(caption) <= 70 else caption[:67] + "…"
        lines = [
            f"<b>#{rank}</b> · score {score:.3f}",
            html.escape(short),
            f"<code>{html.escape(str(item_id))}</code>",
        ]
        cards.append(_card(_item_thumbnail(retriever, str(item_id)), lines, caption, "fc-result", "#dddddd"))
    grid = (
        '<div class="fc-grid" style="display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start">'
        + "".join(cards)
        + "</div>"
    )
    return f'<div class="fc-results">{header}{grid}</div>'


# --- query inputs ------------------------------------------------------------------------------------------------


#: The most pixels an upload may have, counted at the size decoded (4096 x 4096; a phone's 12-megapixel JPEG is
#: decoded at a reduced scale, well under it).
MAX_UPLOAD_PIXELS = 4096 * 4096
#: How many times longer than wide (or wider than long) an upload may be.
MAX_UPLOAD_ASPECT = 20


def check_upload_size(size: int, name: str = "upload") -> None:
    """:class:`BadQuery` when an upload of ``size`` bytes is empty or larger than :data:`MAX_UPLOAD_BYTES`.

    The classroom server calls it with the size of the whole request body once it has arrived (it keeps at most
    :data:`MAX_UPLOAD_BYTES` of the body and only counts the bytes past that).
    """
    if size <= 0:
        raise BadQuery(f"the file {name!r} is empty: choose a JPEG or PNG image")
    if size > MAX_UPLOAD_BYTES:
        raise BadQuery(
            f"the file {name!r} is {size / 2**20:.1f} MiB; images up to {MAX_UPLOAD_BYTES // 2**20} MiB are accepted"
        )


def decode_image_bytes(content: bytes | memoryview, name: str = "upload") -> Image.Image:
    """Decode an uploaded file to an RGB image; :class:`BadQuery` with a readable reason when it is not one.

    An upload is held to :data:`MAX_UPLOAD_PIXELS` (at the size decoded: a large JPEG is read at a reduced scale)
    and :data:`MAX_UPLOAD_ASPECT`: a few hundred bytes of PNG can describe a 9,400 x 9,400 image (a gigabyte once
    decoded) or a 200,000 x 1 strip, which the model's resize of the short side would blow up to gigabytes.
    """
    data = bytes(content)
    check_upload_size(len(data), name)
    try:
        image = decode_image(io.BytesIO(data), repr(name), max_pixels=MAX_UPLOAD_PIXELS)
    except OversizedImage:
        raise BadQuery(
            f"the image {name!r} has more than {MAX_UPLOAD_PIXELS:,} pixels (a decompression bomb, or far larger "
            "than a photo needs: the models read 224 pixels a side at most); choose a smaller JPEG or PNG image"
        ) from None
    except CorruptImage as err:
        reason = type(err.__cause__).__name__ if err.__cause__ is not None else "not an image"
        raise BadQuery(f"could not read {name!r} as an image ({reason}): choose a JPEG or PNG file") from None
    if max(image.size) > MAX_UPLOAD_ASPECT * min(image.size):
        raise BadQuery(
            f"the image {name!r} is {image.width} x {image.height} pixels, one side more than {MAX_UPLOAD_ASPECT} "
            "times the other: choose a photo of a garment"
        )
    return image


def upload_content(value) -> Upload | None:
    """The first file of an ipywidgets 8 ``FileUpload.value`` (a tuple of dicts), or ``None``."""
    if not value:
        return None
    return Upload(str(value[0].get("name", "upload")), bytes(value[0]["content"]))


def resolve_query_image(retriever, image: QueryImage | None) -> tuple[str | Image.Image, str]:
    """Turn a demo's query image into what the retriever accepts, plus a label for the page.

    Strings are gallery item ids only (a served page must not open server-side paths); an :class:`Upload` or
    bytes are an uploaded file; PIL images pass through. Raises :class:`BadQuery` for an empty choice, an unknown
    id or a file that is not an image.
    """
    if image is None or (isinstance(image, str) and not image.strip()):
        raise BadQuery("no query image: pick a gallery item or upload an image file")
    if isinstance(image, str):
        item_id = image.strip()
        if not retriever.catalogue.has_id(item_id):
            raise BadQuery(f"unknown item id {item_id!r}: pick one of the {len(retriever.catalogue)} gallery items")
        return item_id, f"item {item_id}"
    if isinstance(image, Upload):
        return decode_image_bytes(image.content, image.name), f"upload {image.name}"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image_bytes(image), "uploaded image"
    if isinstance(image, Image.Image):
        return opaque_rgb(image), "uploaded image"
    raise BadQuery(f"unsupported query image of type {type(image).__name__}")


def _query_card(retriever, query: str | Image.Image, label: str) -> str:
    uri = _item_thumbnail(retriever, query) if isinstance(query, str) else image_data_uri(query)
    return _card(uri, ["<b>query</b>", html.escape(label)], label, "fc-query", "#0072B2")


def _check_top_k(retriever, top_k, query: str | Image.Image | None = None) -> int:
    """``top_k`` capped at what the gallery can return (a gallery item is left out of its own results).

    :class:`BadQuery` for a ``top_k`` that is not a positive whole number (numpy integers are whole numbers, as for
    the retriever), and for a gallery item ``query`` that is the gallery's only item: nothing else can be shown.
    """
    if not is_whole_number(top_k, minimum=1):
        raise BadQuery(f"top_k must be a positive whole number, got {top_k!r}")
    others = len(retriever.catalogue) - isinstance(query, str)
    if others < 1:
        raise BadQuery(
            f"the gallery has no item other than the query {query!r} (an item is left out of its own results): "
            "upload an image to search this gallery"
        )
    return min(int(top_k), others)


# --- the four callbacks ----------------------------------------------------------------------------------------


def run_text_query(retriever, text: str, top_k: int = DEFAULT_TOP_K) -> str:
    """HTML results of a free-text query (what ``retriever.search_by_text`` finds), or a message for empty input."""
    return run_text_queries(retriever, [text], top_k)[0]


def _blank(text: str) -> bool:
    """True for text without a printable character other than spaces: ``""``, ``"  "``, and text made only of
    invisible characters such as a zero-width space (``"\\u200b"``) or a NUL (``"\\x00"``)."""
    return not any(char.isprintable() and not char.isspace() for char in text)


def _query_text(text) -> str:
    """``text`` stripped, or :class:`BadQuery` for something that is not text or is empty (see :func:`_blank`)."""
    if text is not None and not isinstance(text, str):
        raise BadQuery(f"the query must be text such as 'red striped shirt', got {type(text).__name__}")
    if text is None or _blank(text):
        raise BadQuery("empty query: type a description such as 'red striped shirt' and press Enter")
    return text.strip()


def run_text_queries(retriever, texts: Sequence[str], top_k: int = DEFAULT_TOP_K) -> list[str]:
    """:func:`run_text_query` for several texts searched in one batch (``retriever.search_by_texts``: one pass
    of the text tower): one answer per text, in order, each a result grid or the message for that text."""
    answers = [""] * len(texts)
    for position, answer in text_query_answers(retriever, texts, top_k):
        answers[position] = answer
    return answers


def text_query_answers(retriever, texts: Sequence[str], top_k: int = DEFAULT_TOP_K) -> Iterator[tuple[int, str]]:
    """``(position, answer)`` of each text as soon as it is ready: the messages for bad input first, then the
    result grids one by one after one batched search (the classroom server sends each answer as it comes, so
    the first viewers need not wait for the last grid of the batch). The time in each header is the batch's."""
    try:
        k = _check_top_k(retriever, top_k)
    except BadQuery as err:
        yield from ((position, message_html(str(err))) for position in range(len(texts)))
        return
    asked = {}  # position -> stripped text, for each query searched
    for position, text in enumerate(texts):
        try:
            asked[position] = _query_text(text)
        except BadQuery as err:
            yield position, message_html(str(err))
    if not asked:
        return
    start = time.perf_counter()
    try:
        frames = retriever.search_by_texts(list(asked.values()), top_k=k)
    except ValueError as err:
        yield from ((position, message_html(str(err))) for position in asked)
        return
    elapsed = time.perf_counter() - start
    cut = retriever.bundle.texts_at_context_limit(list(asked.values()))
    for (position, text), results, at_limit in zip(asked.items(), frames, cut):
        note = message_html(context_note(retriever.bundle.context_length), "hint") if at_limit else ""
        yield position, note + results_html(retriever, results, f"text “{text}”", elapsed=elapsed)


def context_note(context_length: int) -> str:
    """What a viewer reads above the results of a text too long for the text tower."""
    return (
        f"This query fills all {context_length} tokens the model reads: words past them were left out of the "
        "search. Shorten it to what matters most."
    )


def run_image_query(retriever, image: QueryImage | None, top_k: int = DEFAULT_TOP_K) -> str:
    """HTML results of an image query (``retriever.search_by_image``): a gallery item id, an :class:`Upload` or a PIL
    image."""
    try:
        _check_top_k(retriever, top_k)
        query, label = resolve_query_image(retriever, image)
        start = time.perf_counter()
        results = retriever.search_by_image(query, top_k=_check_top_k(retriever, top_k, query))
        elapsed = time.perf_counter() - start
    except (BadQuery, ValueError, CorruptImage) as err:
        return message_html(str(err))
    return results_html(retriever, results, f"image ({label})", _query_card(retriever, query, label), elapsed)


def run_conditional_query(retriever, image: QueryImage | None, condition: str, top_k: int = DEFAULT_TOP_K) -> str:
    """HTML results of "like this image, with respect to ``condition``" (``retriever.search_conditional``).

    Shows an explanatory message instead when no conditional encoder is set on the retriever.
    """
    if retriever.conditional_encoder is None:
        return message_html(
            "Conditional search is not available: no conditional encoder is set on this retriever. "
            "Notebook 05 trains one; assign it to retriever.conditional_encoder to enable this demo.",
            "info",
        )
    try:
        _check_top_k(retriever, top_k)
        if not isinstance(condition, str) or not condition.strip():
            raise BadQuery("no condition chosen: pick an attribute such as 'colour'")
        query, label = resolve_query_image(retriever, image)
        start = time.perf_counter()
        results = retriever.search_conditional(query, condition, top_k=_check_top_k(retriever, top_k, query))
        elapsed = time.perf_counter() - start
    except (BadQuery, ValueError, KeyError, CorruptImage) as err:
        # a KeyError's str() is the repr of its key ("'sleeve'"): show the key, and every other message whole
        return message_html(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))
    return results_html(
        retriever, results, f"conditional ({label}, same {condition})", _query_card(retriever, query, label), elapsed
    )


def run_composed_query(retriever, image: QueryImage | None, modification: str, top_k: int = DEFAULT_TOP_K) -> str:
    """HTML results of reference image + modification text (``retriever.search_composed``).

    Shows an explanatory message instead when no compositor is set on the retriever.
    """
    if retriever.compositor is None:
        return message_html(
            "Composed search is not available: no compositor is set on this retriever. "
            "Notebook 06 builds them; assign one to retriever.compositor to enable this demo.",
            "info",
        )
    try:
        _check_top_k(retriever, top_k)
        if not isinstance(modification, str) or _blank(modification):
            raise BadQuery("empty modification: describe the change, e.g. 'make it blue'")
        query, label = resolve_query_image(retriever, image)
        start = time.perf_counter()
        results = retriever.search_composed(query, modification.strip(), top_k=_check_top_k(retriever, top_k, query))
        elapsed = time.perf_counter() - start
    except (BadQuery, ValueError, CorruptImage) as err:
        return message_html(str(err))
    heading = f"composed ({label} + “{modification.strip()}”)"
    return results_html(retriever, results, heading, _query_card(retriever, query, label), elapsed)


# --- debouncing and widgets ----------------------------------------------------------------------------------


class Debouncer:
    """Drop a repeat of the same query that arrives within ``interval`` seconds of the last one that ran.

    Widgets fire more than once for one intent (Enter, then blur, then a Search click); with
    ``continuous_update=False`` on every input that is the only kind of repeat left. ``clock`` is injectable so
    tests need no sleeping.
    """

    def __init__(self, interval: float = 0.75, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self._last: tuple[Hashable, float] | None = None

    def allow(self, key: Hashable) -> bool:
        """True when a query with ``key`` should run now (and remember it), False for a quick repeat."""
        now = self.clock()
        if self._last is not None and self._last[0] == key and now - self._last[1] < self.interval:
            return False
        self._last = (key, now)
        return True


def _widgets():
    import ipywidgets

    return ipywidgets


class QueryDemo:
    """One demo: its controls, a results area, and the callback that fills it.

    Attributes:
        controls: name -> widget (``"text"``, ``"item"``, ``"upload"``, ``"condition"``, ``"modification"``,
            ``"top_k"``, ``"search"``).
        results: the ``ipywidgets.HTML`` that shows the grid or a message.
        box: the ``ipywidgets.VBox`` to display (``display(demo)`` works too).
        queries_served: how many queries ran (repeats dropped by the debouncer are not counted).
    """

    def __init__(
        self,
        title: str,
        controls: dict,
        compute: Callable[[], str],
        key: Callable[[], Hashable],
        hint: str,
        debouncer: Debouncer | None = None,
        kind: str = "query",
    ) -> None:
        w = _widgets()
        self.controls, self._compute, self._key = controls, compute, key
        self.debouncer = debouncer or Debouncer()
        self.queries_served = 0
        self.results = w.HTML(message_html(hint, "hint"), layout=w.Layout(width="100%"))
        inputs = [c for name, c in controls.items() if name != "search"]
        buttons = [controls["search"]] if "search" in controls else []
        self.box = w.VBox(
            [
                w.HTML(f"<h3 style='margin:4px 0'>{html.escape(title)}</h3>"),
                w.HBox(inputs + buttons, layout=w.Layout(flex_flow="row wrap", align_items="center")),
                self.results,
            ]
        )
        self.box.add_class("fc-demo")
        self.box.add_class(f"fc-demo-{kind}")

    def refresh(self, *_event) -> None:
        """Run the query for the current control values (debounced) and show its results."""
        if not self.debouncer.allow(self._key()):
            return
        self.results.value = message_html("searching…", "hint")
        try:
            self.results.value = self._compute()
        except Exception as err:  # a widget callback must never fail silently into the log console
            self.results.value = message_html(f"unexpected error ({type(err).__name__}): {err}")
        self.queries_served += 1

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)


def _top_k_slider(retriever, top_k: int):
    w = _widgets()
    most = max(1, min(MAX_TOP_K, len(retriever.catalogue) - 1))
    return w.IntSlider(value=min(top_k, most), min=1, max=most, description="top k", continuous_update=False)


def _search_button():
    w = _widgets()
    return w.Button(description="Search", button_style="primary", icon="search")


def gallery_choices(retriever, max_choices: int = MAX_CHOICES, include: str | None = None) -> list[tuple[str, str]]:
    """``(item id, label)`` of an image demo's drop-down: the first ``max_choices`` gallery items, then ``include``
    (e.g. the composed demo's reference) when it comes later. A label is the id and the caption's first 40
    characters; the widgets and the classroom page list the same choices."""
    items = list(itertools.islice(retriever.catalogue, max_choices))
    if include is not None and include not in {item.item_id for item in items}:
        items.append(retriever.catalogue.by_id(include))
    return [
        (item.item_id, f"{item.item_id} — {item.caption(retriever.caption_style)[:40] if item.captions else ''}")
        for item in items
    ]


def condition_choices(retriever, conditions: Sequence[str] | None = None) -> list[str]:
    """The conditional demo's choices: ``conditions`` (those the encoder knows), else every gallery attribute."""
    return list(conditions or retriever.catalogue.attribute_names)


def _image_controls(retriever, max_choices: int, selected: str | None = None) -> dict:
    """A gallery dropdown (first ``max_choices`` items, plus ``selected``, which it opens on; else the first item)
    and a file upload for the image-based demos."""
    w = _widgets()
    options = [(label, item_id) for item_id, label in gallery_choices(retriever, max_choices, include=selected)]
    item = w.Dropdown(
        options=options, value=selected or options[0][1], description="gallery item", layout=w.Layout(width="420px")
    )
    upload = w.FileUpload(accept="image/*", multiple=False, description="or upload")
    return {"item": item, "upload": upload}


def _wire(demo: QueryDemo, triggers: Sequence[str]) -> QueryDemo:
    for name in triggers:
        demo.controls[name].observe(demo.refresh, names="value")
    if "search" in demo.controls:
        demo.controls["search"].on_click(demo.refresh)
    return demo


class _ImageSource:
    """Which image the viewer chose last: the gallery dropdown or the uploaded file.

    Choosing one clears the other (an upload leaves the dropdown on no item, an item pick empties the upload), so
    that choosing again the item the dropdown showed, or the same file again, is a change the widgets report and
    the query follows the viewer's last choice. The empty values those resets produce run no query.
    """

    def __init__(self, controls: dict) -> None:
        self.controls = controls

    def wire(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` (the demo's refresh) whenever the viewer picks an item or uploads a file."""
        self._on_change = on_change
        self.controls["item"].observe(self._item_picked, names="value")
        self.controls["upload"].observe(self._file_uploaded, names="value")

    def _item_picked(self, change: dict) -> None:
        if change["new"] is None:  # cleared by an upload
            return
        self.controls["upload"].value = ()
        self._on_change()

    def _file_uploaded(self, change: dict) -> None:
        if not change["new"]:  # emptied by an item pick
            return
        self.controls["item"].value = None
        self._on_change()

    def value(self) -> QueryImage | None:
        upload = upload_content(self.controls["upload"].value)
        return upload if upload is not None else self.controls["item"].value

    def key(self) -> Hashable:
        upload = self.value()
        return ("upload", upload.name, len(upload.content)) if isinstance(upload, Upload) else ("item", upload)


def text_demo(retriever, top_k: int = DEFAULT_TOP_K, placeholder: str = "e.g. red striped cotton shirt") -> QueryDemo:
    """Free-text search: type a description and press Enter (or click Search)."""
    w = _widgets()
    controls = {
        "text": w.Text(
            value="",
            placeholder=placeholder,
            description="describe",
            continuous_update=False,
            layout=w.Layout(width="420px"),
        ),
        "top_k": _top_k_slider(retriever, top_k),
        "search": _search_button(),
    }
    controls["text"].add_class("fc-text-query")
    demo = QueryDemo(
        "Text → image search",
        controls,
        lambda: run_text_query(retriever, controls["text"].value, controls["top_k"].value),
        lambda: (controls["text"].value, controls["top_k"].value),
        "Type a description and press Enter.",
        kind="text",
    )
    return _wire(demo, ["text", "top_k"])


def _image_query_demo(
    retriever,
    title: str,
    kind: str,
    help_text: str,
    extra_controls: dict,
    run: Callable[..., str],
    top_k: int,
    max_choices: int,
    show_at_once: bool = True,
    selected: str | None = None,
) -> QueryDemo:
    """A demo whose query is an image (gallery item or upload) plus ``extra_controls``, then ``top_k``.

    ``run(image, *extra values, top_k)`` returns the results HTML; the cache key is built from the same values.
    ``selected``: the gallery item the demo opens on (default: the first).
    """
    controls = {
        **_image_controls(retriever, max_choices, selected),
        **extra_controls,
        "top_k": _top_k_slider(retriever, top_k),
        "search": _search_button(),
    }
    source = _ImageSource(controls)

    def extras() -> list:
        return [controls[name].value for name in extra_controls]

    demo = QueryDemo(
        title,
        controls,
        lambda: run(source.value(), *extras(), controls["top_k"].value),
        lambda: (source.key(), *extras(), controls["top_k"].value),
        help_text,
        kind=kind,
    )
    if show_at_once:
        demo.refresh()
    source.wire(demo.refresh)  # the item and the upload: the last one chosen is searched
    return _wire(demo, [*extra_controls, "top_k"])


def image_demo(retriever, top_k: int = DEFAULT_TOP_K, max_choices: int = MAX_CHOICES) -> QueryDemo:
    """Image search: pick a gallery item or upload a photo; the item itself is left out of its results."""
    return _image_query_demo(  # shows the first gallery item's neighbours at once
        retriever,
        "Image → image search",
        "image",
        "Pick a gallery item or upload an image.",
        {},
        lambda image, k: run_image_query(retriever, image, k),
        top_k,
        max_choices,
    )


def conditional_demo(
    retriever, conditions: Sequence[str] | None = None, top_k: int = DEFAULT_TOP_K, max_choices: int = MAX_CHOICES
) -> QueryDemo:
    """Conditional search: items like the query image *in one attribute* (needs ``retriever.conditional_encoder``)."""
    conditions = condition_choices(retriever, conditions)
    condition = _widgets().Dropdown(options=conditions, value=conditions[0], description="same")
    return _image_query_demo(  # the first item under the first condition, or the "not set" message
        retriever,
        "Conditional search (image + condition)",
        "conditional",
        "Pick an image and the attribute the results should share.",
        {"condition": condition},
        lambda image, chosen, k: run_conditional_query(retriever, image, chosen, k),
        top_k,
        max_choices,
    )


def composed_demo(
    retriever,
    modification: str = "",
    top_k: int = DEFAULT_TOP_K,
    max_choices: int = MAX_CHOICES,
    reference: str | None = None,
) -> QueryDemo:
    """Composed search: a reference image changed as the text says (needs ``retriever.compositor``).

    ``reference``: the gallery item the demo opens on, the one ``modification`` was written for (e.g. a triplet's
    reference, :func:`course_utils.demo.default_composed_query`); default: the first gallery item.
    """
    text = _widgets().Text(
        value=modification, placeholder="e.g. make it blue", description="change", continuous_update=False
    )
    return _image_query_demo(
        retriever,
        "Composed search (image + modification text)",
        "composed",
        "Pick a reference image, describe the change and press Enter.",
        {"modification": text},
        lambda image, change, k: run_composed_query(retriever, image, change, k),
        top_k,
        max_choices,
        # the "not set" message, or the default modification's results
        show_at_once=retriever.compositor is None or bool(modification.strip()),
        selected=reference,
    )
