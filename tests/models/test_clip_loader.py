"""load_clip: backends, local checkpoints, clear errors, and failing fast when offline."""

import os

import pytest
import torch

import course_utils.models.clip_loader as loader
from course_utils.models import WeightsUnavailable, load_clip


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and empty weight caches; any download attempt fails the test."""
    monkeypatch.setattr(loader, "network_reachable", lambda *a, **k: False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(loader, "_cached_open_clip_weights", lambda name, tag: None)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    import open_clip.pretrained

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_download)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_url", no_download)


def test_missing_open_clip_weights_fail_fast_with_instructions(offline):
    # fast: `offline` fails the test on any download attempt, so no time is spent in open_clip's retries
    with pytest.raises(WeightsUnavailable) as err:
        load_clip("ViT-B-32", pretrained="openai")
    message = str(err.value)
    assert "ViT-B-32/openai" in message and "HF_HUB_OFFLINE" in message
    assert "pretrained='/path/to/checkpoint.pt'" in message and "tiny-fashion-clip" in message


def test_missing_openai_clip_weights_fail_fast(offline):
    with pytest.raises(WeightsUnavailable, match="copy ViT-B-32.pt into ~/.cache/clip/"):
        load_clip("clip:ViT-B/32")


def test_network_probe_respects_hf_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loader.socket, "create_connection", lambda *a, **k: pytest.fail("probed the network"))
    assert loader.network_reachable() is False


def test_unknown_names_and_tags_are_explained():
    with pytest.raises(ValueError, match="close names: .*ViT-B-32"):
        load_clip("ViT-B-33")
    with pytest.raises(ValueError, match="neither a file nor a pretrained tag"):
        load_clip("ViT-B-32", pretrained="not-a-tag")
    with pytest.raises(ValueError, match="unknown OpenAI CLIP model"):
        load_clip("clip:ViT-Z/99")
    with pytest.raises(ValueError, match="load_experiment"):  # the embedded weights are trained by a task
        load_clip("tiny-fashion-clip", pretrained="embedded")


def test_random_init_bundle_encodes_unit_vectors(tiny_bundle):
    images = torch.stack(
        [tiny_bundle.preprocess(__import__("PIL.Image").Image.new("RGB", (64, 64), c)) for c in ("red", "blue")]
    )
    with torch.inference_mode():
        image_features = tiny_bundle.encode_images(images)
        text_features = tiny_bundle.encode_texts(["a red dress", "blue jeans"])
    assert image_features.shape == text_features.shape == (2, tiny_bundle.embed_dim) == (2, 128)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert tiny_bundle.identity == "open_clip:tiny-fashion-clip:random-init"


def test_local_checkpoint_file_loads_the_same_weights_and_is_named_by_its_bytes(tiny_bundle, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": tiny_bundle.model.state_dict()}, path)
    loaded = load_clip("tiny-fashion-clip", pretrained=str(path), device="cpu")
    assert loaded.identity.startswith("open_clip:tiny-fashion-clip:file-")
    for (name, a), (_, b) in zip(tiny_bundle.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    copy = tmp_path / "elsewhere" / "copied.pt"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    os.utime(copy, ns=(10**18, 10**18))
    assert load_clip("tiny-fashion-clip", pretrained=str(copy), device="cpu").identity == loaded.identity
    torch.save({"state_dict": {k: v + 1 for k, v in tiny_bundle.model.state_dict().items()}}, copy)
    assert load_clip("tiny-fashion-clip", pretrained=str(copy), device="cpu").identity != loaded.identity
