"""A vector database as the retriever's index: Milvus through ``pymilvus``, with attribute filters run inside it
(notebook 08).

Notebook 07's indexes live in the Python process and filter by scoring the whole gallery in numpy. A vector
database keeps vectors *and* attributes, persists them, and evaluates ``baseColour == "Red"`` inside the engine
while it searches, so only matching items are ranked and nothing but the top k comes back. The same client code
talks to Milvus Lite (an embedded engine that runs inside this process and keeps its database in a local folder
named ``*.db``: the default here) or to a Milvus server or cluster (``uri="http://host:19530"``).

``MilvusIndex`` has the API of ``course_utils.index`` (``add``, ``search``, ``len``, ``dim``) plus ``filters`` in
``search``; :func:`milvus_retriever` builds (or reopens, after checking the model, weights and vectors recorded
with it) a collection for a catalogue and hands it to :class:`~course_utils.retriever.FashionRetriever`. The
primary key of a row is the item's row in the catalogue. The collection uses Milvus's ``FLAT`` index (exact inner
product); on millions of rows choose ``HNSW`` or ``IVF_*`` with ``index_type=`` and tune its search parameter with
``search_params=`` (:data:`INDEX_TYPES`).
Collections are created with ``Strong`` consistency, so a search or a count right after an insert sees it (a
server's default, ``Bounded``, may not yet).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from .checks import is_whole_number
from .embed import encode_images, weights_digest
from .index import _as_ids, _as_matrix, _check_has_queries, _check_k
from .retriever import FashionRetriever

DEFAULT_COLLECTION = "fashion"
_KEY, _ITEM, _VECTOR = "row", "item_id", "embedding"  # reserved field names
_MAX_TEXT = 1024  # bytes per attribute value (VARCHAR max_length)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Milvus index types offered, each with the one search-time parameter it takes (None: FLAT is exact, nothing to tune).
INDEX_TYPES = {"FLAT": None, "HNSW": "ef", "IVF_FLAT": "nprobe", "IVF_SQ8": "nprobe", "IVF_PQ": "nprobe"}
# Collection properties in which milvus_retriever records what its vectors are (checked when it reopens them).
_RECORD = ("course_utils.model", "course_utils.weights_digest", "course_utils.embeddings_sha256", "course_utils.rows")


class VectorDatabaseError(RuntimeError):
    """The database cannot be reached or does not hold what was asked for; the message says what to do."""


# Clients this process holds open per Milvus Lite folder (absolute path). Milvus Lite 3 runs its engine inside the
# process, one per folder, holding the folder's lock until stopped; the last client to go stops it (_disconnect).
_lite_clients: dict[str, int] = {}


def _lite_folder(uri: str) -> str | None:
    """The absolute folder of a Milvus Lite ``uri`` (a path ending in ``.db``, as pymilvus tells them), else None."""
    return os.path.abspath(uri) if uri.endswith(".db") else None


def _locked_by_another_process(folder: str) -> bool:
    """Whether another process holds the lock Milvus Lite takes on ``folder`` (its ``LOCK`` file)."""
    lock = os.path.join(folder, "LOCK")
    if folder in _lite_clients or not os.path.exists(lock):
        return False
    descriptor = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # also drops the lock when it was taken
    return False


def _client(uri: str, timeout: float):
    """A connected ``MilvusClient``; a bad URI, an unreachable server or a Milvus Lite folder another process holds
    raises a :class:`VectorDatabaseError`. Hand the client back with :func:`_disconnect`."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    folder = _lite_folder(uri)
    held_elsewhere = VectorDatabaseError(
        f"the Milvus Lite database {uri!r} is open in another process, which holds its lock: close it there "
        "(MilvusIndex.close()) or end that process (a notebook's kernel, make serve), or use another path"
    )
    if folder and _locked_by_another_process(folder):  # checked first: Milvus Lite would log a traceback and fail
        raise held_elsewhere
    try:
        with _quiet("milvus_lite"):  # its traceback for a folder another process took meanwhile: the error says it
            client = MilvusClient(uri=uri, timeout=timeout)
    except MilvusException as err:
        if folder and _locked_by_another_process(folder):  # taken between the check and the open
            raise held_elsewhere from err
        raise VectorDatabaseError(
            f"cannot open the vector database at uri={uri!r}: {err.message}. Use a local file path ending in .db "
            "(Milvus Lite; its folder must exist) or the address of a running Milvus server, e.g. "
            "http://127.0.0.1:19530"
        ) from err
    if folder:
        _lite_clients[folder] = _lite_clients.get(folder, 0) + 1
    return client


def _disconnect(client, uri: str) -> None:
    """Close a client from :func:`_client`. The last one of a Milvus Lite folder in this process also stops the
    engine running it here, which releases the folder's lock, so other processes can open it."""
    client.close()
    folder = _lite_folder(uri)
    if folder:
        _lite_clients[folder] -= 1
        if not _lite_clients[folder]:
            del _lite_clients[folder]
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(folder)


@contextmanager
def _connection(uri: str, timeout: float) -> Iterator:
    """A client for a new :class:`MilvusIndex`: disconnected if the block raises, handed to the index otherwise."""
    client = _client(uri, timeout)
    try:
        yield client
    except BaseException:
        _disconnect(client, uri)  # release the folder's lock before reporting
        raise


@contextmanager
def _database_errors(uri: str) -> Iterator[None]:
    """Turn the engine's own errors (a damaged Milvus Lite folder: a schema that is not JSON, a data file cut short)
    into a :class:`VectorDatabaseError` that names ``uri`` and says what to do. The tracebacks that pymilvus and
    Milvus Lite's server log for such an error are kept out of the output: the message carries the engine's reason."""
    from pymilvus.exceptions import MilvusException

    try:
        with _quiet("pymilvus.decorators", "milvus_lite.adapter.grpc.servicer"):
            yield
    except MilvusException as err:
        if not _lite_folder(uri):
            remedy = "write the collection again (milvus_retriever(..., rebuild=True)) or ask the server's operator"
        else:
            remedy = (
                f"delete {uri} (Milvus Lite keeps the whole database in it) and write it again "
                "(milvus_retriever(..., rebuild=True))"
            )
        raise VectorDatabaseError(
            f"the vector database at {uri!r} failed ({err.message}); if its files are damaged (a copy or a run cut "
            f"short), {remedy}"
        ) from err


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise the named loggers to CRITICAL for the duration (their levels are restored afterwards)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _check_search_params(index_type: str, search_params: Mapping[str, int] | None) -> dict:
    """``search_params`` as a dict, after checking it names only the search parameter of ``index_type``."""
    if index_type not in INDEX_TYPES:
        raise ValueError(f"index_type={index_type!r} is not offered; choose one of {list(INDEX_TYPES)}")
    allowed = {INDEX_TYPES[index_type]} - {None}
    unknown = sorted(set(search_params or {}) - allowed)
    if unknown:
        raise ValueError(
            f"search_params {unknown} do not apply to index_type={index_type!r}; it takes "
            f"{sorted(allowed) or 'none (FLAT search is exact)'}"
        )
    return dict(search_params or {})


def _embeddings_digest(embeddings: np.ndarray | torch.Tensor) -> str:
    """SHA-256 of ``(n, d)`` embeddings as float32 bytes: what :func:`milvus_retriever` records and checks."""
    matrix = _as_matrix(embeddings, embeddings.shape[-1], "image_embeddings").to(torch.float32).contiguous()
    return hashlib.sha256(matrix.numpy().tobytes()).hexdigest()


def filter_expression(filters: Mapping[str, str]) -> str:
    """``{"colour": "red", "sleeve": "long"}`` -> ``colour == "red" and sleeve == "long"`` (Milvus boolean syntax).

    Values are quoted with JSON escaping, so a value holding quotes cannot change the expression. Letters outside
    ASCII ("écru", "中文") are written as they are: Milvus's parser knows only the escapes ``\\ \" \n \r \t``, not
    JSON's ``\u00e9``, so a value with another control character is refused.
    """
    for name, value in filters.items():
        if not _NAME.match(name):
            raise ValueError(f"attribute name {name!r} is not a valid field name (letters, digits, underscore)")
        if not isinstance(value, str):
            raise ValueError(f"filter {name}={value!r}: attribute values are strings")
        unwritable = [char for char in value if unicodedata.category(char) == "Cc" and char not in "\n\r\t"]
        if unwritable:
            raise ValueError(
                f"filter {name}={value!r}: the control character {unwritable[0]!r} cannot be written in a Milvus "
                "filter; remove it from the value"
            )
    return " and ".join(f"{name} == {json.dumps(value, ensure_ascii=False)}" for name, value in filters.items())


def _check_row(position: int, item_id: str, attributes: Mapping[str, str], attribute_names: Sequence[str]) -> None:
    """Refuse a row Milvus would reject mid-insert (a text over 1,024 bytes) or that would lose an attribute."""
    unknown = sorted(set(attributes) - set(attribute_names))
    if unknown:
        raise ValueError(
            f"row {position} (item {item_id!r}) has attribute(s) {unknown} that the collection does not store "
            f"(it stores {list(attribute_names)}); create it with those attribute_names, or drop them"
        )
    for field, text in [(_ITEM, item_id), *((name, str(value)) for name, value in attributes.items())]:
        size = len(text.encode("utf-8"))
        if size > _MAX_TEXT:
            raise ValueError(
                f"row {position} (item {item_id!r}): {field} is {size} bytes, more than the {_MAX_TEXT} a Milvus "
                "text field holds here; shorten it before adding"
            )


class MilvusIndex:
    """Inner-product search in a Milvus collection, with attribute filters evaluated by the engine.

    Use :meth:`create` for a new collection and :meth:`open` for an existing one.

    Args:
        client: a connected ``pymilvus.MilvusClient``.
        collection: collection name.
        uri: where the client points (kept for messages and ``repr``).
        search_params: the search parameter of the collection's index type, e.g. ``{"ef": 64}`` for HNSW or
            ``{"nprobe": 16}`` for IVF (:data:`INDEX_TYPES`); empty: Milvus's default.
    """

    supports_filters = True  # FashionRetriever passes filters to search() instead of filtering in numpy

    def __init__(self, client, collection: str, uri: str, search_params: Mapping[str, int] | None = None) -> None:
        self.client, self.collection, self.uri = client, collection, uri
        self._closed = False
        description = client.describe_collection(collection)
        fields = {f["name"]: f for f in description["fields"]}
        if _VECTOR not in fields or _KEY not in fields:
            raise VectorDatabaseError(
                f"collection {collection!r} at {uri!r} was not written by MilvusIndex "
                f"(fields {sorted(fields)}); choose another collection name"
            )
        self._dim = int(fields[_VECTOR]["params"]["dim"])
        self.attribute_names = tuple(n for n in fields if n not in (_KEY, _ITEM, _VECTOR))
        self.properties: dict[str, str] = dict(description.get("properties") or {})
        index_names = client.list_indexes(collection, field_name=_VECTOR)
        if not index_names:
            raise VectorDatabaseError(
                f"collection {collection!r} at {uri!r} has no index on its vectors; rebuild it with MilvusIndex.create"
            )
        self.index_type: str = client.describe_index(collection, index_names[0])["index_type"]
        self.search_params = _check_search_params(self.index_type, search_params) if search_params else {}

    @classmethod
    def create(
        cls,
        uri: str,
        dim: int,
        attribute_names: Sequence[str] = (),
        collection: str = DEFAULT_COLLECTION,
        overwrite: bool = False,
        index_type: str = "FLAT",
        timeout: float = 10.0,
        index_params: Mapping[str, int] | None = None,
        search_params: Mapping[str, int] | None = None,
        properties: Mapping[str, str] | None = None,
    ) -> MilvusIndex:
        """Create an empty collection of ``dim``-d vectors with one text field per attribute (``Strong`` consistency).

        Args:
            uri: Milvus Lite file (``catalogue.db``) or server address (``http://host:19530``).
            dim: vector dimension d.
            attribute_names: attributes stored beside each vector and usable in filters.
            collection: collection name.
            overwrite: drop an existing collection of that name first (else refuse).
            index_type: Milvus index on the vectors, a key of :data:`INDEX_TYPES` ("FLAT": exact; the others
                approximate).
            timeout: seconds to wait for a server.
            index_params: its build parameters, e.g. ``{"M": 16, "efConstruction": 200}`` for HNSW or
                ``{"nlist": 1024}`` for IVF (Milvus's defaults when omitted).
            search_params: its search parameter, e.g. ``{"ef": 64}`` (see :class:`MilvusIndex`).
            properties: text properties stored with the collection (:func:`milvus_retriever` records there what
                its vectors are).
        """
        from pymilvus import DataType
        from pymilvus.exceptions import MilvusException

        _check_search_params(index_type, search_params)

        for name in attribute_names:
            if not _NAME.match(name) or name in (_KEY, _ITEM, _VECTOR):
                raise ValueError(
                    f"attribute name {name!r} cannot be a field name (letters, digits, underscore; "
                    f"not {_KEY!r}, {_ITEM!r} or {_VECTOR!r})"
                )
        with _connection(uri, timeout) as client:
            if client.has_collection(collection):
                if not overwrite:
                    raise VectorDatabaseError(
                        f"collection {collection!r} already exists at {uri!r}; open it with "
                        "MilvusIndex.open, or pass overwrite=True to rebuild it"
                    )
                client.drop_collection(collection)
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field(_KEY, DataType.INT64, is_primary=True)
            schema.add_field(_ITEM, DataType.VARCHAR, max_length=_MAX_TEXT)
            for name in attribute_names:
                schema.add_field(name, DataType.VARCHAR, max_length=_MAX_TEXT)
            schema.add_field(_VECTOR, DataType.FLOAT_VECTOR, dim=int(dim))
            vector_index = client.prepare_index_params()
            vector_index.add_index(
                field_name=_VECTOR,
                index_type=index_type,
                metric_type="IP",
                params=dict(index_params or {}),
            )
            try:
                with _quiet("grpc._server"):  # Milvus Lite logs an unimplemented timestamp call here; pymilvus copes
                    client.create_collection(
                        collection,
                        schema=schema,
                        index_params=vector_index,
                        consistency_level="Strong",  # a count or search right after an insert sees it
                        properties=dict(properties or {}),
                    )
            except MilvusException as err:
                raise VectorDatabaseError(
                    f"Milvus at {uri!r} refused collection {collection!r} with index_type={index_type!r}, "
                    f"index_params={dict(index_params or {})}: {err.message}; fix those parameters (see Milvus's "
                    "index documentation)"
                ) from err
            return cls(client, collection, uri, search_params)

    @classmethod
    def open(
        cls,
        uri: str,
        collection: str = DEFAULT_COLLECTION,
        timeout: float = 10.0,
        search_params: Mapping[str, int] | None = None,
    ) -> MilvusIndex:
        """Reopen a collection written earlier (its vectors, item ids and attributes persist in the database).

        ``search_params`` is the search parameter of its index type (see :class:`MilvusIndex`).
        """
        with _connection(uri, timeout) as client, _database_errors(uri):
            if not client.has_collection(collection):
                raise VectorDatabaseError(
                    f"no collection {collection!r} at {uri!r} (it has {client.list_collections()}); "
                    "create it with MilvusIndex.create or milvus_retriever(..., rebuild=True)"
                )
            client.load_collection(collection)
            return cls(client, collection, uri, search_params)

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return self._dim

    @contextmanager
    def _engine(self) -> Iterator[None]:
        """Around every call into the engine after opening: a closed index is refused, saying how to open it again,
        and the engine's own errors (a server gone, a folder damaged under an open client) become a
        :class:`VectorDatabaseError` that names the database (:func:`_database_errors`)."""
        if self._closed:
            raise VectorDatabaseError(
                f"the MilvusIndex of collection {self.collection!r} at {self.uri!r} was closed; open it again with "
                f"MilvusIndex.open({self.uri!r}, collection={self.collection!r})"
            )
        with _database_errors(self.uri):
            yield

    def __len__(self) -> int:
        """Rows stored, counted by the engine (``count(*)``, strongly consistent: a server's collection statistics
        can still say 0 right after an insert)."""
        with self._engine():
            found = self.client.query(
                self.collection, filter="", output_fields=["count(*)"], consistency_level="Strong"
            )
        return int(found[0]["count(*)"])

    def __repr__(self) -> str:
        rows = "closed" if self._closed else f"n={len(self)}"
        return f"MilvusIndex(uri={self.uri!r}, collection={self.collection!r}, dim={self._dim}, {rows})"

    def add(
        self,
        vectors: np.ndarray | torch.Tensor,
        ids: np.ndarray | torch.Tensor | None = None,
        item_ids: Sequence[str] | None = None,
        attributes: Sequence[Mapping[str, str]] | None = None,
        batch_size: int = 5000,
        seal: bool = True,
    ) -> None:
        """Insert (n, d) vectors with their ids (default: positions after the current rows) and attributes.

        Args:
            vectors: (n, d) float, L2-normalised.
            ids: (n,) int64 primary keys returned by ``search``, none of them already stored.
            item_ids: (n,) catalogue item ids, stored for reloading (default: the ids as text).
            attributes: n dicts of attribute values; a missing value is stored as empty text (no filter on a
                real value matches it, as in the retriever's own filtering).
            batch_size: rows per insert call; the call ends by sealing what it inserted (``flush``), so add rows in
                a few large calls, not one by one.
            seal: ``False`` leaves the rows in a growing segment: searchable at once, but every count and search
                then takes the engine's slower path until a later ``add`` seals them (one seal for a stream of
                small batches; ``benchmarks/bench_milvus.py`` measures both paths).

        Raises:
            ValueError: an id given twice or already stored (Milvus keeps one row per primary key, so the other
                row would be lost without a word), an attribute the collection does not store, or an item id or
                attribute value longer than 1,024 bytes; every row is checked before the first insert, so a
                refused call writes nothing.
        """
        matrix = _as_matrix(vectors, self._dim, "vectors").to(torch.float32).numpy()
        n = matrix.shape[0]
        stored_rows = len(self)
        keys = _as_ids(ids, n, stored_rows)
        self._refuse_repeated_keys(keys, check_stored=stored_rows > 0)
        names = list(item_ids) if item_ids is not None else [str(k) for k in keys]
        values = list(attributes) if attributes is not None else [{}] * n
        if not (len(keys) == len(names) == len(values) == n):
            raise ValueError(f"{n} vectors but {len(keys)} ids, {len(names)} item ids, {len(values)} attribute rows")
        for position, (name, attrs) in enumerate(zip(names, values)):
            _check_row(position, name, attrs, self.attribute_names)
        with self._engine():
            for start in range(0, n, batch_size):
                # One batch of rows at a time: as Python lists, a float takes 32 bytes (the object and its pointer).
                batch = slice(start, start + batch_size)
                rows = [
                    {
                        _KEY: int(key),
                        _ITEM: name,
                        _VECTOR: vector.tolist(),
                        **{a: str(attrs.get(a, "")) for a in self.attribute_names},
                    }
                    for key, name, vector, attrs in zip(keys[batch], names[batch], matrix[batch], values[batch])
                ]
                self.client.insert(self.collection, rows)
            # Seal the new rows into a segment on disk. Until then Milvus holds them in a "growing" segment, which
            # every count and search scans by a slower path (benchmarks/bench_milvus.py: README › Scaling out).
            # One flush per call: many small adds would each seal a small segment.
            if seal:
                self.client.flush(self.collection)

    def _refuse_repeated_keys(self, keys: np.ndarray, check_stored: bool, page: int = 1000) -> None:
        """Refuse ids that repeat among ``keys`` or (``check_stored``) that the collection already holds."""
        values, counts = np.unique(keys, return_counts=True)
        repeated = values[counts > 1]
        if len(repeated):
            raise ValueError(
                f"{len(repeated)} id(s) given more than once, e.g. {repeated[:5].tolist()}; Milvus keeps one row per "
                "id, so give each vector its own id"
            )
        if not check_stored:
            return
        taken: list[int] = []
        with self._engine():
            for start in range(0, len(keys), page):
                found = self.client.query(
                    self.collection, filter=f"{_KEY} in {keys[start : start + page].tolist()}", output_fields=[_KEY]
                )
                taken += sorted(int(row[_KEY]) for row in found)
        if taken:
            raise ValueError(
                f"{len(taken)} id(s) already stored in collection {self.collection!r} at {self.uri!r}, e.g. "
                f"{taken[:5]}; Milvus would replace those rows. Give new ids, or rebuild the collection with "
                "MilvusIndex.create(..., overwrite=True)"
            )

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int, filters: Mapping[str, str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k highest inner products per query among the rows that match ``filters`` (evaluated by Milvus).

        Returns:
            scores (q, k) float32 descending, ids (q, k) int64; when fewer than k rows match, the missing slots
            hold id -1 and score -inf (as ``FaissIndex``).

        Raises:
            ValueError: k is not a whole number in [1, rows stored], the queries are not q >= 1 rows of d numbers,
                or a filter names an attribute the collection does not store.
        """
        # k is checked against the row count only where it can be wrong: a count is one more query into the engine
        # (benchmarks/bench_milvus.py times one beside a search).
        if not (is_whole_number(k) and k >= 1):
            _check_k(k, len(self))
        matrix = _as_matrix(queries, self._dim, "queries").to(torch.float32).numpy()
        _check_has_queries(matrix.shape[0])
        unknown = [name for name in (filters or {}) if name not in self.attribute_names]
        if unknown:
            raise ValueError(
                f"unknown attribute filter(s) {unknown}; the collection stores {list(self.attribute_names)}"
            )
        with self._engine():
            hits = self.client.search(
                self.collection,
                data=matrix.tolist(),
                limit=int(k),
                anns_field=_VECTOR,
                filter=filter_expression(filters) if filters else "",
                search_params={"metric_type": "IP", "params": self.search_params},
                output_fields=[_KEY],
            )
        if any(len(found) < k for found in hits):  # a filter matched fewer than k rows, or k exceeds the rows stored
            _check_k(k, len(self))
        scores = np.full((len(matrix), k), -np.inf, dtype=np.float32)
        ids = np.full((len(matrix), k), -1, dtype=np.int64)
        for row, found in enumerate(hits):
            for rank, hit in enumerate(found):
                scores[row, rank], ids[row, rank] = hit["distance"], hit["entity"][_KEY]
        return scores, ids

    def fetch(self, page: int = 1000) -> tuple[np.ndarray, list[str], torch.Tensor, list[dict]]:
        """Every stored row, sorted by id: ids (n,), item ids, vectors (n, d) float32, attribute dicts.

        Reads ids ``0 .. len - 1`` (what ``add`` assigns by default, and what :func:`milvus_retriever` stores) in
        pages of ``page`` rows with range filters, so no page exceeds Milvus's query size limit.
        """
        n, rows = len(self), []
        with self._engine():
            for start in range(0, n, page):
                rows += self.client.query(
                    self.collection,
                    filter=f"{_KEY} >= {start} and {_KEY} < {start + page}",
                    output_fields=[_KEY, _ITEM, _VECTOR, *self.attribute_names],
                )
        if len(rows) != n:
            raise VectorDatabaseError(
                f"collection {self.collection!r} holds {n} rows but only {len(rows)} have ids "
                f"in [0, {n}); fetch() reads rows keyed by position (add() without ids)"
            )
        rows.sort(key=lambda r: r[_KEY])
        vectors = torch.tensor(np.array([r[_VECTOR] for r in rows], dtype=np.float32).reshape(-1, self._dim))
        attributes = [{a: r[a] for a in self.attribute_names} for r in rows]
        return np.array([r[_KEY] for r in rows], dtype=np.int64), [r[_ITEM] for r in rows], vectors, attributes

    def close(self) -> None:
        """Release the connection; the last index of a Milvus Lite folder open in this process also stops its engine,
        so another process can open the folder. Closing twice does nothing, and any later search, insert or count
        says the index is closed."""
        if not self._closed:
            _disconnect(self.client, self.uri)
            self._closed = True


def _stored_embeddings(index: MilvusIndex, bundle, catalogue, image_embeddings, index_type: str) -> torch.Tensor:
    """The ``(n, d)`` embeddings of a reopened collection, after checking they are what ``milvus_retriever`` was asked
    for: every row of ``catalogue``, unchanged since written, encoded by ``bundle``'s weights (and equal to
    ``image_embeddings`` when given), under an ``index_type`` index. Anything else raises, naming the difference."""
    where = f"collection {index.collection!r} at {index.uri!r}"
    record = index.properties
    if any(key not in record for key in _RECORD):
        raise VectorDatabaseError(
            f"{where} holds no record of which model encoded its vectors (it was not written by milvus_retriever, "
            "or by an older version); pass rebuild=True to rewrite it"
        )
    rows, expected = len(index), int(record["course_utils.rows"])
    if rows != expected:
        raise VectorDatabaseError(
            f"{where} holds {rows} of the {expected} rows its build began to write: that build was interrupted; "
            "pass rebuild=True"
        )
    if index.index_type != index_type:
        raise VectorDatabaseError(
            f"{where} has a {index.index_type} index, not the {index_type} asked for; pass rebuild=True to rebuild "
            f"it with index_type={index_type!r}"
        )
    _, item_ids, vectors, _ = index.fetch()
    if item_ids != catalogue.ids:
        raise VectorDatabaseError(
            f"{where} holds {len(item_ids)} other items than catalogue {catalogue.name!r} ({len(catalogue)} items); "
            "pass rebuild=True"
        )
    stored = (record["course_utils.model"], record["course_utils.weights_digest"])
    current = (bundle.identity, weights_digest(bundle.model))
    if stored != current:
        raise VectorDatabaseError(
            f"{where} holds embeddings of model {stored[0]!r} with weights {stored[1]}, but the bundle is "
            f"{current[0]!r} with weights {current[1]} (fine-tuned since?): its queries would be ranked against "
            "another model's gallery vectors; pass rebuild=True to re-embed the catalogue"
        )
    digest = _embeddings_digest(vectors)
    if digest != record["course_utils.embeddings_sha256"]:
        raise VectorDatabaseError(
            f"{where}: the stored vectors differ from the SHA-256 recorded when they were written (changed or "
            "damaged since); pass rebuild=True"
        )
    if image_embeddings is not None and _embeddings_digest(image_embeddings) != digest:
        raise VectorDatabaseError(
            f"{where} holds other embeddings than the image_embeddings given; pass rebuild=True to store these"
        )
    return vectors


def milvus_retriever(
    bundle,
    catalogue,
    uri: str,
    collection: str = DEFAULT_COLLECTION,
    image_embeddings: torch.Tensor | None = None,
    rebuild: bool = False,
    index_type: str = "FLAT",
    index_params: Mapping[str, int] | None = None,
    search_params: Mapping[str, int] | None = None,
    **retriever_options,
):
    """A :class:`~course_utils.retriever.FashionRetriever` searching a Milvus collection of ``catalogue``.

    The first call writes the catalogue's embeddings, item ids and attributes into ``collection`` at ``uri`` and
    records beside them the model and weights digest of ``bundle`` and a SHA-256 of the vectors. Later calls reopen
    it and read the embeddings back instead of encoding the images again, after checking that record: a collection
    written by other weights (e.g. before fine-tuning), holding other embeddings, another catalogue or index type,
    or only part of its rows is refused with a message saying so, never searched.

    Args:
        bundle: the CLIP bundle (encodes the queries).
        catalogue: the gallery; must be the one stored (same item ids in the same order) when reopening.
        uri: Milvus Lite file (``outputs/catalogue.db``) or server address (``http://host:19530``).
        collection: collection name.
        image_embeddings: ``(len(catalogue), d)`` gallery embeddings to store (else encoded, cached); when
            reopening, they must equal the stored ones.
        rebuild: drop and rewrite an existing collection.
        index_type: Milvus index on the vectors, a key of :data:`INDEX_TYPES`; a reopened collection must have it.
        index_params: its build parameters (see :meth:`MilvusIndex.create`).
        search_params: its search parameter, e.g. ``{"ef": 64}`` for HNSW, ``{"nprobe": 16}`` for IVF.
        **retriever_options: passed to ``FashionRetriever`` (e.g. ``caption_style``).

    Raises:
        VectorDatabaseError: the stored collection is not what was asked for; the message says how it differs.
    """
    _check_search_params(index_type, search_params)
    client = _client(uri, 10.0)
    try:
        with _database_errors(uri):
            exists = client.has_collection(collection)
        reopen = exists and not rebuild
        if reopen:
            index = MilvusIndex.open(uri, collection)
        else:
            embeddings = (
                image_embeddings if image_embeddings is not None else encode_images(bundle, catalogue, progress=False)
            )
            record = dict(
                zip(
                    _RECORD,
                    [
                        bundle.identity,
                        weights_digest(bundle.model),
                        _embeddings_digest(embeddings),
                        str(len(embeddings)),
                    ],
                )
            )
            index = MilvusIndex.create(
                uri,
                embeddings.shape[1],
                catalogue.attribute_names,
                collection,
                overwrite=rebuild,
                index_type=index_type,
                index_params=index_params,
                search_params=search_params,
                properties=record,
            )
    finally:
        _disconnect(client, uri)  # once the index has its own client, so Milvus Lite's engine keeps running for it
    try:
        if reopen:
            with _database_errors(uri):
                embeddings = _stored_embeddings(index, bundle, catalogue, image_embeddings, index_type)
            index.search_params = dict(search_params or {})  # valid: the stored index is of index_type
        else:
            index.add(embeddings, item_ids=catalogue.ids, attributes=[dict(item.attributes) for item in catalogue])
        return FashionRetriever(bundle, catalogue, index=index, image_embeddings=embeddings, **retriever_options)
    except BaseException:
        index.close()  # release the database (Milvus Lite's file lock) before reporting
        raise
