"""Shared fixtures: the real-format data samples that live beside the checkout (``../shared/data``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_utils.paths import shared_data_dir


def _require(path: Path) -> Path:
    """``path`` itself, or skip the test when that folder is absent."""
    if not path.is_dir():
        pytest.skip(f"{path} not present: real-format samples live in ../shared/data")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder; skips the test when it is absent (e.g. on a fresh clone)."""
    return _require(shared_data_dir())


@pytest.fixture
def fashion_product_sample(shared_data: Path) -> Path:
    """``../shared/data/fashion-product-small`` (5,000 real rows and images, plus the full original CSV)."""
    return _require(shared_data / "fashion-product-small")


@pytest.fixture
def fashioniq_sample(shared_data: Path) -> Path:
    """``../shared/data/fashioniq`` (the official annotation files, no images)."""
    return _require(shared_data / "fashioniq")


SMALL_SIZES = {"pretrain": 40, "train": 160, "val": 20, "test": 160}


@pytest.fixture(autouse=True)
def _force_cpu(monkeypatch):
    """Tests run on the CPU, whatever the machine has."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


@pytest.fixture(scope="session")
def small_catalogue():
    """A small procedural catalogue (cached under data/cache like any other)."""
    from course_utils.data import load_catalogue

    return load_catalogue("synthetic", size=SMALL_SIZES, seed=3)


@pytest.fixture(scope="session")
def tiny_bundle():
    """The tiny CLIP with open_clip's random initialisation (no pretraining: fast and deterministic)."""
    import torch

    from course_utils.models import load_clip

    torch.manual_seed(0)
    return load_clip("tiny-fashion-clip", pretrained=None, device="cpu")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Point the course's disk cache at an empty temporary folder."""
    monkeypatch.setenv("FASHION_COURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
