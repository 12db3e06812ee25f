"""The one disk cache: atomic writes, checksums, self-healing of every kind of damage, concurrent writers, and a
killed run that resumes with the same result."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils.cache import (
    ARTIFACT_VERSIONS,
    artifact_path,
    cached_artifact,
    check_finite_rows,
    checksum_path,
    digest,
    torch_save_atomic,
    write_atomic,
)
from course_utils.models.tiny_clip import TINY_MODEL
from course_utils.paths import REPO_ROOT
from course_utils.tasks.pretrain import pretrain_key_parts
from course_utils.train import TrainConfig


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])  # same size, other bytes
    path.write_bytes(bytes(data))


def _drop_checksum(path: Path) -> None:
    checksum_path(path).unlink()


DAMAGE = {
    "truncated": _truncate,
    "zero bytes": _zero_bytes,
    "64 bytes flipped": _flip_bytes,
    "checksum missing": _drop_checksum,
}


# --- the helper itself -----------------------------------------------------------------------------------------------


def test_builds_once_then_reuses(isolated_cache):
    calls = []
    path = artifact_path("embeddings", ["a"])
    build = lambda: calls.append(1) or torch.arange(6.0)  # noqa: E731
    first, second = cached_artifact(path, build), cached_artifact(path, build)
    assert torch.equal(first, second) and calls == [1]
    assert checksum_path(path).exists()
    assert path.parent == isolated_cache / "embeddings"


def test_key_follows_kind_and_parts(isolated_cache, monkeypatch):
    assert artifact_path("embeddings", ["a"]) != artifact_path("embeddings", ["b"])
    assert artifact_path("embeddings", ["a"]) != artifact_path("tokens", ["a"])
    before = artifact_path("embeddings", ["a"])
    monkeypatch.setitem(ARTIFACT_VERSIONS, "embeddings", ARTIFACT_VERSIONS["embeddings"] + 1)
    assert artifact_path("embeddings", ["a"]) != before  # a version bump orphans every older file of its kind
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})  # key order never matters
    with pytest.raises(KeyError, match="unknown artefact kind"):
        artifact_path("nonsense", [])


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_file_is_named_removed_and_rebuilt(isolated_cache, caplog, damage):
    path = artifact_path("embeddings", ["damage", damage])
    expected = cached_artifact(path, lambda: torch.randn(64, 8, generator=torch.Generator().manual_seed(0)))
    DAMAGE[damage](path)
    calls = []
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        healed = cached_artifact(path, lambda: calls.append(1) or expected.clone())
    assert calls == [1] and torch.equal(healed, expected)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and str(path) in messages[0] and "removed it and rebuilding" in messages[0]
    caplog.clear()
    assert torch.equal(cached_artifact(path, lambda: pytest.fail("rebuilt a healed file")), expected)
    assert not caplog.records  # healed for good: later runs are silent


def test_validation_failure_rebuilds_and_unusable_rebuilds_silently(isolated_cache, caplog):
    path = artifact_path("embeddings", ["nan"])
    cached_artifact(path, lambda: torch.tensor([[1.0, float("nan")]]))

    def finite(t):
        if not torch.isfinite(t).all():
            raise ValueError("holds NaN")

    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        value = cached_artifact(path, lambda: torch.ones(1, 2), validate=finite)
    assert torch.equal(value, torch.ones(1, 2)) and "holds NaN" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        again = cached_artifact(path, lambda: torch.zeros(1, 2), usable=lambda t: bool(t.sum() == 0))
    assert torch.equal(again, torch.zeros(1, 2)) and not caplog.records


def _unit_rows(tensor: torch.Tensor) -> None:
    """A validation as embed.py's: every row has norm 1."""
    norms = tensor.norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms)):
        raise ValueError(f"row {int((norms - 1).abs().argmax())} has norm {float(norms.min()):.3g}, not 1")


def test_a_fresh_build_that_fails_validation_is_refused_and_not_cached(isolated_cache, caplog):
    """Cached, a zero row would be reported damaged, removed and rebuilt on every later run; it is refused at once."""
    path = artifact_path("embeddings", ["zero row"])
    with pytest.raises(ValueError, match=re.escape(str(path)) + r".*row 1 has norm 0, not 1.*not cached"):
        cached_artifact(path, lambda: torch.tensor([[1.0, 0.0], [0.0, 0.0]]), validate=_unit_rows)
    assert not path.exists() and not checksum_path(path).exists()
    calls = []
    good = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.equal(cached_artifact(path, lambda: calls.append(1) or good, validate=_unit_rows), good)
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        assert torch.equal(cached_artifact(path, lambda: calls.append(1) or good, validate=_unit_rows), good)
    assert calls == [1] and not caplog.records


def test_an_artefact_copied_over_another_with_its_checksum_is_refused(isolated_cache, caplog):
    image, text = artifact_path("embeddings", ["image"]), artifact_path("embeddings", ["text"])
    cached_artifact(image, lambda: torch.ones(4, 2))
    cached_artifact(text, lambda: torch.zeros(4, 2))
    assert checksum_path(image).read_text().endswith(f"  {image.name}\n")  # sha256sum's format: the name too
    for source, target in ((text, image), (checksum_path(text), checksum_path(image))):
        target.write_bytes(source.read_bytes())
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        assert torch.equal(cached_artifact(image, lambda: torch.ones(4, 2)), torch.ones(4, 2))
    assert f"its checksum was written for {text.name}" in caplog.text


def test_a_checksum_written_before_it_named_its_file_is_checked_and_upgraded(isolated_cache, caplog):
    path = artifact_path("embeddings", ["bare checksum"])
    cached_artifact(path, lambda: torch.ones(3))
    sha = checksum_path(path).read_text().split()[0]
    checksum_path(path).write_text(sha)  # as caches written before 2026-12-05 hold them
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        assert torch.equal(cached_artifact(path, lambda: pytest.fail("rebuilt a sound file")), torch.ones(3))
    assert not caplog.records and checksum_path(path).read_text() == f"{sha}  {path.name}\n"


def _denied(*args, **kwargs):
    raise PermissionError(13, "Permission denied")


def test_a_read_only_cache_is_read_without_a_writable_lock(isolated_cache, monkeypatch, caplog):
    """A class's shared cache, written by its owner: others may open its lock files only for reading, or (where
    one is missing) not at all; a sound file still loads, with no warning."""
    import course_utils.cache as cache

    path = artifact_path("embeddings", ["shared read-only"])
    cached_artifact(path, lambda: torch.ones(2))
    opened = os.open

    def read_only(name, flags, *mode):
        if flags & (os.O_CREAT | os.O_RDWR | os.O_WRONLY):
            raise PermissionError(13, "Permission denied", str(name))
        return opened(name, flags, *mode)

    monkeypatch.setattr(cache.os, "open", read_only)
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        assert torch.equal(cached_artifact(path, lambda: pytest.fail("rebuilt a sound file")), torch.ones(2))
        path.with_name(path.name + ".lock").unlink()  # no lock file, and none can be created: read without one
        assert torch.equal(cached_artifact(path, lambda: pytest.fail("rebuilt a sound file")), torch.ones(2))
    assert not caplog.records


def test_a_damaged_file_that_cannot_be_removed_is_built_for_this_run_and_named(isolated_cache, monkeypatch, caplog):
    import course_utils.cache as cache

    path = artifact_path("embeddings", ["read-only damaged"])
    cached_artifact(path, lambda: torch.ones(2))
    _truncate(path)
    damaged = path.read_bytes()
    monkeypatch.setattr(cache, "remove_artifact", _denied)
    monkeypatch.setattr(cache, "_write_with_checksum", _denied)
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        assert torch.equal(cached_artifact(path, lambda: torch.ones(2)), torch.ones(2))
    assert path.read_bytes() == damaged  # left for its owner, as the message says
    assert f"{path} is damaged" in caplog.text and "its owner should delete it" in caplog.text


def test_a_build_that_cannot_be_written_is_used_for_this_run(isolated_cache, monkeypatch, caplog):
    import course_utils.cache as cache

    path = artifact_path("embeddings", ["full disk"])
    monkeypatch.setattr(cache, "write_atomic", lambda *args: _raise(OSError(28, "No space left on device")))
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        assert torch.equal(cached_artifact(path, lambda: torch.ones(2)), torch.ones(2))
    assert f"cannot write {path} (No space left on device): built for this run only" in caplog.text
    assert not path.exists()


class DiskFullAfter(io.RawIOBase):
    """A file on a disk with room for ``room`` bytes: later writes fail with ENOSPC, as a nearly full disk does."""

    def __init__(self, room: int):
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if not self.room:
            raise OSError(28, "No space left on device")
        written = min(len(data), self.room)  # the last room is filled by a short write, as the kernel does
        self.room -= written
        return written


def test_a_model_that_fills_the_disk_part_way_is_used_for_this_run(isolated_cache, monkeypatch, caplog):
    """torch.save wrote straight into the file: a disk full part-way raised torch's RuntimeError ("unexpected pos"),
    which the cache did not catch, and the run stopped."""
    import course_utils.cache as cache

    path = artifact_path("embeddings", ["nearly full disk"])
    monkeypatch.setattr(cache, "write_atomic", lambda target, write: write(io.BufferedWriter(DiskFullAfter(10**5))))
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        assert torch.equal(cached_artifact(path, lambda: torch.ones(10**6)), torch.ones(10**6))
    assert f"cannot write {path} (No space left on device): built for this run only" in caplog.text


def test_a_data_file_whose_checksum_cannot_be_written_is_not_left(isolated_cache, monkeypatch, caplog):
    """The data file fitted, its checksum did not: the file stayed, and every later run called it damaged."""
    import course_utils.cache as cache

    path = artifact_path("embeddings", ["no room for the checksum"])
    monkeypatch.setattr(cache, "_write_checksum", lambda *args: _raise(OSError(28, "No space left on device")))
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        assert torch.equal(cached_artifact(path, lambda: torch.ones(2)), torch.ones(2))
    assert "built for this run only" in caplog.text and not path.exists()


def _raise(err: BaseException):
    raise err


def test_a_process_that_waits_for_a_lock_says_so(isolated_cache, caplog):
    import threading

    from course_utils.cache import cache_lock

    path, held, release = isolated_cache / "busy.pt", threading.Event(), threading.Event()

    def builder():
        with cache_lock(path):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=builder)
    thread.start()
    held.wait(10)
    threading.Timer(0.2, release.set).start()
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"), cache_lock(path):
        pass
    thread.join()
    assert f"cache: waiting for {path}: another process holds its lock" in caplog.text


def test_torch_advice_to_load_without_weights_only_is_never_passed_on(tmp_path):
    from course_utils.errors import error_summary

    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(Exception) as raised:
        torch.load(path, weights_only=True)
    summary = error_summary(raised.value)
    assert summary.startswith("UnpicklingError: not a file of tensors torch reads safely (")
    assert "weights_only" not in summary and "\n" not in summary


def test_a_content_digest_survives_save_and_load_and_tells_a_changed_tensor_byte(tmp_path):
    from conftest import flip_a_tensor_byte

    from course_utils.cache import content_sha256, has_intact_contents, with_content_digest
    from course_utils.train import _CHECKPOINT_GLOBALS  # numpy's RNG state, as fit's checkpoints hold it

    state = {
        "weights": torch.randn(64, 64, generator=torch.Generator().manual_seed(0)),
        "half": torch.ones(3, dtype=torch.bfloat16),
        "scalar": torch.tensor(2.5),
        "rng": ("MT19937", np.arange(5, dtype=np.uint32), 3, 0, 0.0),
        "optimizer": {"state": {0: {"step": torch.tensor(4.0)}}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.98)}]},
    }
    path = tmp_path / "state.pt"
    torch_save_atomic(with_content_digest(state), path)
    with torch.serialization.safe_globals(_CHECKPOINT_GLOBALS):
        loaded = torch.load(path, weights_only=True)
    assert has_intact_contents(loaded) and has_intact_contents({"no": "digest"})  # files saved before digests
    assert content_sha256({"a": 1.0}) != content_sha256({"a": 1})
    flip_a_tensor_byte(path)
    with torch.serialization.safe_globals(_CHECKPOINT_GLOBALS):
        assert not has_intact_contents(torch.load(path, weights_only=True))


def test_temporary_files_of_an_interrupted_write_are_removed_when_the_file_is_built(isolated_cache, caplog):
    path = artifact_path("embeddings", ["killed mid-write"])
    path.parent.mkdir(parents=True)
    left = [path.parent / f".{path.name}.k1ll3d.tmp", path.parent / f".{path.name}.sha256.x9.tmp"]
    other = path.parent / ".embeddings-other.pt.a1.tmp"  # another artefact's: its own lock covers it
    for file in (*left, other):
        file.write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        cached_artifact(path, lambda: torch.ones(2))
    assert not any(file.exists() for file in left) and other.exists()
    assert f"removed 2 temporary file(s) that an interrupted write of {path} left" in caplog.text


def test_finite_rows_check_names_the_row_and_accepts_no_rows(isolated_cache, caplog):
    tokens = torch.zeros(3, 2, 4)
    tokens[1, 1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"tokens: row 1 holds NaN or inf \(1 such rows\)"):
        check_finite_rows(tokens, "tokens")
    path, calls = artifact_path("embeddings", ["no rows"]), []

    def no_rows() -> torch.Tensor:
        calls.append(1)
        return torch.empty(0, 4)

    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        for _ in range(2):  # a 0-row tensor (e.g. the embeddings of no text) is cached once and then reused
            found = cached_artifact(path, no_rows, validate=lambda tensor: check_finite_rows(tensor, "embeddings"))
            assert found.shape == (0, 4)
    assert calls == [1] and not caplog.records


def test_no_cache_computes_without_touching_disk(isolated_cache):
    assert cached_artifact(None, lambda: 3, use_cache=False) == 3
    assert not isolated_cache.exists() or not any(isolated_cache.rglob("*.pt"))


def test_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "x.pt"

    def fail(handle):
        handle.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail)
    assert list(tmp_path.iterdir()) == []
    torch_save_atomic({"a": 1}, target)
    assert torch.load(target, weights_only=True) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["x.pt"]


PERMISSIONS = textwrap.dedent("""
    import os, stat, sys
    from pathlib import Path
    os.umask(int(sys.argv[2], 8))
    from course_utils.cache import write_atomic
    folder = Path(sys.argv[1])
    write_atomic(folder / "atomic.json", lambda handle: handle.write(b"{}"))
    (folder / "plain.json").write_bytes(b"{}")
    print(*(oct(stat.S_IMODE((folder / name).stat().st_mode)) for name in ("atomic.json", "plain.json")))
""")


@pytest.mark.parametrize("umask", ["022", "027"])
def test_an_atomic_write_gets_the_permissions_a_plain_write_would(tmp_path, umask):
    # mkstemp makes private files: records and caches written through it were unreadable to anyone else (a class
    # sharing FASHION_COURSE_CACHE, a server run as another user)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PERMISSIONS, str(tmp_path), umask], env=env, capture_output=True, text=True, check=True
    )
    atomic, plain = done.stdout.split()
    assert atomic == plain == oct(0o666 & ~int(umask, 8))


WRITER = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    from course_utils.cache import cached_artifact
    path, log = Path(sys.argv[1]), Path(sys.argv[2])

    def build():
        with open(log, "a") as handle:
            handle.write("built\\n")
        time.sleep(1.0)  # long enough for the other process to arrive while this one builds
        return torch.arange(1000.0)

    value = cached_artifact(path, build)
    print(float(value.sum()))
""")


def test_two_processes_building_one_file_build_it_once(tmp_path):
    path, log = tmp_path / "cache" / "shared.pt", tmp_path / "builds.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(log)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=120) for w in writers]
    assert all(w.returncode == 0 for w in writers), [err for _, err in outputs]
    assert [out.strip() for out, _ in outputs] == ["499500.0", "499500.0"]
    assert log.read_text() == "built\n"  # the second writer waited on the lock, then read the first one's file
    assert sorted(p.name for p in path.parent.iterdir()) == ["shared.pt", "shared.pt.lock", "shared.pt.sha256"]


# --- every kind of cached artefact heals ------------------------------------------------------------------------------


def test_catalogue_pixels_heal(isolated_cache, caplog):
    from course_utils.data import load_catalogue

    sizes = {"pretrain": 4, "train": 8, "val": 2, "test": 8}
    first = load_catalogue("synthetic", size=sizes, seed=5)
    (npz,) = (isolated_cache / "synthetic").glob("*.npz")
    for damage in (_truncate, _flip_bytes):
        damage(npz)
        with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
            healed = load_catalogue("synthetic", size=sizes, seed=5)
        assert str(npz) in caplog.text
        caplog.clear()
        assert np.array_equal(np.asarray(first[3].image), np.asarray(healed[3].image))


def test_embeddings_and_tokens_heal_to_the_same_numbers(tiny_bundle, small_catalogue, isolated_cache, caplog):
    from course_utils.embed import encode_image_tokens, encode_images

    split = small_catalogue.split("test").subset(small_catalogue.split("test").ids[:10])
    embeddings, tokens = encode_images(tiny_bundle, split), encode_image_tokens(tiny_bundle, split)
    for folder, damage in (("embeddings", _flip_bytes), ("tokens", _truncate)):
        (path,) = (isolated_cache / folder).glob("*.pt")
        damage(path)
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        assert torch.equal(encode_images(tiny_bundle, split), embeddings)
        assert torch.equal(encode_image_tokens(tiny_bundle, split).tokens, tokens.tokens)
    assert caplog.text.count("removed it and rebuilding") == 2


def test_tiny_clip_checkpoint_heals(small_catalogue, isolated_cache, caplog):
    from course_utils.tasks.pretrain import pretrained_tiny_clip

    quick = TrainConfig(max_steps=2, batch_size=16, lr=1e-3, seed=0)
    first = pretrained_tiny_clip(small_catalogue, config=quick, progress=False)
    _truncate(first.checkpoint_path)
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        healed = pretrained_tiny_clip(small_catalogue, config=quick, progress=False)
    assert str(first.checkpoint_path) in caplog.text
    for a, b in zip(first.model.state_dict().values(), healed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_rejected_tiny_clip_file_leaves_nothing_in_the_model_it_rebuilds(small_catalogue, isolated_cache, caplog):
    """A file that passes its checksum but not load_state_dict (zeroed weights, one key missing: an older layout)
    had its matching tensors copied into the model before the rejection, and the rebuild trained from them."""
    from course_utils.cache import _write_with_checksum, save_torch
    from course_utils.tasks.pretrain import pretrained_tiny_clip

    quick = TrainConfig(max_steps=2, batch_size=16, lr=1e-3, seed=0)
    fresh = pretrained_tiny_clip(small_catalogue, config=quick, use_cache=False, progress=False)
    state = {name: torch.zeros_like(value) for name, value in fresh.model.state_dict().items()}
    state.pop(next(iter(state)))
    path = artifact_path(
        "tiny-clip", pretrain_key_parts(small_catalogue.split("pretrain"), quick, "web", "cpu"), prefix=TINY_MODEL
    )
    _write_with_checksum(path, save_torch, {"model": state, "history": []})
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        rebuilt = pretrained_tiny_clip(small_catalogue, config=quick, progress=False)
    assert f"{path} was damaged" in caplog.text
    for name, value in fresh.model.state_dict().items():
        assert torch.equal(value, rebuilt.model.state_dict()[name]), name


def test_finetuned_checkpoint_heals(isolated_cache, caplog):
    from conftest import preprocess, tiny_catalogue, tiny_clip, tokenize

    from course_utils.models import ClipBundle
    from course_utils.tasks.experiment import Experiment
    from course_utils.tasks.retrieval import finetuned_bundle

    catalogue = tiny_catalogue(16)
    base = ClipBundle(tiny_clip(), preprocess, tokenize, 16, "test:tiny", torch.device("cpu"))
    experiment = Experiment(catalogue, base, catalogue, catalogue, "web")
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, warmup_steps=0, seed=0)
    first, _ = finetuned_bundle(experiment, config, progress=False)
    _flip_bytes(first.checkpoint_path)
    with caplog.at_level(logging.WARNING, logger="course_utils.cache"):
        healed, _ = finetuned_bundle(experiment, config, progress=False)
    assert str(first.checkpoint_path) in caplog.text
    for a, b in zip(first.model.state_dict().values(), healed.model.state_dict().values()):
        assert torch.equal(a, b)


# --- a run killed mid-training resumes with the same result ---------------------------------------------------------

PRETRAIN = textwrap.dedent("""
    import sys, time, torch
    from pathlib import Path
    import course_utils.tasks.pretrain as pretrain
    from course_utils.data import load_catalogue
    from course_utils.train import TrainConfig
    torch.set_num_threads(1)
    steps, out, pause_marker = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    clamp, done = pretrain.clamp_logit_scale, []

    def after_step(model):  # the recipe's own after-step hook, plus: stop half-way and wait to be killed
        clamp(model)
        done.append(1)
        if pause_marker != "-" and len(done) == steps // 2:
            Path(pause_marker).touch()
            time.sleep(600)

    pretrain.clamp_logit_scale = after_step
    catalogue = load_catalogue("synthetic", size={"pretrain": 64, "train": 8, "val": 2, "test": 8}, seed=1)
    config = TrainConfig(epochs=3, max_steps=steps, batch_size=16, lr=1e-3, seed=0)  # 12 steps over 64 images
    bundle = pretrain.pretrained_tiny_clip(catalogue, config, progress=False)
    torch.save(bundle.model.state_dict(), out)
""")


def _pretrain(cache: Path, steps: int, out: Path, pause_marker: str = "-") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FASHION_COURSE_CACHE": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-c", PRETRAIN, str(steps), str(out), pause_marker],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killed_pretraining_reruns_to_the_same_weights(tmp_path):
    steps, marker = 12, tmp_path / "half-way"
    killed = _pretrain(tmp_path / "killed", steps, tmp_path / "never.pt", str(marker))
    deadline = time.monotonic() + 300
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), killed.stderr.read() if killed.poll() is not None else "never reached half-way"
    killed.send_signal(signal.SIGKILL)  # as a crash or Ctrl+C of `make run` would, in the middle of training
    killed.wait()
    assert not list((tmp_path / "killed" / "tiny-clip").glob("*.pt"))  # no half-written checkpoint left behind

    rerun = _pretrain(tmp_path / "killed", steps, tmp_path / "rerun.pt")
    clean = _pretrain(tmp_path / "clean", steps, tmp_path / "clean.pt")
    for process in (rerun, clean):
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    rerun_state, clean_state = torch.load(tmp_path / "rerun.pt"), torch.load(tmp_path / "clean.pt")
    assert all(torch.equal(rerun_state[k], clean_state[k]) for k in clean_state)
