"""A vector database as the retriever's index: Milvus through ``pymilvus``, with attribute filters run inside it
(notebook 08).

Notebook 07's indexes live in the Python process and filter by scoring the whole gallery in numpy. A vector
database keeps vectors *and* attributes, persists them, and evaluates ``baseColour == "Red"`` inside the engine
while it searches, so only matching items are ranked and nothing but the top k comes back. The same client code
talks to Milvus Lite (an embedded engine storing one local ``.db`` file: the default here) or to a Milvus server
or cluster (``uri="http://host:19530"``).

``MilvusIndex`` has the API of ``course_utils.index`` (``add``, ``search``, ``len``, ``dim``) plus ``filters`` in
``search``; :func:`milvus_retriever` builds (or reopens) a collection for a catalogue and hands it to
:class:`~course_utils.retriever.FashionRetriever`. The primary key of a row is the item's row in the catalogue.
The collection uses Milvus's ``FLAT`` index (exact inner product); on millions of rows choose ``HNSW`` or
``IVF_*`` with ``index_type=``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from .embed import encode_images
from .index import _as_matrix, _check_k
from .retriever import FashionRetriever

DEFAULT_COLLECTION = "fashion"
_KEY, _ITEM, _VECTOR = "row", "item_id", "embedding"  # reserved field names
_MAX_TEXT = 1024  # bytes per attribute value (VARCHAR max_length)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class VectorDatabaseError(RuntimeError):
    """The database cannot be reached or does not hold what was asked for; the message says what to do."""


def _client(uri: str, timeout: float):
    """A connected ``MilvusClient``; a bad URI or an unreachable server raises a :class:`VectorDatabaseError`."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        return MilvusClient(uri=uri, timeout=timeout)
    except MilvusException as err:
        raise VectorDatabaseError(
            f"cannot open the vector database at uri={uri!r}: {err.message}. Use a local file path ending in .db "
            "(Milvus Lite; its folder must exist) or the address of a running Milvus server, e.g. "
            "http://127.0.0.1:19530"
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


def filter_expression(filters: Mapping[str, str]) -> str:
    """``{"colour": "red", "sleeve": "long"}`` -> ``colour == "red" and sleeve == "long"`` (Milvus boolean syntax).

    Values are quoted with JSON escaping, so a value holding quotes cannot change the expression.
    """
    for name, value in filters.items():
        if not _NAME.match(name):
            raise ValueError(f"attribute name {name!r} is not a valid field name (letters, digits, underscore)")
        if not isinstance(value, str):
            raise ValueError(f"filter {name}={value!r}: attribute values are strings")
    return " and ".join(f"{name} == {json.dumps(value)}" for name, value in filters.items())


class MilvusIndex:
    """Inner-product search in a Milvus collection, with attribute filters evaluated by the engine.

    Use :meth:`create` for a new collection and :meth:`open` for an existing one.

    Args:
        client: a connected ``pymilvus.MilvusClient``.
        collection: collection name.
        uri: where the client points (kept for messages and ``repr``).
    """

    supports_filters = True  # FashionRetriever passes filters to search() instead of filtering in numpy

    def __init__(self, client, collection: str, uri: str) -> None:
        self.client, self.collection, self.uri = client, collection, uri
        fields = {f["name"]: f for f in client.describe_collection(collection)["fields"]}
        if _VECTOR not in fields or _KEY not in fields:
            raise VectorDatabaseError(
                f"collection {collection!r} at {uri!r} was not written by MilvusIndex "
                f"(fields {sorted(fields)}); choose another collection name"
            )
        self._dim = int(fields[_VECTOR]["params"]["dim"])
        self.attribute_names = tuple(n for n in fields if n not in (_KEY, _ITEM, _VECTOR))

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
    ) -> MilvusIndex:
        """Create an empty collection of ``dim``-d vectors with one text field per attribute.

        Args:
            uri: Milvus Lite file (``catalogue.db``) or server address (``http://host:19530``).
            dim: vector dimension d.
            attribute_names: attributes stored beside each vector and usable in filters.
            collection: collection name.
            overwrite: drop an existing collection of that name first (else refuse).
            index_type: Milvus index on the vectors ("FLAT": exact; "HNSW", "IVF_FLAT": approximate).
            timeout: seconds to wait for a server.
        """
        from pymilvus import DataType

        for name in attribute_names:
            if not _NAME.match(name) or name in (_KEY, _ITEM, _VECTOR):
                raise ValueError(
                    f"attribute name {name!r} cannot be a field name (letters, digits, underscore; "
                    f"not {_KEY!r}, {_ITEM!r} or {_VECTOR!r})"
                )
        client = _client(uri, timeout)
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
        index_params = client.prepare_index_params()
        index_params.add_index(field_name=_VECTOR, index_type=index_type, metric_type="IP")
        with _quiet("grpc._server"):  # Milvus Lite logs an unimplemented timestamp call here; pymilvus copes
            client.create_collection(collection, schema=schema, index_params=index_params)
        return cls(client, collection, uri)

    @classmethod
    def open(cls, uri: str, collection: str = DEFAULT_COLLECTION, timeout: float = 10.0) -> MilvusIndex:
        """Reopen a collection written earlier (its vectors, item ids and attributes persist in the database)."""
        client = _client(uri, timeout)
        if not client.has_collection(collection):
            raise VectorDatabaseError(
                f"no collection {collection!r} at {uri!r} (it has {client.list_collections()}); "
                "create it with MilvusIndex.create or milvus_retriever(..., rebuild=True)"
            )
        client.load_collection(collection)
        return cls(client, collection, uri)

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return self._dim

    def __len__(self) -> int:
        return int(self.client.get_collection_stats(self.collection)["row_count"])

    def __repr__(self) -> str:
        return f"MilvusIndex(uri={self.uri!r}, collection={self.collection!r}, dim={self._dim}, n={len(self)})"

    def add(
        self,
        vectors: np.ndarray | torch.Tensor,
        ids: np.ndarray | torch.Tensor | None = None,
        item_ids: Sequence[str] | None = None,
        attributes: Sequence[Mapping[str, str]] | None = None,
        batch_size: int = 5000,
    ) -> None:
        """Insert (n, d) vectors with their ids (default: positions after the current rows) and attributes.

        Args:
            vectors: (n, d) float, L2-normalised.
            ids: (n,) int64 primary keys returned by ``search``.
            item_ids: (n,) catalogue item ids, stored for reloading (default: the ids as text).
            attributes: n dicts of attribute values; a missing value is stored as empty text (no filter on a
                real value matches it, as in the retriever's own filtering).
            batch_size: rows per insert call.
        """
        matrix = _as_matrix(vectors, self._dim, "vectors").to(torch.float32).numpy()
        n = matrix.shape[0]
        keys = np.arange(len(self), len(self) + n) if ids is None else np.asarray(ids, dtype=np.int64)
        names = list(item_ids) if item_ids is not None else [str(k) for k in keys]
        values = list(attributes) if attributes is not None else [{}] * n
        if not (len(keys) == len(names) == len(values) == n):
            raise ValueError(f"{n} vectors but {len(keys)} ids, {len(names)} item ids, {len(values)} attribute rows")
        rows = []
        for key, name, vector, attrs in zip(keys, names, matrix, values):
            rows.append(
                {
                    _KEY: int(key),
                    _ITEM: name,
                    _VECTOR: vector.tolist(),
                    **{a: str(attrs.get(a, "")) for a in self.attribute_names},
                }
            )
        for start in range(0, n, batch_size):
            self.client.insert(self.collection, rows[start : start + batch_size])

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int, filters: Mapping[str, str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k highest inner products per query among the rows that match ``filters`` (evaluated by Milvus).

        Returns:
            scores (q, k) float32 descending, ids (q, k) int64; when fewer than k rows match, the missing slots
            hold id -1 and score -inf (as ``FaissIndex``).
        """
        _check_k(k, len(self))
        matrix = _as_matrix(queries, self._dim, "queries").to(torch.float32).numpy()
        unknown = [name for name in (filters or {}) if name not in self.attribute_names]
        if unknown:
            raise ValueError(
                f"unknown attribute filter(s) {unknown}; the collection stores {list(self.attribute_names)}"
            )
        hits = self.client.search(
            self.collection,
            data=matrix.tolist(),
            limit=k,
            anns_field=_VECTOR,
            filter=filter_expression(filters) if filters else "",
            search_params={"metric_type": "IP"},
            output_fields=[_KEY],
        )
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
        """Release the connection (Milvus Lite then lets go of the ``.db`` file)."""
        self.client.close()


def milvus_retriever(
    bundle,
    catalogue,
    uri: str,
    collection: str = DEFAULT_COLLECTION,
    image_embeddings: torch.Tensor | None = None,
    rebuild: bool = False,
    **retriever_options,
):
    """A :class:`~course_utils.retriever.FashionRetriever` searching a Milvus collection of ``catalogue``.

    The first call writes the catalogue's embeddings, item ids and attributes into ``collection`` at ``uri``; later
    calls reopen it and read the embeddings back instead of encoding the images again.

    Args:
        bundle: the CLIP bundle (encodes the queries).
        catalogue: the gallery; must be the one stored (same item ids in the same order) when reopening.
        uri: Milvus Lite file (``outputs/catalogue.db``) or server address (``http://host:19530``).
        collection: collection name.
        image_embeddings: ``(len(catalogue), d)`` gallery embeddings to store (else encoded, cached).
        rebuild: drop and rewrite an existing collection.
        **retriever_options: passed to ``FashionRetriever`` (e.g. ``caption_style``).
    """
    client = _client(uri, 10.0)
    exists = client.has_collection(collection)
    client.close()
    if exists and not rebuild:
        index = MilvusIndex.open(uri, collection)
        _, item_ids, vectors, _ = index.fetch()
        if item_ids != catalogue.ids:
            raise VectorDatabaseError(
                f"collection {collection!r} at {uri!r} holds {len(item_ids)} other items than "
                f"catalogue {catalogue.name!r} ({len(catalogue)} items); pass rebuild=True"
            )
        return FashionRetriever(bundle, catalogue, index=index, image_embeddings=vectors, **retriever_options)
    embeddings = image_embeddings if image_embeddings is not None else encode_images(bundle, catalogue, progress=False)
    index = MilvusIndex.create(uri, embeddings.shape[1], catalogue.attribute_names, collection, overwrite=rebuild)
    index.add(embeddings, item_ids=catalogue.ids, attributes=[dict(item.attributes) for item in catalogue])
    return FashionRetriever(bundle, catalogue, index=index, image_embeddings=embeddings, **retriever_options)
