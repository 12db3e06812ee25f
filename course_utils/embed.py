"""Batched, cached embeddings of catalogue images and texts (every notebook).

``encode_images`` / ``encode_texts`` run the model under ``torch.inference_mode`` in batches from a
DataLoader, L2-normalise, and cache the result on disk keyed by the model identity, a digest of the
model's current weights, and a fingerprint of the items — so a fine-tuned model or changed data never
reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .cache import torch_save_atomic
from .data.adapters import ImageTextDataset, collate_skipping_unreadable
from .data.records import Catalogue, CorruptImage
from .paths import cache_dir

EMBED_CODE_VERSION = 1


def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of every parameter and buffer; changes whenever the weights do."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_path(kind: str, bundle, payload: str, folder: str = "embeddings", version: int = EMBED_CODE_VERSION) -> Path:
    """``data/cache/<folder>/<kind>-<key>.pt``, the key hashing ``version``, the model identity, its weights and ``payload``."""
    key = hashlib.sha256(
        json.dumps([version, kind, bundle.identity, weights_digest(bundle.model), payload]).encode()
    ).hexdigest()[:24]
    return cache_dir() / folder / f"{kind}-{key}.pt"


def cached(path: Callable[[], Path], use_cache: bool, compute: Callable[[], object]) -> object:
    """``compute()`` (tensors, or a dict of them), through the disk cache at ``path()`` when ``use_cache``.

    ``path`` is a callable because the key hashes the weights, which is costly: it is skipped without the cache.
    """
    if not use_cache:
        return compute()
    path = path()
    if path.exists():
        return torch.load(path, weights_only=True)
    embeddings = compute()
    torch_save_atomic(embeddings, path)
    return embeddings


def encode_images(bundle, catalogue: Catalogue, batch_size: int = 256, num_workers: int = 0, use_cache: bool = True,
                  progress: bool = True) -> torch.Tensor:
    """Embed every item image of ``catalogue``.

    Args:
        bundle: a :class:`~course_utils.models.ClipBundle`.
        catalogue: items to embed; row i of the result is ``catalogue[i]``.
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding images (use 2+ for JPEG datasets).
        use_cache: read/write ``data/cache/embeddings/``.
        progress: show a tqdm bar.

    Returns:
        ``(len(catalogue), embed_dim) float32`` on the CPU, L2-normalised.

    Raises:
        CorruptImage: some images could not be read; the message lists them. Call
            ``catalogue.drop_unreadable_images()`` first (it counts what it drops).
    """
    def compute() -> torch.Tensor:
        loader = DataLoader(ImageTextDataset(catalogue, bundle.preprocess), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=collate_skipping_unreadable)
        chunks, skipped = [], []
        with torch.inference_mode():
            for batch in tqdm(loader, desc="encoding images", disable=not progress, leave=False):
                skipped += batch["skipped"]
                if "image" in batch:
                    chunks.append(bundle.encode_images(batch["image"]).cpu())
        if skipped:
            raise CorruptImage(
                f"{len(skipped)} images could not be read (e.g. {skipped[:5]}); "
                "call catalogue.drop_unreadable_images() before encoding — it removes and counts them"
            )
        return torch.cat(chunks)

    return cached(lambda: cache_path("images", bundle, catalogue.fingerprint()), use_cache, compute)


def encode_texts(bundle, texts: Sequence[str], batch_size: int = 512, use_cache: bool = True,
                 progress: bool = True) -> torch.Tensor:
    """Embed captions or queries.

    Returns:
        ``(len(texts), embed_dim) float32`` on the CPU, L2-normalised.
    """
    texts = list(texts)
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValueError("texts must be non-empty strings; got an empty or non-string entry")
    def compute() -> torch.Tensor:
        chunks = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), desc="encoding texts", disable=not progress, leave=False):
                chunks.append(bundle.encode_texts(texts[start : start + batch_size]).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, bundle.embed_dim)

    texts_key = lambda: cache_path("texts", bundle, hashlib.sha256(json.dumps(texts).encode()).hexdigest())
    return cached(texts_key, use_cache, compute)


def caption_texts(catalogue: Catalogue, style: str | None = None) -> list[str]:
    """One caption per item (the first of ``style``), aligned with ``encode_images(catalogue)``."""
    return [item.caption(style) for item in catalogue]
