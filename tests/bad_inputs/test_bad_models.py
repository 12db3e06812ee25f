"""Issue 15, models: a garbage, truncated or mismatched checkpoint and an unusable device get a clear error naming
the file or the parameter, never torch's advice to load with ``weights_only=False``."""

from __future__ import annotations

import argparse
import traceback

import pytest
import torch

from course_utils.cli import add_data_and_model_arguments, bundle_from_args
from course_utils.file_digests import content_digest
from course_utils.models import load_clip, resolve_device
from course_utils.models.clip_loader import BadCheckpoint


def shown_error(err: BaseException) -> str:
    """What a user sees of ``err``: its printed exception chain (without the stack lines, which name this test)."""
    return "".join(traceback.format_exception_only(err)) + "".join(
        "".join(traceback.format_exception_only(cause))
        for cause in (err.__cause__, err.__context__)
        if cause is not None and not err.__suppress_context__
    )


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A real state dict of the tiny CLIP (random init), saved as open_clip loads it."""
    torch.manual_seed(0)
    bundle = load_clip("tiny-fashion-clip", pretrained=None, device="cpu")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(bundle.model.state_dict(), path)
    return path


def test_a_garbage_checkpoint_names_the_file_without_torchs_advice(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(BadCheckpoint, match=rf"cannot read the checkpoint {path}: it is not a PyTorch") as err:
        load_clip("tiny-fashion-clip", pretrained=str(path), device="cpu")
    assert "weights_only" not in shown_error(err.value)


def test_a_truncated_checkpoint_names_the_file(tiny_checkpoint, tmp_path):
    path = tmp_path / "half.pt"
    data = tiny_checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadCheckpoint, match=rf"cannot read the checkpoint {path}: .*truncated, corrupt") as err:
        load_clip("tiny-fashion-clip", pretrained=str(path), device="cpu")
    assert "weights_only" not in shown_error(err.value)


def test_a_checkpoint_of_another_model_says_it_does_not_fit(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"some.weight": torch.zeros(3)}, path)
    does_not_fit = rf"the checkpoint {path} loads but does not fit model 'tiny-fashion-clip'"
    why = r"\(RuntimeError: Error\(s\) in loading state_dict for CLIP: Missing key"
    with pytest.raises(BadCheckpoint, match=rf"{does_not_fit} {why}"):
        load_clip("tiny-fashion-clip", pretrained=str(path), device="cpu")


def test_the_good_checkpoint_still_loads(tiny_checkpoint):
    bundle = load_clip("tiny-fashion-clip", pretrained=str(tiny_checkpoint), device="cpu")
    assert bundle.identity.startswith("open_clip:tiny-fashion-clip:file-")


def test_a_garbage_openai_clip_file_names_the_file(tmp_path):
    path = tmp_path / "ViT-B-32.pt"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(BadCheckpoint, match=rf"cannot read the checkpoint {path}") as err:
        load_clip(f"clip:{path}", device="cpu")
    assert "weights_only" not in shown_error(err.value)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_clear_error(device):
    """tests/conftest.py makes torch.cuda.is_available() False, as on the course machines."""
    with pytest.raises(
        ValueError,
        match=rf"device='{device}': this machine has no usable CUDA GPU; use "
        r"device='auto' \(CUDA when available, else CPU\), 'cpu'",
    ):
        resolve_device(device)


def test_a_missing_gpu_index_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    with pytest.raises(
        ValueError, match=r"device='cuda:3': this machine has 1 CUDA device\(s\), cuda:0..cuda:0; use device='auto'"
    ):
        resolve_device("cuda:3")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize("device", ["tpu", "gpu", ""])
def test_an_unknown_device_name_is_a_clear_error(device):
    with pytest.raises(ValueError, match=rf"^device='{device}': not a device name; use device='auto'"):
        resolve_device(device)


def test_a_device_type_the_course_does_not_support_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"device='meta': device type 'meta' is not supported by the course; use device='auto'"
    ):
        resolve_device("meta")


def test_a_non_string_device_is_a_type_error():
    with pytest.raises(TypeError, match="device must be a string such as 'auto', 'cpu' or 'cuda', got int"):
        resolve_device(0)


def test_load_clip_checks_the_device_before_building_anything():
    with pytest.raises(ValueError, match="device='tpu': not a device name"):
        load_clip("tiny-fashion-clip", pretrained=None, device="tpu")
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        load_clip("tiny-fashion-clip", pretrained=None, device="cuda")


def test_good_devices_resolve():
    assert resolve_device("auto") == resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")


# --- the multi-process scripts' --weights (embed_shards, train_contrastive) ------------------------------------------


class Pickled:
    """An object torch.save pickles whole: loading it with weights_only=False would run its class's code."""


def weights_args(path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_and_model_arguments(parser)
    return parser.parse_args(["--weights", str(path)])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a checkpoint at all", r"cannot read the checkpoint {path}: it is not a PyTorch"),
        ("pickled", r"cannot read the checkpoint {path}: it is not a PyTorch"),  # never unpickled
        ({"some.weight": torch.zeros(3)}, r"the checkpoint {path} loads but does not fit model 'tiny-fashion-clip'"),
    ],
    ids=["garbage", "pickled-object", "another-model"],
)
def test_a_bad_weights_file_names_the_file(tmp_path, content, message):
    path = tmp_path / "base.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(Pickled() if content == "pickled" else content, path)
    with pytest.raises(BadCheckpoint, match=message.format(path=path)) as err:
        bundle_from_args(weights_args(path))
    assert "weights_only" not in shown_error(err.value)
    with pytest.raises(FileNotFoundError, match=rf"weights file {tmp_path / 'missing.pt'} does not exist"):
        bundle_from_args(weights_args(tmp_path / "missing.pt"))


def test_good_weights_load_plain_or_under_model(tiny_checkpoint, tmp_path):
    expected = torch.load(tiny_checkpoint, weights_only=True)
    wrapped = tmp_path / "cached.pt"
    torch.save({"model": expected, "history": [{"step": 1, "loss": 0.5}]}, wrapped)  # as the course caches a CLIP
    for path in (tiny_checkpoint, wrapped):
        bundle = bundle_from_args(weights_args(path))
        assert all(torch.equal(bundle.model.state_dict()[name], value) for name, value in expected.items())
        assert bundle.identity.endswith(f"+file-{content_digest(path)[:12]}")  # named by the file, not random-init
