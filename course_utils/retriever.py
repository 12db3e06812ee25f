"""``FashionRetriever``: text / image / batch / conditional / composed search over cached embeddings.

The API of seeds 001 and 003 (``search_by_text``, ``search_by_image``, ``batch_search``) plus attribute
filters (``baseColour="Red"``), hybrid scoring (a bonus for matching attributes), an exact or FAISS index,
and three hooks later notebooks fill in: a re-ranker of text results (notebook 03), a conditional encoder
(notebook 05) and a compositor (notebook 06).
Results are pandas DataFrames with rank, item id, score, caption, image path and attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .checks import is_whole_number
from .data.records import Catalogue, CorruptImage, FileImage, opaque_rgb
from .embed import encode_images, encode_texts
from .index import IVF_KINDS, build_index, require_finite

# (query texts, candidate gallery rows (q, k), their cosines (q, k)) -> final scores (q, k), higher is better.
Reranker = Callable[[Sequence[str], torch.Tensor, torch.Tensor], torch.Tensor]
# (query image embeddings (q, d), condition) -> conditional query embeddings; gallery is embedded likewise.
ConditionalEncoder = Callable[[torch.Tensor, str], torch.Tensor]
# (reference image embeddings (q, d), modification text embeddings (q, d)) -> composed query embeddings (q, d).
Compositor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOG = logging.getLogger(__name__)


def _describe(value: object) -> str:
    """``"int 123"``, ``"NoneType None"``: what a caller passed, for type errors."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _query_list(queries: Sequence[str]) -> list:
    """``queries`` as a list; a single string or a non-iterable is refused with a hint."""
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Iterable):
        hint = "; use search_by_text for one query" if isinstance(queries, str) else ""
        raise TypeError(f"queries must be a list of strings, got {_describe(queries)}{hint}")
    return list(queries)


def _check_text_queries(texts: Sequence[str], name: str) -> None:
    """Every query must be a non-empty string: ``TypeError`` saying what was given, ``ValueError`` for blanks."""
    if not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {_describe(texts)}")
    if len(texts) == 0:
        raise ValueError(f"empty text query: {name} holds no query; type a description such as 'red striped shirt'")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text query {position} must be a string such as 'red dress', got {_describe(text)}")
        if not text.strip():
            raise ValueError(f"empty text query {position}: type a description such as 'red striped shirt'")


def _run_hook(hook: Callable[..., torch.Tensor], *inputs) -> torch.Tensor:
    """``hook(*inputs)`` for a query: a module is put in eval mode (a learned encoder or compositor may use dropout
    or batch norm), and no autograd graph is kept, so the result can be read as numpy."""
    if isinstance(hook, torch.nn.Module):
        hook.eval()
    with torch.inference_mode():
        return hook(*inputs)


class FashionRetriever:
    """Search a catalogue by text, by image, under a condition, or by image + modification text.

    Args:
        bundle: a :class:`~course_utils.models.ClipBundle`.
        catalogue: the gallery (e.g. the test split).
        index: ``"exact"``, ``"exact-fp16"``, ``"flat"``, ``"ivf"``, ``"ivfpq"`` (>= 256 items) or ``"hnsw"`` (see
            ``course_utils.index``; the IVF kinds default to ``nlist = len(catalogue) // 39``, at most 1024), or
            an index object already holding the gallery in catalogue order, e.g. a
            :class:`~course_utils.vector_db.MilvusIndex` (notebook 08); one with ``supports_filters`` receives the
            attribute filters and evaluates them itself.
        image_embeddings: precomputed ``(len(catalogue), d)`` gallery embeddings (else encoded, cached); any float
            dtype, kept as float32, the precision queries are scored in (float16 converts exactly).
        caption_style: which caption to show in results.
        **index_options: passed to :func:`course_utils.index.build_index` when ``index`` is a name; an index object
            is already built, so options given with one are refused (pass them to whatever built it, e.g.
            ``milvus_retriever(..., index_type="HNSW")``).
    """

    def __init__(
        self,
        bundle,
        catalogue: Catalogue,
        index="exact",
        image_embeddings: torch.Tensor | None = None,
        caption_style: str | None = None,
        **index_options,
    ) -> None:
        if len(catalogue) == 0:
            raise ValueError("the gallery catalogue is empty")
        self.bundle, self.catalogue, self.caption_style = bundle, catalogue, caption_style
        self.embeddings = (
            image_embeddings if image_embeddings is not None else encode_images(bundle, catalogue, progress=False)
        ).float()  # (n, d) float32: filtered, boosted and exclusion searches score float32 queries against it
        if self.embeddings.shape[0] != len(catalogue):
            raise ValueError(f"{self.embeddings.shape[0]} embeddings for {len(catalogue)} gallery items")
        require_finite(self.embeddings, "image_embeddings", catalogue.ids)
        if not isinstance(index, str):
            if index_options:
                raise ValueError(
                    f"index options {sorted(index_options)} apply only when index is a name such as 'ivf'; the "
                    f"{type(index).__name__} given is already built: pass them to whatever built it"
                )
            if len(index) != len(catalogue):
                raise ValueError(f"the given index holds {len(index)} vectors for {len(catalogue)} gallery items")
            self.index = index
        else:
            if index in IVF_KINDS:
                index_options.setdefault("nlist", max(1, min(1024, len(catalogue) // 39)))
            self.index = build_index(index, self.embeddings.shape[1], **index_options)
            self.index.add(self.embeddings)
        self.reranker: Reranker | None = None
        self.rerank_k = 20  # candidates the re-ranker reorders per text query
        self.conditional_encoder: ConditionalEncoder | None = None
        self.compositor: Compositor | None = None
        self._attributes = catalogue.to_frame()

    def _gallery_position(self, image) -> int | None:
        """Row of ``image`` in the gallery when it is a gallery item id, else ``None``."""
        return self.catalogue.position(image) if isinstance(image, str) and self.catalogue.has_id(image) else None

    # --- queries -> embeddings ---------------------------------------------------------------------------------

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``(q, d)`` embeddings of text queries; empty or non-string queries are refused with a clear error."""
        if isinstance(texts, str):
            texts = [texts]
        _check_text_queries(texts, "texts")
        cut = [text for text, at_limit in zip(texts, self.bundle.texts_at_context_limit(texts)) if at_limit]
        if cut:
            LOG.warning(
                "%d of %d text queries fill the model's context of %d tokens; words past it are not read (first: %r)",
                len(cut),
                len(texts),
                self.bundle.context_length,
                cut[0][:80],
            )
        return encode_texts(self.bundle, list(texts), use_cache=False, progress=False)

    def embed_image(self, image: str | Path | Image.Image) -> torch.Tensor:
        """``(1, d)`` embedding of a gallery item id, an image file path or a PIL image."""
        position = self._gallery_position(image)
        if position is not None:
            return self.embeddings[position][None]
        if isinstance(image, (str, Path)):
            path = Path(image).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"no image file at {path} (and no gallery item has that id)")
            image = FileImage(path).load()
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected an item id, a path or a PIL image, got {type(image).__name__}")
        with torch.inference_mode():
            return self.bundle.encode_images(self.bundle.preprocess(opaque_rgb(image))[None]).cpu()

    # --- search ----------------------------------------------------------------------------------------------

    def _check_k(self, top_k: int) -> None:
        if not is_whole_number(top_k, minimum=1):
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if top_k > len(self.catalogue):
            raise ValueError(f"top_k={top_k} is larger than the gallery ({len(self.catalogue)} items)")

    def _allowed(self, filters: dict[str, str]) -> np.ndarray | None:
        if not filters:
            return None
        unknown = [k for k in filters if k not in self._attributes.columns]
        if unknown:
            raise ValueError(
                f"unknown attribute filter(s) {unknown}; this catalogue has {list(self.catalogue.attribute_names)}"
            )
        mask = np.ones(len(self.catalogue), bool)
        for key, value in filters.items():
            mask &= (self._attributes[key] == value).to_numpy()
        return mask

    def _rank(
        self,
        queries: torch.Tensor,
        top_k: int,
        filters: dict,
        boost: dict | None = None,
        boost_weight: float = 0.1,
        exclude: Sequence[int | None] | None = None,
    ) -> list[pd.DataFrame]:
        self._check_k(top_k)
        require_finite(queries, "query embedding")
        allowed = self._allowed(filters)
        if allowed is not None and not allowed.any():
            raise ValueError(f"no gallery item matches the filters {filters}")
        # The index ranks when nothing else changes the scores: without filters, or with filters its engine applies.
        if not boost and exclude is None and (allowed is None or getattr(self.index, "supports_filters", False)):
            scores, positions = self.index.search(queries, top_k, **({} if allowed is None else {"filters": filters}))
            # An approximate index may find fewer than top_k items (FAISS fills the missing slots with position -1):
            # those slots are dropped, never read as the gallery's last item.
            return [self._frame(p[p >= 0], s[p >= 0]) for s, p in zip(scores, positions)]
        # Filters, hybrid scores and exclusions are applied to exact scores over the whole gallery.
        similarity = (queries @ self.embeddings.T).numpy().astype(np.float64)
        if boost:
            similarity += boost_weight * self._boost(boost)[None]
        if allowed is not None:
            similarity[:, ~allowed] = -np.inf
        for row, position in enumerate(exclude or []):
            if position is not None:
                similarity[row, position] = -np.inf
        frames = []
        for row in similarity:
            k = min(top_k, int(np.isfinite(row).sum()))
            top = np.argsort(-row, kind="stable")[:k]
            frames.append(self._frame(top, row[top]))
        return frames

    def _boost(self, boost: dict[str, str]) -> np.ndarray:
        """Number of ``boost`` attributes each gallery item matches (hybrid scoring)."""
        unknown = [k for k in boost if k not in self._attributes.columns]
        if unknown:
            raise ValueError(f"unknown attribute(s) to boost {unknown}")
        return sum((self._attributes[k] == v).to_numpy(np.float64) for k, v in boost.items())

    def _frame(self, positions: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        rows = []
        for rank, (position, score) in enumerate(zip(positions, scores), start=1):
            item = self.catalogue[int(position)]
            rows.append(
                {
                    "rank": rank,
                    "item_id": item.item_id,
                    "score": float(score),
                    "caption": item.caption(self.caption_style) if item.captions else "",
                    "image_path": str(item.image_path) if item.image_path else None,
                    **dict(item.attributes),
                }
            )
        return pd.DataFrame(rows)

    def _rank_texts(
        self,
        texts: Sequence[str],
        top_k: int,
        filters: dict,
        boost: dict | None = None,
        boost_weight: float = 0.1,
        rerank: bool = True,
    ) -> list[pd.DataFrame]:
        """Text queries ranked by the index; with a :attr:`reranker`, its top-``rerank_k`` reordered by it."""
        if self.reranker is None or not rerank:
            return self._rank(self.embed_text(texts), top_k, filters, boost, boost_weight)
        self._check_k(top_k)
        depth = min(max(top_k, self.rerank_k), len(self.catalogue))
        frames = []
        for text, first in zip(texts, self._rank(self.embed_text(texts), depth, filters, boost, boost_weight)):
            rows = torch.tensor([self.catalogue.position(item_id) for item_id in first["item_id"]])
            cosines = torch.tensor(first["score"].to_numpy(), dtype=torch.float32)
            scores = self.reranker([text], rows[None], cosines[None])[0]
            order = torch.sort(scores, descending=True, stable=True).indices[:top_k]
            frames.append(self._frame(rows[order].numpy(), scores[order].numpy()))
        return frames

    def search_by_text(
        self,
        query: str,
        top_k: int = 5,
        boost: dict | None = None,
        boost_weight: float = 0.1,
        rerank: bool = True,
        **filters: str,
    ) -> pd.DataFrame:
        """Items whose images best match ``query``.

        Args:
            query: free text, e.g. ``"men's casual jacket"``.
            top_k: number of results.
            boost: hybrid scoring — attributes whose match adds ``boost_weight`` to the cosine score,
                e.g. ``{"colour": "red"}``.
            rerank: let the :attr:`reranker` (when set) reorder the top :attr:`rerank_k`; scores are then its scores.
            **filters: keep only items with these attribute values, e.g. ``baseColour="Red"``.
        """
        if not isinstance(query, str):
            hint = "; use batch_search for several queries" if isinstance(query, (list, tuple)) else ""
            raise TypeError(f"query must be a string such as 'red dress', got {_describe(query)}{hint}")
        return self._rank_texts([query], top_k, filters, boost, boost_weight, rerank)[0]

    def search_by_image(
        self, image: str | Path | Image.Image, top_k: int = 5, exclude_self: bool = True, **filters: str
    ) -> pd.DataFrame:
        """Items that look like ``image`` (a gallery item id, a file path or a PIL image)."""
        query = self.embed_image(image)
        own = self._gallery_position(image) if exclude_self else None
        return self._rank(query, top_k, filters, exclude=[own] if own is not None else None)[0]

    def search_by_texts(
        self, queries: Sequence[str], top_k: int = 5, rerank: bool = True, **filters: str
    ) -> list[pd.DataFrame]:
        """Many text queries in one batched pass (one forward of the text tower): a result frame per query, in order.

        Each frame is what :meth:`search_by_text` returns for that query (the classroom server batches the text
        queries that arrive together this way)."""
        return self._rank_texts(_query_list(queries), top_k, filters, rerank=rerank)

    def batch_search(self, queries: Sequence[str], top_k: int = 5, rerank: bool = True, **filters: str) -> pd.DataFrame:
        """Many text queries in one batched pass; one DataFrame with a ``query`` column."""
        queries = _query_list(queries)
        frames = self.search_by_texts(queries, top_k, rerank, **filters)
        return pd.concat([f.assign(query=q) for q, f in zip(queries, frames)], ignore_index=True)

    def search_conditional(self, image: str | Path | Image.Image, condition: str, top_k: int = 5) -> pd.DataFrame:
        """Items similar to ``image`` *with respect to* ``condition`` (e.g. colour), via the notebook-05 hook."""
        if self.conditional_encoder is None:
            raise RuntimeError(
                "no conditional encoder set: assign retriever.conditional_encoder (notebook 05 builds one)"
            )
        self._check_k(top_k)
        query = _run_hook(self.conditional_encoder, self.embed_image(image), condition)
        gallery = _run_hook(self.conditional_encoder, self.embeddings, condition)
        require_finite(query, "conditional query embedding")
        require_finite(gallery, "conditional gallery embeddings", self.catalogue.ids)
        own = self._gallery_position(image)
        similarity = (query @ gallery.T).double().numpy()[0]
        if own is not None:
            similarity[own] = -np.inf
        top = np.argsort(-similarity, kind="stable")[: min(top_k, int(np.isfinite(similarity).sum()))]
        return self._frame(top, similarity[top])

    def search_composed(self, image: str | Path | Image.Image, modification: str, top_k: int = 5) -> pd.DataFrame:
        """Items that look like ``image`` changed as ``modification`` says, via the notebook-06 compositor hook."""
        if self.compositor is None:
            raise RuntimeError("no compositor set: assign retriever.compositor (notebook 06 trains one)")
        query = _run_hook(self.compositor, self.embed_image(image), self.embed_text([modification]))
        query = torch.nn.functional.normalize(query.float(), dim=-1)
        return self._rank(query, top_k, {}, exclude=[self._gallery_position(image)])[0]

    def thumbnail(self, item_id: str) -> Image.Image:
        """The image of a gallery item (for result grids and widgets)."""
        try:
            return self.catalogue.by_id(item_id).image
        except (CorruptImage, FileNotFoundError) as err:
            raise CorruptImage(f"cannot show item {item_id}: {err}") from err
