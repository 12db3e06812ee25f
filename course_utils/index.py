"""Vector indexes for maximum-inner-product search over L2-normalised embeddings (cosine similarity).

Used by ``FashionRetriever`` (notebooks 01, 07) and notebook 08 (search at scale). Two implementations share one small
API so a notebook can swap them (one module: the API, its input checks and both implementations belong together):

- ``ExactIndex``: brute force in torch, chunked over the gallery so memory stays bounded; the reference answer.
  A single query must read every stored vector once, so its latency is bounded below by
  ``bytes stored / memory bandwidth`` (see ``benchmarks/bench_exact_search.py``).
- ``FaissIndex``: FAISS ``flat`` (exact), ``ivf`` (inverted lists, approximate), ``ivfpq`` (inverted lists of
  product-quantised codes: ~64 bytes a vector; notebook 08 keeps its lists on disk, see ``index_ondisk``) or
  ``hnsw`` (graph, approximate), all with the inner-product metric.

API: ``add(vectors, ids=None)``, ``search(queries, k) -> (scores (q, k) float32, ids (q, k) int64)``,
``save(path)``, ``load(path)`` (classmethod), ``len(index)``, ``index.dim``. ``search`` returns numpy arrays; the
returned ids are the ones given to ``add`` or, by default, insertion positions ``0 .. len - 1``.
``build_index(kind, dim, **options)`` picks an implementation by name.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import file_sha256, has_intact_contents, with_content_digest, write_atomic
from .checks import is_whole_number
from .json_files import read_json_object, write_json

INDEX_KINDS = ("exact", "exact-fp16", "flat", "ivf", "hnsw")  # kinds that index a gallery of any size
FAISS_KINDS = ("flat", "ivf", "hnsw", "ivfpq")  # ivfpq trains 256 codewords per sub-quantiser: >= 256 vectors
IVF_KINDS = ("ivf", "ivfpq")
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# float16 rows upcast per step (2048 x 512 x 4 B = 4 MiB stays in cache; fastest of 512..8192 measured here);
# batches amortise the conversion over more rows.
_UPCAST_ROWS_SINGLE = 2048
_UPCAST_ROWS_BATCH = 8192


# ----------------------------------------------------------------------------------------------------------------
# Shared input checks
# ----------------------------------------------------------------------------------------------------------------


def _as_matrix(x: np.ndarray | torch.Tensor, dim: int, name: str) -> torch.Tensor:
    """(n, dim) or (dim,) array/tensor -> (n, dim) CPU float tensor (no copy when already float32 on CPU)."""
    tensor = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if tensor.ndim == 1:
        tensor = tensor[None]
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be (n, {dim}) or ({dim},), got shape {tuple(tensor.shape)}")
    if tensor.shape[1] != dim:
        raise ValueError(
            f"dimension mismatch: the index holds d={dim} vectors but {name} have d={tensor.shape[1]}; "
            "use embeddings from the same model (or build the index with the right dim)"
        )
    if not torch.is_floating_point(tensor):
        tensor = tensor.to(torch.float32)
    require_finite(tensor, name)
    return tensor


def nonfinite_rows(matrix: torch.Tensor) -> torch.Tensor:
    """Positions of the rows of an (n, d) float tensor that hold a NaN or an inf, as an (m,) int64 tensor.

    One pass of row sums (a NaN or inf anywhere makes its row sum non-finite), then an exact check of the
    suspect rows only, so a clean million-row matrix costs one read and no (n, d) temporary.
    """
    if matrix.shape[0] == 0:
        return torch.empty(0, dtype=torch.int64)
    suspects = torch.nonzero(~torch.isfinite(matrix.sum(dim=1))).flatten()
    if len(suspects) == 0:
        return suspects.cpu()
    return suspects[~torch.isfinite(matrix[suspects]).all(dim=1)].cpu()


def require_finite(matrix: torch.Tensor, name: str, row_names: list[str] | None = None) -> None:
    """Raise ``ValueError`` naming the first row of ``matrix`` that holds a NaN or an inf.

    A non-finite vector cannot be ranked: an exact search scores it nan (and may put it at rank 1), a NaN query
    ranks arbitrarily, and FAISS silently never returns such a row. Rejecting it at the boundary makes every
    index (and :class:`~course_utils.retriever.FashionRetriever`) answer the same way.

    Args:
        matrix: (n, d) vectors.
        name: what they are, for the message (e.g. ``"vectors"``, ``"queries"``).
        row_names: optional (n,) labels (e.g. item ids) shown next to the row number.
    """
    bad = nonfinite_rows(matrix)
    if len(bad):
        first = int(bad[0])
        label = f" ({row_names[first]})" if row_names is not None else ""
        raise ValueError(
            f"{name} row {first}{label} contains NaN or inf ({len(bad)} of {matrix.shape[0]} rows do: "
            f"{bad[:5].tolist()}{' ...' if len(bad) > 5 else ''}); vectors must be finite to be ranked: check the "
            "embeddings (a zero vector L2-normalised gives NaN) and re-encode or drop those rows"
        )


def _as_ids(ids: np.ndarray | torch.Tensor | None, n: int, start: int) -> np.ndarray:
    """``ids`` as ``(n,) int64``, or ``start, start + 1, ...`` when ``None``; refused when they are not ``n``
    integers of at least 0: every search here marks a missing result with -1 (FAISS does, and the exact and Milvus
    indexes pad the same way), so a vector stored under a negative id would come back as "missing"."""
    if ids is None:
        return np.arange(start, start + n, dtype=np.int64)
    array = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
    if array.shape != (n,):
        raise ValueError(f"ids must be ({n},) integers, one per vector; got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {array.dtype}")
    if n and array.min() < 0:
        raise ValueError(f"ids must be >= 0 (a search marks a missing result with -1), got {array.min()}")
    return array.astype(np.int64)


def _check_has_queries(n_queries: int) -> None:
    """Refuse a search with no query, plainly (FAISS and Milvus would fail obscurely)."""
    if n_queries == 0:
        raise ValueError("queries is empty; pass at least one (d,) query")


def _check_k(k: int, size: int) -> int:
    """``k`` as a plain int (FAISS refuses numpy integers) after checking it is a whole number in [1, size]."""
    if not is_whole_number(k):
        raise ValueError(f"k must be a whole number of neighbours (an int), got {k!r} ({type(k).__name__})")
    if size == 0:
        raise ValueError("the index is empty; call add(vectors) before search")
    if not 1 <= k <= size:
        raise ValueError(f"k={k} must be in [1, {size}] (the number of indexed vectors); lower k")
    return int(k)


def _save_target(path: str | Path) -> Path:
    """``path`` as a Path whose folder exists (created if missing); ``OSError`` naming it when that cannot be."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"cannot save the index to {path}: it is a folder; give a file name inside it")
    for folder in (path.parent, *path.parent.parents):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(
                f"cannot save the index to {path}: {folder} is a file, not a folder; choose a path inside a folder"
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(path, err) from None
    return path


def _unwritable(path: Path, err: BaseException) -> OSError:
    """The error for a write that failed at ``path``, keeping the OSError subclass (e.g. PermissionError)."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip().splitlines()[-1]
    kind = type(err) if isinstance(err, OSError) else OSError
    return kind(f"cannot write the index to {path}: {reason}; choose a writable folder")


def _corrupt_index(path: Path, what: str, err: BaseException | None = None) -> ValueError:
    detail = f" ({type(err).__name__})" if err is not None else ""
    return ValueError(
        f"{path} is not a readable {what} file{detail}: it is truncated, corrupt or of another kind; "
        "delete it, rebuild the index and save it again"
    )


# ----------------------------------------------------------------------------------------------------------------
# Exact search in torch
# ----------------------------------------------------------------------------------------------------------------


def _merge_topk(
    best_scores: torch.Tensor | None, best_pos: torch.Tensor | None, scores: torch.Tensor, pos: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k best of the running (q, k) candidates and a new chunk's (q, k') candidates."""
    if best_scores is None or best_pos is None:
        return scores, pos
    merged_scores = torch.cat([best_scores, scores], dim=1)
    merged_pos = torch.cat([best_pos, pos], dim=1)
    top_scores, which = torch.topk(merged_scores, min(k, merged_scores.shape[1]), dim=1)
    return top_scores, torch.gather(merged_pos, 1, which)


class ExactIndex:
    """Brute-force inner-product search, chunked over the stored vectors.

    Ties among identical scores are ordered as ``torch.topk`` orders them, which torch does not specify: the order of
    tied vectors may differ with ``chunk_size`` and between a single query and the same query in a batch.

    Args:
        dim: vector dimension d.
        dtype: storage precision, "float32" or "float16" (half the memory and bytes read; scores are computed in
            float32 after an upcast of each chunk).
        chunk_size: stored vectors scored per step by a batch of queries; bounds the temporary score matrix to
            (q, chunk_size). A single query scores ``max(chunk_size, SINGLE_QUERY_CHUNK)`` vectors per step
            instead (its scores are one (chunk,) vector, so a longer step costs little memory).
        device: torch device of the storage and the matmuls ("cpu" in the course; "cuda" works too).
    """

    # A single query's scores for 1M vectors are 4 MB: one long matrix-vector product and one top-k over them cost
    # less than 16 short ones with their top-ks and a merge (benchmarks/bench_exact_search.py, README › Performance).
    SINGLE_QUERY_CHUNK = 1 << 20

    def __init__(self, dim: int, dtype: str = "float32", chunk_size: int = 65536, device: str = "cpu") -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if dtype not in _TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_TORCH_DTYPES)}, got {dtype!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self._dim = int(dim)
        self.dtype = dtype
        self.chunk_size = int(chunk_size)
        self.device = torch.device(device)
        self._parts: list[torch.Tensor] = []
        self._vectors = torch.empty(0, self._dim, dtype=_TORCH_DTYPES[dtype], device=self.device)
        self._ids = np.empty(0, dtype=np.int64)
        self._default_ids = True

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return self._dim

    def __len__(self) -> int:
        return int(self._vectors.shape[0]) + sum(int(p.shape[0]) for p in self._parts)

    def __repr__(self) -> str:
        return f"ExactIndex(dim={self._dim}, dtype={self.dtype!r}, n={len(self)}, chunk_size={self.chunk_size})"

    @property
    def vectors(self) -> torch.Tensor:
        """(n, d) stored vectors in the storage dtype (parts added since the last search are joined once)."""
        if self._parts:
            parts = self._parts if len(self._vectors) == 0 else [self._vectors, *self._parts]
            self._vectors = parts[0] if len(parts) == 1 else torch.cat(parts)
            self._parts = []
        return self._vectors

    def add(self, vectors: np.ndarray | torch.Tensor, ids: np.ndarray | torch.Tensor | None = None) -> None:
        """Append vectors.

        Args:
            vectors: (n, d) float, L2-normalised for cosine similarity.
            ids: (n,) int64 ids returned by ``search`` (default: insertion positions). Either give ids on every
                call or on none.
        """
        matrix = _as_matrix(vectors, self._dim, "vectors")
        if matrix.shape[0] == 0:
            return
        start = len(self)
        if ids is not None and start > 0 and self._default_ids:
            raise ValueError("ids given now but not on earlier add() calls; give ids on every call or on none")
        if ids is None and start > 0 and not self._default_ids:
            raise ValueError("ids were given on earlier add() calls; give them on this call too")
        self._default_ids = ids is None
        self._ids = np.concatenate([self._ids, _as_ids(ids, matrix.shape[0], start)])
        stored = matrix.to(device=self.device, dtype=_TORCH_DTYPES[self.dtype]).contiguous()
        if stored.data_ptr() == matrix.data_ptr():
            stored = stored.clone()  # own a copy: later changes to the caller's array must not change the index
        self._parts.append(stored)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k highest inner products for each query.

        Args:
            queries: (q, d) or (d,) float queries.
            k: neighbours per query, 1 <= k <= len(index).

        Returns:
            scores (q, k) float32 in descending order, ids (q, k) int64.
        """
        k = _check_k(k, len(self))
        query = _as_matrix(queries, self._dim, "queries").to(device=self.device, dtype=torch.float32)
        _check_has_queries(query.shape[0])
        stored = self.vectors
        if query.shape[0] == 1:
            scores, positions = self._search_single(query[0], stored, k)
        else:
            scores, positions = self._search_batch(query, stored, k)
        positions_np = positions.cpu().numpy()
        ids = positions_np if self._default_ids else self._ids[positions_np]
        return scores.cpu().numpy().astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def _score_chunk(self, queries: torch.Tensor, chunk: torch.Tensor, out: torch.Tensor) -> None:
        """Write ``queries @ chunk.T`` into ``out`` ((q, c) float32); float16 chunks are upcast in cache-sized blocks.

        ``queries`` is (d,) for the single-query path (``torch.mv``) or (q, d) (``torch.mm``).
        """
        single = queries.ndim == 1
        if chunk.dtype == torch.float32:
            if single:
                torch.mv(chunk, queries, out=out)
            else:
                torch.mm(queries, chunk.T, out=out)
            return
        rows = _UPCAST_ROWS_SINGLE if single else _UPCAST_ROWS_BATCH
        buffer = torch.empty(min(rows, chunk.shape[0]), self._dim, device=chunk.device)
        for start in range(0, chunk.shape[0], rows):
            block = buffer[: min(rows, chunk.shape[0] - start)]
            block.copy_(chunk[start : start + rows])  # float16 -> float32, stays in L2/L3
            if single:
                torch.mv(block, queries, out=out[start : start + block.shape[0]])
            else:
                out[:, start : start + block.shape[0]] = queries @ block.T

    def _search_single(self, query: torch.Tensor, stored: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One query: a matrix-vector product per chunk, its top-k taken while the scores are in cache, one merge.

        Reads each stored vector exactly once, so it runs at about memory bandwidth where torch's BLAS reads that fast
        in a matrix-vector product (not on every CPU: README › Performance › Exact search).
        """
        n, step = stored.shape[0], max(self.chunk_size, self.SINGLE_QUERY_CHUNK)
        scores_buffer = torch.empty(min(n, step), dtype=torch.float32, device=self.device)
        candidate_scores, candidate_positions = [], []
        for start in range(0, n, step):
            chunk = stored[start : start + step]
            scores = scores_buffer[: chunk.shape[0]]
            self._score_chunk(query, chunk, scores)
            top_scores, top_pos = torch.topk(scores, min(k, chunk.shape[0]))
            candidate_scores.append(top_scores)
            candidate_positions.append(top_pos + start)
        all_scores, all_positions = torch.cat(candidate_scores), torch.cat(candidate_positions)
        scores, which = torch.topk(all_scores, min(k, all_scores.shape[0]))
        return scores[None], all_positions[which][None]

    def _search_batch(self, queries: torch.Tensor, stored: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Several queries: a (q, chunk) score block per chunk, its top-k merged into a running (q, k) best list."""
        best_scores: torch.Tensor | None = None
        best_pos: torch.Tensor | None = None
        block = torch.empty(queries.shape[0], min(stored.shape[0], self.chunk_size), device=self.device)
        for start in range(0, stored.shape[0], self.chunk_size):
            chunk = stored[start : start + self.chunk_size]
            scores = block if chunk.shape[0] == block.shape[1] else torch.empty_like(block[:, : chunk.shape[0]])
            self._score_chunk(queries, chunk, scores)
            top_scores, top_pos = torch.topk(scores, min(k, chunk.shape[0]), dim=1)
            best_scores, best_pos = _merge_topk(best_scores, best_pos, top_scores, top_pos + start, k)
        assert best_scores is not None and best_pos is not None
        return best_scores, best_pos

    def save(self, path: str | Path) -> None:
        """Write the vectors, ids and settings to one file (``torch.save``); missing folders are created.

        Raises:
            OSError: ``path`` (or a folder above it) is a file, or the folder is not writable; the message names it.
        """
        path = _save_target(path)
        state = with_content_digest(
            {
                "format": "course_utils.ExactIndex/1",
                "dim": self._dim,
                "dtype": self.dtype,
                "chunk_size": self.chunk_size,
                "vectors": self.vectors.cpu(),
                "ids": None if self._default_ids else torch.from_numpy(self._ids),
            }
        )
        try:
            write_atomic(path, lambda handle: torch.save(state, handle))  # a reader never sees half a file
        except (OSError, RuntimeError) as err:
            raise _unwritable(path, err) from None

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> ExactIndex:
        """Read an index written by ``save``.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is truncated, corrupt, or not an ``ExactIndex`` file; the message names it.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no ExactIndex file at {path}; ExactIndex.save writes one")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types (and advice we must not pass on)
            raise _corrupt_index(path, "ExactIndex", err) from None
        if not isinstance(state, dict) or state.get("format") != "course_utils.ExactIndex/1":
            raise ValueError(f"{path} is not an ExactIndex file written by ExactIndex.save")
        if not has_intact_contents(state):  # a changed byte among the vectors unpickles all the same
            raise ValueError(
                f"{path}: its numbers differ from the digest saved with them (a byte changed on a damaged disk or "
                "copy); delete it, rebuild the index and save it again"
            )
        vectors, ids = state.get("vectors"), state.get("ids")
        if not isinstance(vectors, torch.Tensor) or vectors.ndim != 2 or vectors.shape[1] != state.get("dim"):
            raise _corrupt_index(path, "ExactIndex")
        if ids is not None and (not isinstance(ids, torch.Tensor) or ids.shape != (vectors.shape[0],)):
            raise _corrupt_index(path, "ExactIndex")
        index = cls(state["dim"], dtype=state["dtype"], chunk_size=state["chunk_size"], device=device)
        if vectors.shape[0]:
            index.add(vectors, ids=ids)
        return index


# ----------------------------------------------------------------------------------------------------------------
# FAISS
# ----------------------------------------------------------------------------------------------------------------


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


class FaissIndex:
    """FAISS index with the inner-product metric: "flat" (exact), "ivf" (IVF-Flat), "ivfpq" (IVF-PQ) or "hnsw".

    Args:
        dim: vector dimension d.
        kind: "flat", "ivf", "ivfpq" or "hnsw".
        nlist: IVF lists (clusters); training needs at least nlist vectors (FAISS suggests >= 39 per list).
        nprobe: IVF lists visited per query (recall/speed knob).
        pq_m: IVF-PQ sub-quantisers: each vector is stored as ``pq_m`` bytes (``dim`` must be a multiple of it).
        hnsw_m: HNSW neighbours per node (graph degree).
        ef_construction: HNSW candidate list size while building.
        ef_search: HNSW candidate list size while searching (recall/speed knob).
    """

    def __init__(
        self,
        dim: int,
        kind: str = "flat",
        nlist: int = 1024,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_construction: int = 40,
        ef_search: int = 64,
        pq_m: int = 64,
    ) -> None:
        import faiss

        if kind not in FAISS_KINDS:
            raise ValueError(f"unknown FAISS kind {kind!r}; choose one of {list(FAISS_KINDS)}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self._dim = int(dim)
        self.kind = kind
        self.nlist, self.hnsw_m, self.ef_construction = int(nlist), int(hnsw_m), int(ef_construction)
        self.pq_m = int(pq_m)
        self._ids = np.empty(0, dtype=np.int64)
        self._default_ids = True
        if kind == "flat":
            self.index = faiss.IndexFlatIP(self._dim)
        elif kind == "ivf":
            self._quantizer = faiss.IndexFlatIP(self._dim)
            self.index = faiss.IndexIVFFlat(self._quantizer, self._dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        elif kind == "ivfpq":
            if self._dim % self.pq_m:
                raise ValueError(f"pq_m={self.pq_m} must divide dim={self._dim} (e.g. pq_m=64 for d=512)")
            self._quantizer = faiss.IndexFlatIP(self._dim)
            self.index = faiss.IndexIVFPQ(
                self._quantizer, self._dim, self.nlist, self.pq_m, 8, faiss.METRIC_INNER_PRODUCT
            )
            self.index.do_polysemous_training = False  # only serves Hamming pre-filtering, which we do not use; slow
        else:
            self.index = faiss.IndexHNSWFlat(self._dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = self.ef_construction
        self.nprobe = nprobe
        self.ef_search = ef_search

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return self._dim

    @property
    def nprobe(self) -> int:
        """IVF lists visited per query."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if not is_whole_number(value, 1):  # int() would run nprobe 1.5 as 1 under the label 1.5
            raise ValueError(f"nprobe must be a whole number >= 1 (IVF lists visited per query), got {value!r}")
        self._nprobe = int(value)
        if self.kind in IVF_KINDS:
            self.index.nprobe = self._nprobe

    @property
    def ef_search(self) -> int:
        """HNSW search candidate list size."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if not is_whole_number(value, 1):
            raise ValueError(f"ef_search must be a whole number >= 1 (HNSW candidates per query), got {value!r}")
        self._ef_search = int(value)
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = self._ef_search

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def __repr__(self) -> str:
        return f"FaissIndex(dim={self._dim}, kind={self.kind!r}, n={len(self)})"

    @property
    def is_trained(self) -> bool:
        """Whether the index can accept vectors (IVF needs ``train`` first; flat and HNSW always can)."""
        return bool(self.index.is_trained)

    def train(self, vectors: np.ndarray | torch.Tensor) -> None:
        """Learn the IVF centroids (k-means) from (n, d) vectors; a no-op for flat and HNSW."""
        if self.kind not in IVF_KINDS:
            return
        matrix = self._as_faiss(vectors, "vectors")
        if matrix.shape[0] < self.nlist:
            raise ValueError(
                f"IVF training needs at least nlist={self.nlist} vectors, got {matrix.shape[0]}; "
                "lower nlist (about sqrt(n) to 4*sqrt(n)) or train on more vectors"
            )
        if self.kind == "ivfpq" and matrix.shape[0] < 256:
            raise ValueError(
                f"IVF-PQ training needs at least 256 vectors (one per PQ codeword), got "
                f"{matrix.shape[0]}; FAISS recommends 39 * 256 = 9,984 or more"
            )
        self.index.train(matrix)

    def _as_faiss(self, x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
        return np.ascontiguousarray(_as_matrix(x, self._dim, name).to(torch.float32).cpu().numpy())

    def add(self, vectors: np.ndarray | torch.Tensor, ids: np.ndarray | torch.Tensor | None = None) -> None:
        """Append (n, d) vectors (IVF: trained on them first if untrained); ids as in ``ExactIndex.add``."""
        matrix = self._as_faiss(vectors, "vectors")
        if matrix.shape[0] == 0:
            return
        start = len(self)
        if ids is not None and start > 0 and self._default_ids:
            raise ValueError("ids given now but not on earlier add() calls; give ids on every call or on none")
        if ids is None and start > 0 and not self._default_ids:
            raise ValueError("ids were given on earlier add() calls; give them on this call too")
        new_ids = _as_ids(ids, matrix.shape[0], start)
        if not self.is_trained:
            self.train(matrix)
        self.index.add(matrix)
        self._default_ids = ids is None
        self._ids = np.concatenate([self._ids, new_ids])

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The (approximately, for IVF/HNSW) k highest inner products per query.

        Returns:
            scores (q, k) float32 descending, ids (q, k) int64. IVF with few probed lists can return fewer than k
            results: the missing slots hold id -1 and score -inf.
        """
        k = _check_k(k, len(self))
        matrix = self._as_faiss(queries, "queries")
        _check_has_queries(matrix.shape[0])
        scores, positions = self.index.search(matrix, k)
        missing = positions < 0
        scores = np.where(missing, -np.inf, scores).astype(np.float32)
        ids = positions if self._default_ids else np.where(missing, -1, self._ids[np.maximum(positions, 0)])
        return scores, ids.astype(np.int64, copy=False)

    def save(self, path: str | Path) -> None:
        """Write ``path`` (the FAISS index), with custom ids ``path.ids.npy``, and last ``path.json`` (settings).

        The settings go last and record the number of vectors and the SHA-256 of the files written before them: a
        save interrupted part-way leaves the previous save's settings, whose checksums no longer match, so
        :meth:`load` names the file that disagrees instead of pairing an index with another save's ids.

        Raises:
            OSError: ``path`` (or a folder above it) is a file, or the folder is not writable; the message names it.
        """
        import faiss

        path = _save_target(path)
        settings = {
            "format": "course_utils.FaissIndex/1",
            "dim": self._dim,
            "kind": self.kind,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "pq_m": self.pq_m,
            "custom_ids": not self._default_ids,
            "ntotal": len(self),
        }
        try:  # each file appears whole or not at all (written to a unique temporary name, then renamed)
            index_bytes = faiss.serialize_index(self.index).tobytes()
            write_atomic(path, lambda handle: handle.write(index_bytes))
            settings["index_sha256"] = hashlib.sha256(index_bytes).hexdigest()
            if not self._default_ids:
                ids_buffer = io.BytesIO()
                np.save(ids_buffer, self._ids)
                write_atomic(_sidecar(path, ".ids.npy"), lambda handle: handle.write(ids_buffer.getvalue()))
                settings["ids_sha256"] = hashlib.sha256(ids_buffer.getvalue()).hexdigest()
            write_json(_sidecar(path, ".json"), settings)
        except (OSError, RuntimeError) as err:
            raise _unwritable(path, err) from None

    @classmethod
    def load(cls, path: str | Path, io_flags: int = 0) -> FaissIndex:
        """Read an index written by ``save`` (needs the ``.json`` sidecar next to it).

        ``io_flags``: FAISS's ``read_index`` flags, e.g. ``faiss.IO_FLAG_ONDISK_SAME_DIR`` for an IVF index whose
        inverted lists live in a file beside it (:func:`course_utils.index_ondisk.open_ondisk`).

        Raises:
            FileNotFoundError: the index, its ``.json`` sidecar or its ``.ids.npy`` file is missing.
            ValueError: a file is truncated or corrupt, or disagrees with its settings (SHA-256, dimension, kind,
                number of vectors or ids; e.g. left by a save interrupted part-way): the message names the file.
                Settings written before the SHA-256 and vector count were recorded are not checked for them.
        """
        import faiss

        path = Path(path).expanduser()
        sidecar = _sidecar(path, ".json")
        for needed in (path, sidecar):
            if not needed.is_file():
                raise FileNotFoundError(f"{needed} not found; FaissIndex.save writes {path.name} and {sidecar.name}")
        settings = read_json_object(
            sidecar,
            "FaissIndex settings file",
            "delete it, rebuild the index and save it again",
            "course_utils.FaissIndex/1",
            {
                **dict.fromkeys(("dim", "nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search"), int),
                "kind": str,
                "custom_ids": bool,
            },
        )
        if not settings["custom_ids"] and "ids_sha256" in settings:
            raise ValueError(
                f"{sidecar} says custom_ids is false but records the SHA-256 of an ids file (edited by hand?); "
                "save the index again"
            )
        options = {key: settings[key] for key in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search")}
        options["pq_m"] = settings.get("pq_m", 64)  # files written before ivfpq existed lack it
        index = cls(settings["dim"], kind=settings["kind"], **options)
        try:
            loaded = faiss.read_index(str(path), io_flags)
        except RuntimeError as err:
            raise _corrupt_index(path, "FAISS index", err) from None
        expected = {
            "flat": faiss.IndexFlat,
            "ivf": faiss.IndexIVFFlat,
            "hnsw": faiss.IndexHNSWFlat,
            "ivfpq": faiss.IndexIVFPQ,
        }[index.kind]
        if (
            loaded.d != index.dim
            or not isinstance(loaded, expected)
            or loaded.metric_type != faiss.METRIC_INNER_PRODUCT
        ):
            raise ValueError(
                f"{path} holds a {type(loaded).__name__} of d={loaded.d} but {sidecar} says kind={index.kind!r}, "
                f"dim={index.dim} (inner product); the two files come from different saves: save the index again"
            )
        _check_recorded_sha256(path, sidecar, settings.get("index_sha256"))
        if settings.get("ntotal", loaded.ntotal) != loaded.ntotal:
            raise ValueError(
                f"{path} holds {loaded.ntotal} vectors but {sidecar} says {settings['ntotal']}; the two files come "
                "from different saves: save the index again"
            )
        index.index = loaded
        index.nprobe, index.ef_search = settings["nprobe"], settings["ef_search"]  # reapply knobs to the loaded index
        if settings["custom_ids"]:
            ids = _load_ids(_sidecar(path, ".ids.npy"), len(index), sidecar, settings.get("ids_sha256"))
            index._ids, index._default_ids = ids, False
        else:
            index._ids = np.arange(len(index), dtype=np.int64)
        return index


def _check_recorded_sha256(path: Path, settings_path: Path, recorded: str | None) -> None:
    """Refuse ``path`` when its SHA-256 differs from the one ``settings_path`` recorded for it.

    ``recorded`` is None for settings saved before checksums were recorded: such files are loaded unchecked.
    """
    if recorded is not None and file_sha256(path) != recorded:
        raise ValueError(
            f"{path} is not the file {settings_path.name} was saved with (its SHA-256 differs): a save was "
            "interrupted part-way or the file was changed since; save the index again"
        )


def _load_ids(path: Path, n: int, settings_path: Path, recorded_sha256: str | None) -> np.ndarray:
    """The (n,) int64 ids saved beside a FAISS index, checked against the SHA-256 its settings recorded; errors
    name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; FaissIndex.save writes it for an index with custom ids")
    _check_recorded_sha256(path, settings_path, recorded_sha256)  # before reading: another file is never parsed
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise _corrupt_index(path, "FaissIndex ids", err) from None
    if not isinstance(ids, np.ndarray):  # an .npz archive
        raise _corrupt_index(path, "FaissIndex ids")
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{path} holds {ids.shape} {ids.dtype} ids but the index has {n} vectors; save it again")
    return ids.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------


def perturbed_copies(
    source: np.ndarray, n: int, perturbation: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` perturbed copies of rows of ``source``, to measure an index at sizes beyond the catalogue (notebook 08):
    ``(rows, vectors)``, the ``(n,)`` source row of each copy and the ``(n, d)`` float32 unit vectors, each a random
    row plus Gaussian noise of norm about ``perturbation``, L2-normalised. Copies keep their row's neighbourhood (and,
    to whoever keeps ``rows``, its item's attributes) without the catalogue having more items."""
    rows = rng.integers(0, len(source), n)
    x = source[rows]
    x = x + rng.standard_normal(x.shape).astype(np.float32) * np.float32(perturbation / np.sqrt(x.shape[1]))
    return rows, x / np.linalg.norm(x, axis=1, keepdims=True)


def build_index(kind: str, dim: int, **options: Any) -> ExactIndex | FaissIndex:
    """Create an empty index by name.

    Args:
        kind: "exact" (torch, float32), "exact-fp16" (torch, float16 storage), or a FAISS kind "flat", "ivf",
            "ivfpq" (needs >= 256 vectors to train) or "hnsw".
        dim: vector dimension d.
        **options: passed to ``ExactIndex`` (chunk_size, device) or ``FaissIndex`` (nlist, nprobe, hnsw_m,
            ef_construction, ef_search, pq_m).

    Returns:
        An empty index with the common ``add`` / ``search`` / ``save`` API.
    """
    if kind == "exact":
        return ExactIndex(dim, **options)
    if kind == "exact-fp16":
        return ExactIndex(dim, dtype="float16", **options)
    if kind in FAISS_KINDS:
        return FaissIndex(dim, kind=kind, **options)
    raise ValueError(f"unknown index kind {kind!r}; choose one of {list(dict.fromkeys(INDEX_KINDS + FAISS_KINDS))}")
