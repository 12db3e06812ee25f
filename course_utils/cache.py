"""The one disk cache behind every cached artefact: catalogue pixels, model checkpoints, embeddings, token features.

Every artefact goes through :func:`cached_artifact`: a key hashed from what it depends on (:func:`artifact_path`),
an exclusive lock so parallel runs build it once, a write to a unique temporary file renamed atomically onto the
final name, and a SHA-256 checksum stored beside it. A file that is missing its checksum, fails it, cannot be
loaded or fails the artefact's own validation (shape, dtype, finite values) is reported in one line by path,
removed and rebuilt: a damaged cache heals on the next run, it never fails every later run and never loads
silently wrong numbers.

``ARTIFACT_VERSIONS`` is the one place to invalidate a kind of artefact when the code that builds it changes.

A cache that this user may only read (a class's shared one) is read as it is; an artefact that is damaged or new
there is built for the run and named, not kept. The same file primitives serve the files users save: the atomic
write (:func:`write_atomic`, :func:`torch_save_atomic`), file checksums (:func:`file_sha256`), a digest of a saved
state's own contents (:func:`with_content_digest`: a changed byte in a tensor still unpickles). Load errors are
reported through :func:`course_utils.errors.error_summary`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import error_summary
from .paths import cache_dir

LOG = logging.getLogger(__name__)

# Bump a kind's version whenever the code that builds it changes: every cached file of that kind is then rebuilt.
ARTIFACT_VERSIONS = {
    "catalogue": 3,  # procedural catalogue pixels (data/synthetic.py, data/render.py)
    "tiny-clip": 1,  # the embedded tiny CLIP's pretraining (tasks/pretrain.py)
    "photo-clip": 1,  # the course CLIP pretrained on real photos (tasks/photo_pretrain.py)
    "finetuned": 1,  # notebook 02's full fine-tuning (tasks/retrieval.py)
    "two-stage": 1,  # seed 000's two-stage fine-tuning (tasks/retrieval.py)
    "reranker-fit": 1,  # notebook 03's re-rankers trained on frozen features (tasks/rerank.py)
    # pooled image / text embeddings (embed.py). Image keys hash the image bytes, not how they are decoded: a change
    # to data/records.py's decode_image (DECODE_MIN_SIDE, EXIF orientation, 16-bit and float greyscale scaled to
    # 8 bits instead of clipped: 2) must bump this too.
    "embeddings": 2,
    "tokens": 3,  # token-level features, stored as float16 (embed.py); keyed like "embeddings": same decode_image rule
}


class DamagedCacheFile(RuntimeError):
    """A cached file failed its checksum, could not be loaded or failed validation (it is removed and rebuilt)."""


def digest(payload: Any, length: int = 16) -> str:
    """A short SHA-256 of ``payload`` (anything ``json.dumps`` accepts, keys sorted): the cache-key helper."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:length]


def artifact_path(
    kind: str, parts: Any, suffix: str = ".pt", folder: str | None = None, prefix: str | None = None
) -> Path:
    """``<cache>/<folder>/<prefix>-<key><suffix>``, the key hashing ``ARTIFACT_VERSIONS[kind]`` and ``parts``.

    Args:
        kind: a key of :data:`ARTIFACT_VERSIONS`.
        parts: everything the artefact depends on (model identity, weights digest, data fingerprint, recipe...).
        suffix: file extension.
        folder: sub-folder of the cache (default: ``kind``).
        prefix: file-name prefix (default: ``kind``).
    """
    if kind not in ARTIFACT_VERSIONS:
        raise KeyError(f"unknown artefact kind {kind!r}; add it to course_utils.cache.ARTIFACT_VERSIONS")
    key = digest([kind, ARTIFACT_VERSIONS[kind], parts], length=24)
    return cache_dir() / (folder or kind) / f"{prefix or kind}-{key}{suffix}"


def artifact_key(path: Path) -> str:
    """The key part of an :func:`artifact_path` file name (what model identities quote, e.g. ``embedded-<key>``)."""
    return path.stem.rsplit("-", 1)[-1]


# What opening a file for writing raises in a folder this user may only read, or on a read-only file system.
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def _open_lock(lock: Path) -> int | None:
    """A descriptor of ``lock`` (created if missing): read-write, else read-only where this user may only read the
    cache (a class's shared cache, written by its owner); ``None`` where it cannot be opened or created at all."""
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        return os.open(lock, os.O_RDWR | os.O_CREAT, _NEW_FILE_MODE)
    except OSError as err:
        if err.errno not in _READ_ONLY:
            raise
        try:
            return os.open(lock, os.O_RDONLY)  # flock needs no write access
        except OSError:
            return None


@contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock``: other processes building or reading ``path`` wait here, and one
    that waits says so in one log line. Where the lock file can be neither opened nor created (a read-only cache
    without one), no lock is taken: cached files are only ever replaced whole, so reading them needs none."""
    descriptor = _open_lock(path.with_name(path.name + ".lock"))
    if descriptor is None:
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            LOG.warning("cache: waiting for %s: another process holds its lock (building it?)", path)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def checksum_path(path: Path) -> Path:
    """``<path>.sha256``: the SHA-256 of ``path`` as written."""
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _process_umask() -> int:
    """The process's umask (there is no getter: set it and put it back, once at import, before any thread writes)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# What a plain open() gives a new file; mkstemp's temporary files are private (0600) whatever the umask says.
_NEW_FILE_MODE = 0o666 & ~_process_umask()


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(handle)`` so that no reader ever sees a partial file.

    The bytes go to a unique temporary file in the same folder (two writers never share one), are flushed to disk,
    then renamed onto ``path`` in one step; on any error the temporary file is removed. The file gets the permissions
    a plain write would (the umask's), so a cache or records folder shared by a class stays readable to it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, _NEW_FILE_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def torch_save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`write_atomic` (training checkpoints, indexes)."""
    write_atomic(Path(path), lambda handle: torch.save(obj, handle))


# The key under which a saved state carries the digest of its own contents (see :func:`with_content_digest`).
CONTENT_DIGEST = "content_sha256"


def content_sha256(value: Any) -> str:
    """SHA-256 of a nested state (dicts, lists, tuples) down to its leaves: tensors and arrays by dtype, shape and
    bytes, anything else by its ``repr``. Equal after ``torch.save`` and ``torch.load``; a changed byte changes it."""
    sha = hashlib.sha256()
    _feed(sha, value)
    return sha.hexdigest()


def _feed(sha: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        sha.update(f"tensor {tensor.dtype} {tuple(tensor.shape)};".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        sha.update(f"array {value.dtype} {value.shape};".encode())
        sha.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        sha.update(f"dict {len(value)};".encode())
        for key in sorted(value, key=repr):
            _feed(sha, key)
            _feed(sha, value[key])
    elif isinstance(value, (list, tuple)):
        sha.update(f"{type(value).__name__} {len(value)};".encode())
        for item in value:
            _feed(sha, item)
    else:
        sha.update(f"{type(value).__name__} {value!r};".encode())


def with_content_digest(state: dict) -> dict:
    """``state`` with the digest of its contents under :data:`CONTENT_DIGEST`, for a file that a reader checks with
    :func:`has_intact_contents`: a flipped byte in a tensor still unpickles, and only a digest tells."""
    return {**state, CONTENT_DIGEST: content_sha256(state)}


def has_intact_contents(state: Any) -> bool:
    """False when ``state`` carries a :data:`CONTENT_DIGEST` that its contents no longer match; True when they match
    or it carries none (written before the digest was)."""
    if not isinstance(state, dict) or CONTENT_DIGEST not in state:
        return True
    return state[CONTENT_DIGEST] == content_sha256({key: v for key, v in state.items() if key != CONTENT_DIGEST})


def _write_checksum(path: Path, sha: str) -> None:
    """``<path>.sha256`` in ``sha256sum``'s format, ``<sha>  <name>``: the name ties it to this file's key."""
    write_atomic(checksum_path(path), lambda handle: handle.write(f"{sha}  {path.name}\n".encode()))


def _write_with_checksum(path: Path, save: Callable[[Any, BinaryIO], None], obj: Any) -> None:
    write_atomic(path, lambda handle: save(obj, handle))
    _write_checksum(path, file_sha256(path))


def _verify_checksum(path: Path) -> None:
    """Raise :class:`DamagedCacheFile` unless ``path``'s bytes match the checksum written for it, under its name (a
    file copied over another with its checksum has the other's key, so another artefact). A checksum written
    before it named its file (a bare SHA-256) is checked by its bytes and rewritten with the name."""
    expected = checksum_path(path)
    if not expected.exists():
        raise DamagedCacheFile("its checksum file is missing (an interrupted write or an older cache)")
    sha, _, name = expected.read_text().strip().partition("  ")
    if name and name != path.name:
        raise DamagedCacheFile(f"its checksum was written for {name}: another artefact, copied over this one")
    if file_sha256(path) != sha:
        raise DamagedCacheFile("its bytes do not match the checksum written with it (truncated or altered)")
    if not name:
        with contextlib.suppress(OSError):  # a read-only cache keeps the bare checksum, which is still checked
            _write_checksum(path, sha)


def remove_artifact(path: Path) -> None:
    """Delete a cached file and its checksum (missing ones are fine)."""
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


def save_torch(obj: Any, handle: BinaryIO) -> None:
    """``torch.save`` into memory, then one write to ``handle``: a full disk then raises ``OSError`` (no space left)
    from the write, which :func:`cached_artifact` handles, instead of torch's ``RuntimeError`` ("unexpected pos")
    from inside its zip writer."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    handle.write(buffer.getbuffer())


def load_torch(path: Path) -> Any:
    """``torch.load`` of a cache file written by this module (tensors, dicts, lists: ``weights_only``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def cached_artifact(
    path: Path,
    build: Callable[[], Any],
    use_cache: bool = True,
    save: Callable[[Any, BinaryIO], None] = save_torch,
    load: Callable[[Path], Any] = load_torch,
    validate: Callable[[Any], None] | None = None,
    usable: Callable[[Any], bool] | None = None,
) -> Any:
    """Load the artefact cached at ``path``, or ``build()`` it and cache it: the one cache path of the course.

    Args:
        path: where it lives (see :func:`artifact_path`).
        build: computes the artefact (called at most once per call, under the lock).
        use_cache: False computes without reading or writing anything.
        save: ``(obj, binary handle) -> None`` (default ``torch.save``).
        load: ``path -> obj`` (default ``torch.load(weights_only=True)``).
        validate: raises ``ValueError`` when an artefact is unusable (wrong shape, non-finite values...); run on
            every loaded file and on every fresh build before it is written.
        usable: False when a sound artefact lacks something this call needs (it is then rebuilt, not reported).

    Returns:
        The artefact. A damaged file is reported (one log line naming it), removed and rebuilt.

    Raises:
        ValueError: a fresh build fails ``validate``; it is not cached (every later run would report it damaged and
            rebuild it), and the message names ``path`` and what is wrong.
    """
    if not use_cache:
        return build()
    path = Path(path)
    with cache_lock(path):
        if path.exists():
            try:
                _verify_checksum(path)
                obj = load(path)
                if validate is not None:
                    validate(obj)
            except Exception as err:  # any load or validation failure: never trust the file
                try:
                    remove_artifact(path)
                except OSError as removal:
                    LOG.warning(
                        "cache: %s is damaged (%s) and cannot be removed here (%s): building it for this run only; "
                        "its owner should delete it, or set FASHION_COURSE_CACHE to a folder of your own",
                        path,
                        error_summary(err),
                        removal.strerror,
                    )
                    return _built_and_checked(path, build, validate)
                LOG.warning("cache: %s was damaged (%s); removed it and rebuilding", path, error_summary(err))
            else:
                if usable is None or usable(obj):
                    return obj
        obj = _built_and_checked(path, build, validate)
        remove_leftover_temporaries(path)
        try:
            _write_with_checksum(path, save, obj)
        except OSError as err:  # a read-only or full cache: this run goes on, the next one builds it again
            with contextlib.suppress(OSError):  # a data file written without its checksum would read as damaged
                remove_artifact(path)
            LOG.warning(
                "cache: cannot write %s (%s): built for this run only; free space or set FASHION_COURSE_CACHE to a "
                "writable folder to keep it",
                path,
                err.strerror or error_summary(err),
            )
        return obj


def remove_leftover_temporaries(path: Path) -> None:
    """Delete the temporary files that writes of ``path`` or its checksum left when their process was killed
    (:func:`write_atomic` names them ``.<name>.*.tmp``). Called under ``path``'s :func:`cache_lock`, which every
    write of ``path`` holds (a cached artefact's, the file-digest index's), so none of them is still being written."""
    leftovers = list(path.parent.glob(f".{path.name}.*.tmp"))
    for leftover in leftovers:
        with contextlib.suppress(OSError):  # a read-only cache keeps them; nothing reads them
            leftover.unlink()
    if leftovers:
        LOG.warning("cache: removed %d temporary file(s) that an interrupted write of %s left", len(leftovers), path)


def _built_and_checked(path: Path, build: Callable[[], Any], validate: Callable[[Any], None] | None) -> Any:
    """``build()``, checked by ``validate`` as a loaded file would be (a failure names ``path`` and is raised)."""
    obj = build()
    if validate is not None:
        try:
            validate(obj)
        except Exception as err:  # the same checks as on load, whatever they raise
            raise ValueError(
                f"cache: the artefact just built for {path} fails its check ({err}); it was not cached. Its "
                "inputs or the code that builds it are at fault (e.g. an all-zero embedding): fix them, then rerun"
            ) from err
    return obj


def check_finite_rows(tensor: torch.Tensor, what: str) -> None:
    """Raise ``ValueError`` naming the first row of an ``(n, ...)`` tensor that holds NaN or inf (``n`` may be 0)."""
    if tensor.shape[0] == 0:
        return  # no row to check; reshape(0, -1) below would be ambiguous
    bad = ~torch.isfinite(tensor.reshape(tensor.shape[0], -1)).all(dim=1)
    if bad.any():
        raise ValueError(f"{what}: row {int(bad.nonzero()[0])} holds NaN or inf ({int(bad.sum())} such rows)")


def save_npz(pixels: np.ndarray, handle: BinaryIO) -> None:
    """``np.savez`` of an array under the name ``pixels`` (catalogue images)."""
    np.savez(handle, pixels=pixels)


def load_npz(path: Path) -> np.ndarray:
    with np.load(path) as archive:
        return archive["pixels"]
