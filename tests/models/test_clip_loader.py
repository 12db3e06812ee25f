"""load_clip: backends, local checkpoints, clear errors, and failing fast when offline."""

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.pretrained import _pcfg

import course_utils.models.clip_loader as loader
from course_utils.models import WeightsUnavailable, load_clip
from course_utils.models.clip_loader import BadCheckpoint


@pytest.fixture
def hub_cache(monkeypatch, tmp_path) -> Path:
    """An empty Hugging Face cache under ``tmp_path``, read as with ``HF_HUB_OFFLINE=1`` (no request leaves), an
    empty ``~/.cache/clip`` and no network for the probe. Returns the cache folder (see :func:`put_in_hub_cache`)."""
    import huggingface_hub.constants

    monkeypatch.setattr(loader, "network_reachable", lambda *a, **k: False)
    monkeypatch.setenv("HOME", str(tmp_path))
    # huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when imported, so the constants themselves are set
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


@pytest.fixture
def offline(hub_cache, monkeypatch):
    """No network and empty weight caches; any download attempt fails the test."""

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    import open_clip.factory

    monkeypatch.setattr(open_clip.factory, "download_pretrained", no_download)  # the names create_model calls
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", no_download)


def put_in_hub_cache(hub: Path, repo_id: str, files: dict[str, bytes]) -> dict[str, Path]:
    """Lay ``files`` out as huggingface_hub caches a download of ``repo_id``'s main branch:
    ``models--org--name/refs/main`` holds the commit, ``snapshots/<commit>/<file>`` the bytes."""
    commit = "0123456789abcdef" * 2 + "01234567"
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    return {name: snapshot / name for name in files}


def state_bytes(model: torch.nn.Module, tmp_path: Path, shift: float = 0.0) -> bytes:
    """The bytes of ``torch.save`` of ``model``'s state dict, every tensor plus ``shift``."""
    path = tmp_path / "state.pt"
    torch.save({k: v + shift for k, v in model.state_dict().items()}, path)
    return path.read_bytes()


def sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


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


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "On"])
def test_network_probe_respects_the_offline_switches_as_huggingface_hub_reads_them(monkeypatch, variable, value):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(loader.socket, "create_connection", lambda *a, **k: pytest.fail("probed the network"))
    assert loader.network_reachable() is False


def test_a_set_hf_hub_offline_overrides_transformers_offline(monkeypatch):
    """huggingface_hub reads ``HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE``: a set "0" wins, so the probe runs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(loader.socket, "create_connection", lambda *a, **k: contextlib.nullcontext())
    assert loader.network_reachable() is True


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


# --- open_clip tags read from a copied Hugging Face cache ---------------------------------------------------------


@pytest.mark.parametrize(
    ("hf_hub", "repo", "filenames", "expected"),
    [
        # "org/repo/": the repository's default file, its safetensors twin first (as open_clip downloads)
        ("timm/vit_base_patch32_clip_224.openai/", "timm/vit_base_patch32_clip_224.openai",
         ["open_clip_pytorch_model.bin"], "open_clip_pytorch_model.bin"),
        ("timm/vit_base_patch32_clip_224.openai/", "timm/vit_base_patch32_clip_224.openai",
         ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"], "open_clip_model.safetensors"),
        # "org/repo/file.bin": that file, or "file.safetensors"
        ("jienengchen/ViTamin-S/pytorch_model.bin", "jienengchen/ViTamin-S",
         ["pytorch_model.bin"], "pytorch_model.bin"),
        ("jienengchen/ViTamin-S/pytorch_model.bin", "jienengchen/ViTamin-S",
         ["pytorch_model.bin", "pytorch_model.safetensors"], "pytorch_model.safetensors"),
    ],
)  # fmt: skip
def test_cached_tag_weights_are_found_where_open_clip_splits_the_hub_entry(
    hub_cache, monkeypatch, hf_hub, repo, filenames, expected
):
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "ViT-B-32", {"tag": _pcfg(hf_hub=hf_hub)})
    assert loader._cached_open_clip_weights("ViT-B-32", "tag") is None
    paths = put_in_hub_cache(hub_cache, repo, {name: b"weights" for name in filenames})
    assert loader._cached_open_clip_weights("ViT-B-32", "tag") == str(paths[expected])


@pytest.mark.parametrize("hf_hub", ["course/tiny-test/", "course/tiny-test/weights.bin"])
def test_a_cached_tag_loads_offline_with_the_tags_preprocessing(hub_cache, monkeypatch, tiny_bundle, tmp_path, hf_hub):
    """The tag itself reaches open_clip, so its mean, std and resize mode apply (SigLIP-like: 0.5, squash)."""
    tag = _pcfg(hf_hub=hf_hub, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="squash")
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "tiny-fashion-clip", {"course_test": tag})
    filename = hf_hub.split("/")[2] or "open_clip_pytorch_model.bin"
    put_in_hub_cache(hub_cache, "course/tiny-test", {filename: state_bytes(tiny_bundle.model, tmp_path)})
    bundle = load_clip("tiny-fashion-clip", pretrained="course_test", device="cpu")
    assert bundle.identity == "open_clip:tiny-fashion-clip:course_test"
    resize, *_, normalize = bundle.preprocess.transforms
    assert (resize.size, normalize.mean, normalize.std) == ((64, 64), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert not any("CenterCrop" in repr(step) for step in bundle.preprocess.transforms)  # squash: no crop
    for (name, a), (_, b) in zip(tiny_bundle.model.state_dict().items(), bundle.model.state_dict().items()):
        assert torch.equal(a, b), name


def torchscript_archive(path: Path) -> Path:
    """A small TorchScript archive (a scripted ``Linear``) saved at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation notice
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    return path


def test_an_openai_archive_in_the_clip_cache_is_not_taken_for_open_clip_weights(offline, tmp_path):
    """open_clip loads ViT-B-32/openai from the Hub, never ~/.cache/clip/ViT-B-32.pt (the clip package's file)."""
    torchscript_archive(tmp_path / ".cache" / "clip" / "ViT-B-32.pt")
    with pytest.raises(WeightsUnavailable, match="open_clip weights ViT-B-32/openai are not cached"):
        load_clip("ViT-B-32", pretrained="openai", device="cpu")


def test_a_torchscript_checkpoint_given_to_open_clip_points_to_the_clip_backend(tmp_path):
    path = torchscript_archive(tmp_path / "ViT-B-32.pt")
    with pytest.raises(BadCheckpoint, match=rf"{path} is a TorchScript archive .*: model='clip:{path}'$") as err:
        load_clip("tiny-fashion-clip", pretrained=str(path), device="cpu")
    assert "weights_only" not in str(err.value)


def test_a_checkpoint_that_does_not_fit_the_clip_package_says_why(tmp_path):
    """(The open_clip side of the same file: ``tests/bad_inputs/test_bad_models.py``.)"""
    path = tmp_path / "other.pt"
    torch.save({"some.weight": torch.zeros(3)}, path)
    with pytest.raises(BadCheckpoint, match=r"does not fit model 'clip:.*' \(KeyError: 'visual\.layer1\.0\.conv1"):
        load_clip(f"clip:{path}", device="cpu")


# --- the OpenAI backend with a file ---------------------------------------------------------------------------


def tiny_openai_clip() -> torch.nn.Module:
    """OpenAI's CLIP class at its smallest: 32 px images (16 px patches), width 64, one layer per tower."""
    import clip

    torch.manual_seed(0)
    return clip.model.CLIP(16, 32, 1, 64, 16, 77, 49408, 64, 1, 1).eval()


def test_clip_backend_loads_a_state_dict_file_and_a_torchscript_archive(tmp_path):
    model = tiny_openai_clip()
    wrapped = tmp_path / "wrapped.pt"  # as a training script saves: under "state_dict", with DDP's "module." prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, wrapped)
    archive = tmp_path / "archive.pt"  # OpenAI's released format
    example = (torch.zeros(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's deprecation notice
        torch.jit.trace(model, example).save(str(archive))
    from_state_dict = load_clip(f"clip:{wrapped}", device="cpu")
    from_archive = load_clip(f"clip:{archive}", device="cpu")
    assert from_state_dict.identity == f"clip:file-{sha12(wrapped)}"
    assert from_archive.identity == f"clip:file-{sha12(archive)}"
    for name, value in model.state_dict().items():  # clip's build_model stores the matrices in half precision
        torch.testing.assert_close(from_state_dict.model.state_dict()[name], value, rtol=1e-3, atol=1e-6)
        assert torch.equal(from_state_dict.model.state_dict()[name], from_archive.model.state_dict()[name]), name
    resize, crop = from_state_dict.preprocess.transforms[:2]
    assert (resize.size, crop.size) == (32, (32, 32))  # clip's _transform at the model's input resolution
    tokens = from_state_dict.tokenizer(["a red dress"])
    assert (tokens.shape, tokens.dtype) == ((1, 77), torch.int64)
    with torch.inference_mode():
        assert from_state_dict.encode_texts(["a red dress"]).shape == (1, from_state_dict.embed_dim) == (1, 16)


# --- local-dir: and hf-hub: --------------------------------------------------------------------------------------


def open_clip_folder(folder: Path, weights: bytes | None, mean: float = 0.5) -> dict[str, bytes]:
    """The files of an open_clip export of the tiny CLIP (config with its preprocessing, optional weights)."""
    config = {"model_cfg": open_clip.get_model_config("tiny-fashion-clip"), "preprocess_cfg": {"mean": [mean] * 3}}
    files = {"open_clip_config.json": json.dumps(config).encode()}
    if weights is not None:
        files["open_clip_pytorch_model.bin"] = weights
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_local_dir_identity_names_its_weights_and_config(tiny_bundle, tmp_path):
    folder = tmp_path / "export"
    open_clip_folder(folder, state_bytes(tiny_bundle.model, tmp_path))
    weights, config = folder / "open_clip_pytorch_model.bin", folder / "open_clip_config.json"
    first = load_clip(f"local-dir:{folder}", device="cpu")
    assert first.identity == f"open_clip:local-dir:{folder}:file-{sha12(weights)}-config-{sha12(config)}"
    assert first.preprocess.transforms[-1].mean == [0.5, 0.5, 0.5]  # as the config's JSON list
    for (name, a), (_, b) in zip(tiny_bundle.model.state_dict().items(), first.model.state_dict().items()):
        assert torch.equal(a, b), name

    weights.write_bytes(state_bytes(tiny_bundle.model, tmp_path, shift=1.0))
    os.utime(weights, ns=(10**18, 10**18))  # a new file, as a fresh copy would be
    second = load_clip(f"local-dir:{folder}", device="cpu")
    assert second.identity == f"open_clip:local-dir:{folder}:file-{sha12(weights)}-config-{sha12(config)}"
    assert second.identity != first.identity

    open_clip_folder(folder, None, mean=0.25)
    os.utime(config, ns=(2 * 10**18, 2 * 10**18))
    third = load_clip(f"local-dir:{folder}", device="cpu")
    assert third.identity == f"open_clip:local-dir:{folder}:file-{sha12(weights)}-config-{sha12(config)}"
    assert third.identity != second.identity and third.preprocess.transforms[-1].mean == [0.25, 0.25, 0.25]


def test_local_dir_without_weights_is_random_init_of_its_config(tmp_path):
    folder = tmp_path / "config-only"
    open_clip_folder(folder, None)
    bundle = load_clip(f"local-dir:{folder}", device="cpu")
    assert (
        bundle.identity == f"open_clip:local-dir:{folder}:random-init-config-{sha12(folder / 'open_clip_config.json')}"
    )


@pytest.mark.parametrize("name", ["local-dir:/some/folder", "hf-hub:org/repo"])
def test_pretrained_is_refused_for_names_that_carry_their_weights(name):
    with pytest.raises(ValueError, match=rf"pretrained='openai' does not apply to model='{name}'.*pretrained=None"):
        load_clip(name, pretrained="openai", device="cpu")


def test_hf_hub_model_loads_from_the_cache_offline_named_by_its_files(hub_cache, tiny_bundle, tmp_path):
    files = open_clip_folder(tmp_path / "export", state_bytes(tiny_bundle.model, tmp_path))
    paths = put_in_hub_cache(hub_cache, "course/tiny-clip", files)
    bundle = load_clip("hf-hub:course/tiny-clip", device="cpu")
    weights, config = paths["open_clip_pytorch_model.bin"], paths["open_clip_config.json"]
    assert bundle.identity == f"open_clip:hf-hub:course/tiny-clip:file-{sha12(weights)}-config-{sha12(config)}"
    for (name, a), (_, b) in zip(tiny_bundle.model.state_dict().items(), bundle.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_hf_hub_model_not_cached_fails_fast_offline(offline):
    with pytest.raises(WeightsUnavailable, match=r"repository course/absent are not cached(.|\n)*--local-dir DIR"):
        load_clip("hf-hub:course/absent", device="cpu")
