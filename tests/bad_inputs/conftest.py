"""Fixtures of the bad-input suite (issue 15): small bad files and a hand-made retriever, all built in code."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import StubBundle

from course_utils.data import ArrayImage, Catalogue, Item
from course_utils.retriever import FashionRetriever

from .bad_files import MALFORMED_PPM, bomb_jpeg, jpeg_bytes

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "grey": (128, 128, 128)}


@pytest.fixture
def bad_images(tmp_path) -> dict[str, Path]:
    """One file per way an image can be undecodable, plus a good one, in ``tmp_path/images``."""
    folder = tmp_path / "images"
    folder.mkdir()
    files = {
        "good": jpeg_bytes(),
        "bomb": bomb_jpeg(60000, 60000),  # over 2x PIL's limit: DecompressionBombError
        "bomb-warning": bomb_jpeg(10000, 10000),  # 1-2x the limit: PIL only warns, then tries to decode
        "truncated": jpeg_bytes("blue", (64, 64))[:200],
        "malformed": MALFORMED_PPM,
        "not-an-image": b"definitely not an image",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.jpg"
        paths[name].write_bytes(content)
    return paths


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A folder nobody can create files in: read-only permissions, or (as root, who ignores them) under /sys."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o500)
        yield folder
        folder.chmod(0o700)
        return
    folder = Path("/sys/course-utils-bad-inputs")
    try:
        folder.mkdir()
    except OSError:
        yield folder
        return
    folder.rmdir()
    pytest.skip("no unwritable folder on this machine (running as root and /sys accepts new folders)")


@pytest.fixture
def gallery() -> Catalogue:
    """Four solid-colour items (ids = colour names)."""
    pixels = np.stack([np.full((8, 8, 3), rgb, np.uint8) for rgb in COLOURS.values()])
    items = [
        Item(name, (f"{name} shirt",), ("title",), {"colour": name}, "test", ArrayImage(pixels, i))
        for i, name in enumerate(COLOURS)
    ]
    return Catalogue("stub", items)


@pytest.fixture
def make_retriever(gallery) -> Callable[..., FashionRetriever]:
    """``make_retriever(embeddings=None, index="exact")``: a retriever over ``gallery`` (embeddings default: RGB)."""

    def make(embeddings: torch.Tensor | None = None, index: str = "exact") -> FashionRetriever:
        if embeddings is None:
            embeddings = F.normalize(torch.tensor(list(COLOURS.values()), dtype=torch.float32), dim=-1)
        return FashionRetriever(StubBundle(), gallery, index=index, image_embeddings=embeddings)

    return make
