"""Batched, cached embeddings: shapes, normalisation, cache reuse and invalidation, bad input."""

import copy
import logging

import pytest
import torch
from PIL import Image

from course_utils.data import Catalogue, CorruptImage, FileImage, Item
from course_utils.embed import caption_texts, encode_images, encode_texts, weights_digest


def test_images_and_texts_are_unit_vectors_aligned_with_the_catalogue(tiny_bundle, small_catalogue, isolated_cache):
    test = small_catalogue.split("test")
    images = encode_images(tiny_bundle, test, batch_size=64, progress=False)
    texts = encode_texts(tiny_bundle, caption_texts(test, "title"), batch_size=64, progress=False)
    assert images.shape == texts.shape == (len(test), 128)
    assert torch.allclose(images.norm(dim=-1), torch.ones(len(test)), atol=1e-5)
    with torch.inference_mode():
        direct = tiny_bundle.encode_images(torch.stack([tiny_bundle.preprocess(test[7].image)]))
    assert torch.allclose(images[7], direct[0], atol=1e-5)


def test_cache_is_reused_and_never_stale(tiny_bundle, small_catalogue, isolated_cache):
    test = small_catalogue.split("test").subset(small_catalogue.split("test").ids[:20])
    first = encode_images(tiny_bundle, test, progress=False)
    assert len(list((isolated_cache / "embeddings").glob("images-*.pt"))) == 1
    assert torch.equal(encode_images(tiny_bundle, test, progress=False), first)
    assert len(list((isolated_cache / "embeddings").glob("images-*.pt"))) == 1

    changed = copy.deepcopy(tiny_bundle)
    with torch.no_grad():
        changed.model.visual.proj.add_(0.5)
    assert weights_digest(changed.model) != weights_digest(tiny_bundle.model)
    assert not torch.allclose(encode_images(changed, test, progress=False), first)

    other_items = test.subset(test.ids[:10])
    assert encode_images(tiny_bundle, other_items, progress=False).shape[0] == 10
    assert len(list((isolated_cache / "embeddings").glob("images-*.pt"))) == 3


def test_no_texts_embed_to_zero_rows_cached_once(tiny_bundle, isolated_cache, caplog):
    """The (0, d) embeddings of an empty list pass the cache's checks: reused, never reported damaged."""
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        for _ in range(2):
            assert encode_texts(tiny_bundle, [], progress=False).shape == (0, 128)
    assert not caplog.records
    assert len(list((isolated_cache / "embeddings").glob("texts-*.pt"))) == 1


def test_unreadable_images_raise_with_instructions(tiny_bundle, tmp_path, isolated_cache):
    Image.new("RGB", (32, 32), "red").save(tmp_path / "ok.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    items = [Item(n, ("x",), ("t",), {}, "test", FileImage(tmp_path / f"{n}.jpg")) for n in ("ok", "bad")]
    with pytest.raises(CorruptImage, match=r"drop_unreadable_images\(\)"):
        encode_images(tiny_bundle, Catalogue("toy", items), progress=False)


def test_empty_text_is_refused_naming_the_row(tiny_bundle):
    with pytest.raises(ValueError, match=r"texts\[1\] is '  ': every text must be a non-empty string"):
        encode_texts(tiny_bundle, ["a red dress", "  "], use_cache=False)
    with pytest.raises(ValueError, match=r"texts\[0\] is 123"):
        encode_texts(tiny_bundle, [123], use_cache=False)


def test_empty_catalogue_is_refused_by_name(tiny_bundle, small_catalogue):
    empty = small_catalogue.subset([], name="nothing")
    with pytest.raises(ValueError, match="catalogue 'nothing' is empty: there are no images to encode"):
        encode_images(tiny_bundle, empty, use_cache=False)
