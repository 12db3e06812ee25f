"""FashionRetriever: text / image / batch search, filters, hybrid scores, hooks and clear errors."""

import pytest
import torch
from PIL import Image

from course_utils.retriever import FashionRetriever


@pytest.fixture(scope="module")
def retriever(tiny_bundle, small_catalogue):
    return FashionRetriever(tiny_bundle, small_catalogue.split("test"), caption_style="title")


def test_text_search_returns_a_ranked_frame(retriever):
    frame = retriever.search_by_text("a red dress", top_k=5)
    assert list(frame["rank"]) == [1, 2, 3, 4, 5]
    assert {"item_id", "score", "caption", "image_path", "colour", "category"} <= set(frame.columns)
    assert frame["score"].is_monotonic_decreasing
    query = retriever.embed_text(["a red dress"])
    expected = (query @ retriever.embeddings.T)[0].topk(5).values
    assert torch.allclose(torch.tensor(frame["score"].to_numpy(), dtype=torch.float32), expected, atol=1e-5)


def test_filters_restrict_results(retriever):
    frame = retriever.search_by_text("a shirt", top_k=3, colour="black")
    assert (frame["colour"] == "black").all()
    # The filtered results are the best-scoring black items, not the first black items of the catalogue.
    scores = (retriever.embed_text(["a shirt"]) @ retriever.embeddings.T)[0].tolist()
    black = [(s, item.item_id) for s, item in zip(scores, retriever.catalogue) if item.attributes["colour"] == "black"]
    assert len(black) > 3
    assert list(frame["item_id"]) == [item_id for _, item_id in sorted(black, key=lambda pair: -pair[0])[:3]]
    with pytest.raises(ValueError, match="unknown attribute filter"):
        retriever.search_by_text("a shirt", baseColour="Red")
    with pytest.raises(ValueError, match="no gallery item matches"):
        retriever.search_by_text("a shirt", colour="chartreuse")


def test_hybrid_boost_moves_matching_items_up(retriever):
    plain = retriever.search_by_text("a bag", top_k=10)
    boosted = retriever.search_by_text("a bag", top_k=10, boost={"colour": "red"}, boost_weight=10.0)
    assert (boosted["colour"] == "red").sum() >= (plain["colour"] == "red").sum()
    assert boosted.iloc[0]["colour"] == "red"


def test_image_search_by_id_path_and_pil(retriever, small_catalogue, tmp_path):
    item = retriever.catalogue[3]
    by_id = retriever.search_by_image(item.item_id, top_k=4)
    assert item.item_id not in set(by_id["item_id"])
    path = tmp_path / "query.png"
    item.image.save(path)
    by_path = retriever.search_by_image(str(path), top_k=4)
    by_pil = retriever.search_by_image(item.image, top_k=4)
    assert list(by_path["item_id"]) == list(by_pil["item_id"])
    with pytest.raises(FileNotFoundError, match="no image file at"):
        retriever.search_by_image("/nowhere/query.jpg")


def test_a_transparent_pil_query_is_seen_on_white_like_a_file(retriever):
    """A cut-out garment (RGBA, transparent background) embeds as if laid on white, as its file would decode."""
    garment = retriever.catalogue[3].image.convert("RGBA")
    cut_out = Image.new("RGBA", garment.size, (0, 0, 0, 0))
    cut_out.paste(garment.crop((8, 8, 56, 56)), (8, 8))
    on_white = Image.new("RGB", garment.size, "white")
    on_white.paste(garment.crop((8, 8, 56, 56)).convert("RGB"), (8, 8))
    assert torch.equal(retriever.embed_image(cut_out), retriever.embed_image(on_white))
    assert not torch.equal(retriever.embed_image(cut_out), retriever.embed_image(cut_out.convert("RGB")))


def test_batch_search_matches_single_searches(retriever):
    queries = ["red dress", "striped shirt"]
    batch = retriever.batch_search(queries, top_k=3)
    assert list(batch["query"]) == ["red dress"] * 3 + ["striped shirt"] * 3
    assert list(batch[batch["query"] == "striped shirt"]["item_id"]) == list(
        retriever.search_by_text("striped shirt", 3)["item_id"]
    )


def test_search_by_texts_gives_each_query_its_single_search(retriever):
    queries = ("red dress", "striped shirt", "red dress")  # any iterable; a repeated query gets its own frame
    frames = retriever.search_by_texts(iter(queries), top_k=3)
    assert len(frames) == 3
    for query, frame in zip(queries, frames):
        single = retriever.search_by_text(query, 3)
        assert list(frame["item_id"]) == list(single["item_id"])
        assert frame["score"].to_numpy() == pytest.approx(single["score"].to_numpy(), abs=1e-5)
    with pytest.raises(TypeError, match="use search_by_text for one query"):
        retriever.search_by_texts("red dress")


def test_bad_queries_get_clear_errors(retriever):
    with pytest.raises(ValueError, match="empty text query"):
        retriever.search_by_text("   ")
    with pytest.raises(ValueError, match="larger than the gallery"):
        retriever.search_by_text("dress", top_k=len(retriever.catalogue) + 1)
    with pytest.raises(ValueError, match="positive integer"):
        retriever.search_by_text("dress", top_k=0)
    with pytest.raises(TypeError, match="item id, a path or a PIL image"):
        retriever.search_by_image(42)


def test_faiss_flat_gives_the_same_ranking(tiny_bundle, retriever):
    flat = FashionRetriever(tiny_bundle, retriever.catalogue, index="flat", image_embeddings=retriever.embeddings)
    assert list(flat.search_by_text("blue jeans", 8)["item_id"]) == list(
        retriever.search_by_text("blue jeans", 8)["item_id"]
    )


def test_an_ivf_index_that_finds_fewer_items_returns_fewer_rows(tiny_bundle, retriever):
    """IVF probing one list of eight can find fewer than top_k items; FAISS pads with position -1, which must not
    come back as the gallery's last item."""
    ivf = FashionRetriever(
        tiny_bundle, retriever.catalogue, index="ivf", nlist=8, nprobe=1, image_embeddings=retriever.embeddings
    )
    top_k = len(retriever.catalogue) - 1
    _, positions = ivf.index.search(ivf.embed_text(["blue jeans"]), top_k)
    found = int((positions >= 0).sum())
    assert found < top_k  # the case under test: one probed list holds fewer items than asked for
    frame = ivf.search_by_text("blue jeans", top_k)
    assert len(frame) == found and frame["item_id"].is_unique


def test_index_options_with_a_ready_index_object_are_refused(tiny_bundle, retriever):
    """Options such as nlist only build a named index; silently ignoring them would keep the given index as it is."""
    with pytest.raises(ValueError, match=r"index options \['nlist', 'nprobe'\] apply only when index is a name"):
        FashionRetriever(
            tiny_bundle,
            retriever.catalogue,
            index=retriever.index,
            image_embeddings=retriever.embeddings,
            nlist=8,
            nprobe=2,
        )


def test_conditional_and_composed_hooks(retriever):
    item_id = retriever.catalogue[0].item_id
    with pytest.raises(RuntimeError, match="no conditional encoder"):
        retriever.search_conditional(item_id, "colour")
    with pytest.raises(RuntimeError, match="no compositor"):
        retriever.search_composed(item_id, "is blue")
    retriever.conditional_encoder = lambda embeddings, condition: embeddings
    same = retriever.search_conditional(item_id, "colour", top_k=3)
    assert list(same["item_id"]) == list(retriever.search_by_image(item_id, top_k=3)["item_id"])
    retriever.compositor = lambda image, text: image + text
    composed = retriever.search_composed(item_id, "is blue", top_k=3)
    assert item_id not in set(composed["item_id"]) and len(composed) == 3
    retriever.conditional_encoder = retriever.compositor = None


def test_empty_gallery_is_refused(tiny_bundle, small_catalogue):
    with pytest.raises(ValueError, match="empty"):
        FashionRetriever(tiny_bundle, small_catalogue.subset([]))


def test_thumbnail(retriever):
    assert isinstance(retriever.thumbnail(retriever.catalogue[0].item_id), Image.Image)
    item = retriever.catalogue[5]
    assert retriever.thumbnail(item.item_id).tobytes() == item.image.tobytes()
    assert retriever.thumbnail(item.item_id).tobytes() != retriever.catalogue[0].image.tobytes()


class _ConditionIgnored(torch.nn.Module):
    """A conditional encoder module that applies one projection whatever the condition."""

    def __init__(self, projection: torch.nn.Module) -> None:
        super().__init__()
        self.projection = projection

    def forward(self, embeddings: torch.Tensor, condition: str) -> torch.Tensor:
        return self.projection(embeddings)


def test_a_module_conditional_encoder_runs_in_eval_mode_without_autograd(retriever):
    """An nn.Module encoder in training mode (dropout on, weights requiring grad) is switched to eval and run
    without autograd, as the compositor is: an identity projection then ranks exactly like image search."""
    dim = retriever.embeddings.shape[1]
    linear = torch.nn.Linear(dim, dim)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(dim))
        linear.bias.zero_()
    encoder = _ConditionIgnored(torch.nn.Sequential(linear, torch.nn.Dropout(0.5))).train()
    retriever.conditional_encoder = encoder
    item_id = retriever.catalogue[0].item_id
    try:
        found = retriever.search_conditional(item_id, "colour", top_k=3)
    finally:
        retriever.conditional_encoder = None
    assert not encoder.training  # dropout off: every gallery item keeps all its coordinates
    assert list(found["item_id"]) == list(retriever.search_by_image(item_id, top_k=3)["item_id"])


def test_float16_gallery_embeddings_are_kept_as_float32(tiny_bundle, retriever):
    """float16 embeddings convert exactly to float32, so filtered, boosted and image-exclusion searches give what
    a retriever given the same values in float32 gives (they scored float32 queries against float16 and crashed)."""
    half = retriever.embeddings.half()
    from_half = FashionRetriever(tiny_bundle, retriever.catalogue, image_embeddings=half)
    from_float = FashionRetriever(tiny_bundle, retriever.catalogue, image_embeddings=half.float())
    assert from_half.embeddings.dtype == torch.float32 and torch.equal(from_half.embeddings, half.float())
    item_id = retriever.catalogue[3].item_id
    for search in (
        lambda r: r.search_by_text("a shirt", top_k=3, colour="black"),
        lambda r: r.search_by_text("a bag", top_k=3, boost={"colour": "red"}),
        lambda r: r.search_by_image(item_id, top_k=3),
    ):
        expected = search(from_float)
        found = search(from_half)
        assert list(found["item_id"]) == list(expected["item_id"]) and list(found["score"]) == list(expected["score"])


def test_ivfpq_gets_a_gallery_sized_nlist_like_ivf(tiny_bundle, small_catalogue):
    """Without nlist, both IVF kinds get len(gallery) // 39 lists: 380 // 39 = 9 (FaissIndex's default 1024 would need
    1024 vectors to train and refuse this gallery)."""
    assert len(small_catalogue) == 380
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(380, tiny_bundle.embed_dim, generator=generator), dim=-1)
    for kind in ("ivf", "ivfpq"):
        searcher = FashionRetriever(tiny_bundle, small_catalogue, index=kind, image_embeddings=embeddings)
        assert searcher.index.nlist == 9


def test_a_query_longer_than_the_text_tower_reads_is_reported(tiny_bundle, retriever, caplog):
    """Every CLIP tokenizer cuts a long text without a word: two long queries that differ only past the cut rank
    alike. The cut is now logged (and shown on the demo page, tests/test_widgets.py)."""
    preamble = "a very long description of a garment " * 10
    assert tiny_bundle.texts_at_context_limit(["red dress", preamble + "red dress"]) == [False, True]
    assert tiny_bundle.context_length == tiny_bundle.tokenizer(["red dress"]).shape[1]
    with caplog.at_level("WARNING", logger="course_utils.retriever"):
        retriever.search_by_text("red striped shirt", top_k=3)
        assert not caplog.records
        long_red = retriever.search_by_text(preamble + "red striped shirt", top_k=3)
        long_black = retriever.search_by_text(preamble + "black leather boots", top_k=3)
    assert long_red["item_id"].tolist() == long_black["item_id"].tolist()  # the words past the cut were not read
    assert f"1 of 1 text queries fill the model's context of {tiny_bundle.context_length} tokens" in caplog.text
