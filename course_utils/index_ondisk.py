"""An index bigger than RAM: IVF-PQ with its inverted lists in a file, searched memory-mapped (notebook 08).

FAISS's recipe for "indexes that do not fit in RAM", behind the :class:`~course_utils.index.FaissIndex` API:

1. :func:`train_ivfpq` learns the coarse centroids and the product quantiser on a sample that fits in RAM and
   writes ``trained.index`` (no vectors yet);
2. :func:`add_shard` — run on as many processes or machines as there are shards — copies the trained index, adds
   one shard of vectors with their global ids and writes ``shard-XXXXX.index`` plus ``shard-XXXXX.json`` (the
   SHA-256 of ``trained.index`` it was encoded with, its own SHA-256, its id count and range);
3. :func:`merge_shards` checks those records (a shard of another training, a damaged shard, or two shards whose
   id ranges overlap are refused by name), concatenates the shards' inverted lists into one file,
   ``lists.ivfdata``, and writes ``populated.index`` and ``lists.json`` (the lists file's size and the SHA-256 of
   the ``populated.index`` it belongs to);
4. :func:`open_ondisk` loads ``populated.index`` with the ``lists.ivfdata`` beside it (so the folder can be moved
   or copied to a search node): the small parts (centroids, codebooks) are read into RAM, the lists stay in the
   file and the operating system pages in only the lists a query probes. It first checks the lists file against
   ``lists.json``: FAISS maps the lists at the offsets ``populated.index`` records, so a truncated copy, or lists
   left by an interrupted merge beside an earlier ``populated.index``, would fail inside FAISS or return wrong ids.

Each vector costs ``pq_m`` bytes of code plus an 8-byte id on disk (72 B at ``pq_m=64`` instead of 2,048 B of float32),
and the codes only approximate the vectors, so :class:`RerankedIndex` re-scores the top candidates exactly when
the vectors are at hand: in RAM, or in a ``.npy`` file read row by row with :class:`NpyRows`.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .cache import file_sha256, write_atomic
from .checks import is_whole_number
from .index import FaissIndex, _as_ids, _as_matrix, _check_k
from .json_files import read_json_object, write_json

TRAINED, LISTS, POPULATED, LISTS_RECORD = "trained.index", "lists.ivfdata", "populated.index", "lists.json"
SHARD_FORMAT = "course_utils.index_ondisk.shard/1"
LISTS_FORMAT = "course_utils.index_ondisk.lists/1"
_SHARD_FIELDS = {"trained_sha256": str, "sha256": str, "count": int, "min_id": (int, None), "max_id": (int, None)}


@contextlib.contextmanager
def _without_faiss_chatter() -> Iterator[None]:
    """Send what FAISS's C++ prints to standard output meanwhile ("resizing <file> to N bytes",
    "IO_FLAG_ONDISK_SAME_DIR: updating ondisk filename from <file> to <file>") to ``/dev/null``: progress lines of
    its own, not the course's, that a notebook would show in the middle of its output. Errors still raise."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None) if os.name == "posix" else None  # the C library, to flush its stdout buffer
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                if libc is not None:
                    libc.fflush(None)  # what C buffered goes to /dev/null too, not into the next output
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def train_ivfpq(
    sample: np.ndarray | torch.Tensor, folder: str | Path, nlist: int, pq_m: int = 64, nprobe: int = 16
) -> Path:
    """Train an empty IVF-PQ on ``sample`` ((n, d), n >= nlist and >= 256) and write ``folder/trained.index``.

    A folder still holding shards of an earlier build is refused: a merge would mix them with the new ones.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    leftovers = sorted(p.name for p in folder.glob("shard-*.index"))
    if leftovers:
        raise ValueError(
            f"{folder} still holds {len(leftovers)} shard(s) of an earlier build ({', '.join(leftovers[:3])}"
            f"{' ...' if len(leftovers) > 3 else ''}); delete them (and their .json records) or train into an "
            "empty folder"
        )
    sample = _as_matrix(sample, sample.shape[-1], "sample")
    index = FaissIndex(sample.shape[1], kind="ivfpq", nlist=nlist, nprobe=nprobe, pq_m=pq_m)
    index.train(sample)
    index.save(folder / TRAINED)
    return folder / TRAINED


def add_shard(
    folder: str | Path, shard: int, vectors: np.ndarray | torch.Tensor, ids: np.ndarray | torch.Tensor
) -> Path:
    """Encode one shard with the trained quantisers and write ``folder/shard-XXXXX.index``.

    Shards are independent: any process holding ``trained.index`` can build any of them. Beside the shard,
    ``shard-XXXXX.json`` records what :func:`merge_shards` checks: the SHA-256 of ``trained.index`` and of the
    shard, and the count and range of its ids.

    Args:
        folder: holds ``trained.index`` (from :func:`train_ivfpq`).
        shard: shard number (names the file).
        vectors: (n, d) float, L2-normalised.
        ids: (n,) int64 global ids returned by searches, >= 0 and distinct (e.g. the rows of the catalogue); each
            shard covers its own range of ids, as contiguous rows do.
    """
    import faiss

    folder = Path(folder)
    # hashed before it is read: should train_ivfpq rewrite it meanwhile, the record names a quantiser other than
    # the file's, and searches refuse the shard instead of reading codes of another quantiser
    trained_sha256 = file_sha256(folder / TRAINED) if (folder / TRAINED).exists() else None
    trained = _load_trained(folder)
    matrix = np.ascontiguousarray(_as_matrix(vectors, trained.dim, "vectors").to(torch.float32).numpy())
    if ids is None:
        raise ValueError(f"shard {shard}: ids are required, the global id of each vector (e.g. np.arange(start, stop))")
    try:
        shard_ids = _as_ids(ids, matrix.shape[0], 0)
    except ValueError as err:
        raise ValueError(f"shard {shard}: {err}") from None
    if len(np.unique(shard_ids)) != len(shard_ids):
        raise ValueError(f"shard {shard}: ids repeat; every vector needs its own id")
    trained.index.add_with_ids(matrix, shard_ids)
    path = folder / f"shard-{shard:05d}.index"
    data = faiss.serialize_index(trained.index).tobytes()
    write_atomic(path, lambda handle: handle.write(data))  # whole or absent
    record = {
        "format": SHARD_FORMAT,
        "trained_sha256": trained_sha256,
        "sha256": hashlib.sha256(data).hexdigest(),
        "count": len(shard_ids),
        "min_id": int(shard_ids.min()) if len(shard_ids) else None,
        "max_id": int(shard_ids.max()) if len(shard_ids) else None,
    }
    write_json(_shard_record_path(path), record)
    return path


def _shard_record_path(shard: Path) -> Path:
    """``shard-XXXXX.json``: the record :func:`add_shard` writes beside ``shard-XXXXX.index``."""
    return shard.with_suffix(".json")


def _check_shards(folder: Path, paths: Sequence[Path]) -> None:
    """Refuse, by name, a shard without a readable record, encoded with another ``trained.index``, changed since
    it was written, or whose ids overlap another shard's (a merge would return those ids twice)."""
    trained_sha256 = file_sha256(folder / TRAINED)
    ranges = []
    for path in paths:
        record_path = _shard_record_path(path)
        record = read_json_object(
            record_path, "shard record", f"rerun add_shard for {path.name}", SHARD_FORMAT, _SHARD_FIELDS
        )
        if record["trained_sha256"] != trained_sha256:
            raise ValueError(
                f"{path} was encoded with another trained.index than {folder / TRAINED} (left from an earlier "
                "build?); rerun add_shard for it or delete it"
            )
        if not path.is_file() or file_sha256(path) != record["sha256"]:
            raise ValueError(
                f"{path} is missing or differs from the SHA-256 in {record_path.name} (truncated or overwritten); "
                "rerun add_shard for it"
            )
        if record["count"]:
            ranges.append((record["min_id"], record["max_id"], path.name))
    ranges.sort()
    for (low, high, name), (next_low, next_high, next_name) in zip(ranges, ranges[1:]):
        if next_low <= high:
            raise ValueError(
                f"{folder}: {name} (ids {low}..{high}) and {next_name} (ids {next_low}..{next_high}) overlap; each "
                "shard must cover its own id range, or a search returns an id twice: delete or rebuild one of them"
            )


def merge_shards(folder: str | Path, shards: Sequence[str | Path] | None = None) -> FaissIndex:
    """Merge the shards' inverted lists into ``folder/lists.ivfdata`` and write ``folder/populated.index``.

    The shards are read memory-mapped, so the merge never holds them in RAM; afterwards they can be deleted.

    Args:
        folder: holds ``trained.index`` and the shards.
        shards: shard files to merge (default: every ``shard-*.index`` in ``folder``, sorted).

    Returns:
        The merged index, opened as :func:`open_ondisk` does.

    Raises:
        ValueError: a shard without its ``.json`` record, encoded with another ``trained.index`` (an earlier
            build), changed since :func:`add_shard` wrote it, or whose id range overlaps another shard's; the
            message names it.
    """
    from faiss.contrib.ondisk import merge_ondisk

    folder = Path(folder).resolve()
    paths = [Path(p) for p in shards] if shards is not None else sorted(folder.glob("shard-*.index"))
    if not paths:
        raise FileNotFoundError(f"no shard-*.index files in {folder}; run add_shard for each shard first")
    index = _load_trained(folder)
    _check_shards(folder, paths)
    for name in (LISTS_RECORD, POPULATED, LISTS):  # a merge stopped midway leaves no earlier build to pair with
        (folder / name).unlink(missing_ok=True)
    with _without_faiss_chatter():
        merge_ondisk(index.index, [str(p) for p in paths], str(folder / LISTS))
    index.save(folder / POPULATED)
    record = {
        "format": LISTS_FORMAT,
        "lists_bytes": (folder / LISTS).stat().st_size,
        "populated_sha256": file_sha256(folder / POPULATED),
        "lists_sha256": file_sha256(folder / LISTS),  # one read at build time; open_ondisk(verify=True) compares
    }
    write_json(folder / LISTS_RECORD, record)
    return open_ondisk(folder, nprobe=index.nprobe)


def _check_lists(folder: Path, verify: bool) -> None:
    """Refuse, by name, a ``lists.ivfdata`` that is not the one :func:`merge_shards` wrote with ``populated.index``:
    another size (a copy cut short) or written beside another ``populated.index`` (a merge that did not finish), and
    with ``verify`` one whose bytes changed (its SHA-256: a read of the whole file)."""
    lists = folder / LISTS
    record = read_json_object(
        folder / LISTS_RECORD,
        f"record of {LISTS}",
        "rerun merge_shards (a merge that did not finish, or one from before these records existed, left none)",
        LISTS_FORMAT,
        {"lists_bytes": int, "populated_sha256": str},
    )
    recorded_bytes, recorded_sha256 = record["lists_bytes"], record["populated_sha256"]
    size = lists.stat().st_size
    if size != recorded_bytes:
        raise ValueError(
            f"{lists} is {size:,} bytes but merge_shards wrote {recorded_bytes:,}: it was cut short or changed (a "
            "copy that did not finish?); copy the folder again or rerun merge_shards"
        )
    if file_sha256(folder / POPULATED) != recorded_sha256:
        raise ValueError(
            f"{folder / POPULATED} is not the index {lists} was merged with (an interrupted or mixed copy?); "
            "copy the folder again or rerun merge_shards"
        )
    if verify and "lists_sha256" not in record:
        raise ValueError(f"{folder / LISTS_RECORD} holds no SHA-256 of {lists} to verify; rerun merge_shards")
    if verify and file_sha256(lists) != record["lists_sha256"]:
        raise ValueError(
            f"{lists} differs from the lists merge_shards wrote (their SHA-256): a damaged copy or disk; copy the "
            "folder again or rerun merge_shards"
        )


def open_ondisk(folder: str | Path, nprobe: int | None = None, verify: bool = False) -> FaissIndex:
    """The merged index of ``folder``: centroids and codebooks in RAM, inverted lists memory-mapped from the file.

    ``populated.index`` is read with FAISS's ``IO_FLAG_ONDISK_SAME_DIR``: the lists are taken from the
    ``lists.ivfdata`` beside it, not from the path recorded at merge time, so a folder moved or copied (e.g. to a
    search node's SSD) opens as it is. Search returns the global ids given to :func:`add_shard`.

    Every open checks the lists' size and the ``populated.index`` they were merged with. A changed byte of the same
    size is seen only by their SHA-256, a read of the whole file, which an open meant to page the lists in on demand
    does not pay: pass ``verify=True`` once after copying the folder to where it will be searched.

    Raises:
        FileNotFoundError: ``populated.index`` or ``lists.ivfdata`` is missing.
        ValueError: ``lists.ivfdata`` is not the size ``lists.json`` records, was merged with another
            ``populated.index``, or (``verify``) differs from the lists merged; the message names the file and says to
            copy again or rerun :func:`merge_shards`.
    """
    import faiss

    path = Path(folder) / POPULATED
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; build it with train_ivfpq, add_shard and merge_shards")
    if not (Path(folder) / LISTS).exists():
        raise FileNotFoundError(f"{Path(folder) / LISTS} (the inverted lists) is missing; populated.index needs it")
    _check_lists(Path(folder), verify)
    with _without_faiss_chatter():  # ids: the global ids stored in the lists
        index = FaissIndex.load(path, io_flags=faiss.IO_FLAG_ONDISK_SAME_DIR)
    if index.kind != "ivfpq":
        raise ValueError(f"{path} holds a {index.kind!r} index, not IVF-PQ; rebuild it with merge_shards")
    if nprobe is not None:
        index.nprobe = nprobe
    return index


def _load_trained(folder: Path) -> FaissIndex:
    if not (folder / TRAINED).exists():
        raise FileNotFoundError(f"{folder / TRAINED} not found; call train_ivfpq first")
    index = FaissIndex.load(folder / TRAINED)
    if len(index):
        raise ValueError(f"{folder / TRAINED} already holds {len(index)} vectors; it must be the empty trained index")
    return index


class NpyRows:
    """Rows of a 2-D ``.npy`` file read (and written) on demand with ``os.pread``/``pwrite``: nothing is mapped.

    A ``numpy.memmap`` would do the same reads, but every page fault maps neighbouring pages too, so after many
    random reads (or a long sequential write) most of the file counts as this process's resident memory;
    ``pread``/``pwrite`` leave it in the operating system's page cache only. Either call may move fewer bytes than
    asked (Linux moves at most 0x7ffff000 bytes per call), so both are repeated until every byte has moved.
    Use it as a context manager (``with NpyRows(path) as rows:``) to close the file on every path.

    Args:
        path: a C-ordered 2-D ``.npy`` file (see :meth:`create`).
        writable: open for :meth:`write` as well.
    """

    @classmethod
    def create(cls, path: str | Path, shape: tuple[int, int], dtype: str | np.dtype = np.float16) -> NpyRows:
        """A new ``.npy`` file of ``shape`` (sparse: disk blocks are allocated as rows are written), writable."""
        header = np.lib.format.open_memmap(Path(path), mode="w+", dtype=np.dtype(dtype), shape=tuple(shape))
        del header  # only the header was written
        return cls(path, writable=True)

    def __init__(self, path: str | Path, writable: bool = False) -> None:
        self.path, self.writable = Path(path), writable
        try:
            header = np.load(self.path, mmap_mode="r")  # reads the header only; no page of data is touched
        except ValueError as err:  # not a .npy file, or shorter than its header says
            raise ValueError(f"{self.path} is not a readable .npy file ({err}); write it again") from None
        if header.ndim != 2 or not header.flags.c_contiguous:
            raise ValueError(f"{self.path}: expected a C-ordered 2-D array, got shape {header.shape}")
        self.shape, self.dtype, self._offset = header.shape, header.dtype, header.offset
        del header
        self.ndim, self._row_bytes = 2, self.shape[1] * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDWR if writable else os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __enter__(self) -> NpyRows:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), d)`` array of the given row numbers."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        for i, row in enumerate(rows):
            if not 0 <= row < self.shape[0]:
                raise IndexError(f"row {row} outside {self.path} ({self.shape[0]} rows)")
            out[i] = np.frombuffer(self._read_row(int(row)), dtype=self.dtype)
        return out

    def _read_row(self, row: int) -> bytes:
        """The bytes of row ``row``, however many ``pread`` calls that takes."""
        offset, parts, done = self._offset + row * self._row_bytes, [], 0
        while done < self._row_bytes:
            part = os.pread(self._fd, self._row_bytes - done, offset + done)
            if not part:
                raise ValueError(
                    f"{self.path} ends inside row {row} (byte {offset + done}, shape {self.shape}): the file was "
                    "truncated; write it again"
                )
            parts.append(part)
            done += len(part)
        return b"".join(parts)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Store ``rows`` ((m, d), cast to the file's dtype) as rows ``start .. start + m - 1``."""
        if not self.writable:
            raise ValueError(f"{self.path} was opened read-only; open it with NpyRows(path, writable=True) to write")
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.shape[1] or not 0 <= start <= self.shape[0] - len(rows):
            raise ValueError(f"cannot write {rows.shape} rows at {start} into {self.path} of shape {self.shape}")
        data, offset = memoryview(rows).cast("B"), self._offset + start * self._row_bytes
        done = 0
        while done < len(data):
            written = os.pwrite(self._fd, data[done:], offset + done)
            if written == 0:
                raise OSError(f"{self.path}: no byte written at {offset + done} (disk full?); free space and rerun")
            done += written

    def close(self) -> None:
        os.close(self._fd)


class RerankedIndex:
    """An approximate index whose top ``candidates`` are re-scored with the exact vectors (same search API).

    Args:
        index: any index of ``course_utils.index`` (here the on-disk IVF-PQ).
        vectors: (n, d) rows indexable by an id array, row ``i`` holding the vector with id ``i``: an array in
            RAM or :class:`NpyRows` over a file on disk (only the candidates' rows are read).
        candidates: approximate neighbours fetched per query before exact re-scoring: a whole number >= 1, and
            at least the ``k`` of every search (a search with a larger ``k`` is refused).
    """

    def __init__(self, index, vectors: np.ndarray | NpyRows, candidates: int = 100) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != index.dim:
            raise ValueError(f"vectors must be (n, {index.dim}), got shape {vectors.shape}")
        if not is_whole_number(candidates, minimum=1):
            raise ValueError(
                f"candidates must be a whole number >= 1 (approximate neighbours re-scored exactly per query), got "
                f"{candidates!r}; to search without re-ranking, search the index itself"
            )
        self.index, self.vectors, self.candidates = index, vectors, int(candidates)

    @property
    def dim(self) -> int:
        return self.index.dim

    def __len__(self) -> int:
        return len(self.index)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among each query's approximate top-``candidates``: scores (q, k) float32, ids (q, k) int64."""
        _check_k(k, len(self))
        if k > self.candidates:
            raise ValueError(
                f"k={k} is more than the candidates={self.candidates} this index re-scores per query; lower k, or "
                f"build the RerankedIndex with candidates >= {k}"
            )
        matrix = _as_matrix(queries, self.dim, "queries").to(torch.float32).numpy()
        _, candidate_ids = self.index.search(matrix, min(self.candidates, len(self)))
        scores = np.full((len(matrix), k), -np.inf, dtype=np.float32)
        ids = np.full((len(matrix), k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(matrix, candidate_ids)):
            found = np.unique(found[found >= 0])  # sorted: the rows are read in file order
            exact = np.asarray(self.vectors[found], dtype=np.float32) @ query
            best = np.argsort(-exact, kind="stable")[:k]
            scores[row, : len(best)], ids[row, : len(best)] = exact[best], found[best]
        return scores, ids
