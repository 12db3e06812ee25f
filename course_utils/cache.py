"""Disk-cache helpers: atomic writes, and a lock so parallel runs build each cached artefact once."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (other processes building the same artefact wait here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def torch_save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: readers never see a half-written file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
