"""Content digests of input files (dataset photos, checkpoints), remembered by path and the file's stat fields.

A cache key must change when an input file's bytes change, and only then. A key built from each file's size and
modification time changes whenever the files are copied without their times (``cp`` without ``-p``, a fresh
download, a container image, a data folder handed out again), and every model cached for them is trained again on
identical data. Reading every byte for every key is exact but slow for a large dataset. So, as ``git``'s index
does, :func:`content_digests` keeps the SHA-256 of each file's bytes in ``<cache>/file-digests.json`` beside the
size, modification time, inode and status-change time it was read at: a file whose four still match reuses its
digest; a new, changed, copied or replaced file is read once (a copy that keeps the modification time, ``cp -p`` or
``rsync -a`` onto the same path, is a new inode or a new status-change time). The index is only a memo: one that
cannot be read is named in one log line and rebuilt, and entries for files that no longer exist are dropped when it
is written.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from .cache import cache_lock, file_sha256, remove_leftover_temporaries
from .json_files import read_json_object, write_json
from .paths import cache_dir

LOG = logging.getLogger(__name__)

INDEX_VERSION = 2  # 2: entries hold the inode and status-change time too


def digest_index_path() -> Path:
    """``<cache>/file-digests.json``: each file's absolute path → ``[size, mtime_ns, inode, ctime_ns, sha256]``."""
    return cache_dir() / "file-digests.json"


def _read_index(path: Path) -> dict[str, list]:
    """The index's entries; an unreadable or malformed index is named in one log line and read as empty."""
    if not path.exists():
        return {}
    rebuilt = "it is rebuilt, reading each file once"
    try:
        index = read_json_object(path, "file-digest index", rebuilt, fields=("version", "files"))
        if index["version"] != INDEX_VERSION or not isinstance(index["files"], dict):
            raise ValueError(f"{path} is not a file-digest index of version {INDEX_VERSION}; {rebuilt}")
    except ValueError as err:
        LOG.warning("%s", err)
        return {}
    return {
        name: entry
        for name, entry in index["files"].items()
        if isinstance(entry, list) and len(entry) == 5 and isinstance(entry[4], str) and len(entry[4]) == 64
    }


def content_digests(paths: Sequence[Path | str]) -> list[str | None]:
    """The SHA-256 of each file's bytes, in order; ``None`` for a path that is not an existing file.

    Digests are reused from the index while a file's size, modification time, inode and status-change time are
    those it was read at (like ``git``'s index; an edit in place that restores the modification time is still seen
    by its status-change time); any other file is read and its digest remembered.
    """
    if not paths:
        return []
    index_path = digest_index_path()
    with cache_lock(index_path):
        entries = _read_index(index_path)
        changed = False
        digests: list[str | None] = []
        for path in paths:
            absolute = os.path.abspath(os.path.expanduser(path))
            try:
                info = os.stat(absolute)
            except FileNotFoundError:
                info = None
            if info is None or not stat.S_ISREG(info.st_mode):
                digests.append(None)
                continue
            entry = entries.get(absolute)
            seen_as = [info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns]
            if entry is None or entry[:4] != seen_as:
                entry = [*seen_as, file_sha256(Path(absolute))]
                entries[absolute] = entry
                changed = True
            digests.append(entry[4])
        if changed:
            kept = {name: entry for name, entry in entries.items() if os.path.isfile(name)}
            try:
                remove_leftover_temporaries(index_path)  # of writes whose process was killed
                write_json(index_path, {"version": INDEX_VERSION, "files": kept}, indent=None)
            except OSError as err:  # a read-only or full cache: the digests are right, only not remembered
                LOG.warning(
                    "file-digest index %s not written (%s): the next run reads these files again",
                    index_path,
                    err.strerror,
                )
    return digests


def content_digest(path: Path | str) -> str:
    """The SHA-256 of one existing file's bytes (see :func:`content_digests`)."""
    (found,) = content_digests([path])
    if found is None:
        raise FileNotFoundError(f"{path}: no such file")
    return found
