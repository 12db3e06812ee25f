"""Batched, cached features of catalogue images and texts: pooled embeddings and token features (every notebook).

One image loop (:func:`encode_image_batches`) and one text loop (:func:`encode_text_batches`) run a frozen model
under ``torch.inference_mode``; :func:`encode_images` / :func:`encode_texts` return the L2-normalised pooled
embeddings, :func:`encode_image_tokens` / :func:`encode_text_tokens` / :func:`patch_tokens` the token-level
features of notebooks 03 and 05. Every result but :func:`patch_tokens` (computed afresh on each call) is cached
through ``course_utils.cache``, keyed by the model identity, a digest of the model's current weights and a
fingerprint of the items, so a fine-tuned model or changed data never reuses a stale cache, and a damaged cache file
is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .cache import artifact_path, cached_artifact, check_finite_rows
from .data.adapters import ImageTextDataset, collate_skipping_unreadable
from .data.records import Catalogue, CorruptImage
from .models.tokens import image_token_features, patch_grid, text_token_features


def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of every parameter and buffer; changes whenever the weights do."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def feature_cache_path(kind: str, bundle, payload: str, artifact: str = "embeddings") -> Path:
    """Where features of ``bundle`` on ``payload`` (an item fingerprint or a text digest) are cached."""
    return artifact_path(artifact, [kind, bundle.identity, weights_digest(bundle.model), payload], prefix=kind)


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 of a list of strings (the cache payload of text features)."""
    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()


# --- the one image loop and the one text loop --------------------------------------------------------------------


def encode_image_batches(
    bundle,
    catalogue: Catalogue,
    encode: Callable[[torch.Tensor], object],
    batch_size: int = 256,
    num_workers: int = 0,
    desc: str = "encoding images",
    progress: bool = True,
) -> list:
    """``encode(images)`` for every batch of ``catalogue``'s preprocessed images, in catalogue order.

    Args:
        bundle: a :class:`~course_utils.models.ClipBundle` (its ``preprocess`` and ``device`` are used).
        catalogue: the items; must not be empty.
        encode: ``(b, 3, H, W)`` images on ``bundle.device`` -> what to keep of that batch.
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding images (use 2+ for JPEG datasets).
        desc, progress: the tqdm bar.

    Returns:
        The list of ``encode`` outputs, one per batch.

    Raises:
        ValueError: the catalogue is empty.
        CorruptImage: some images could not be read; the message lists them. Call
            ``catalogue.drop_unreadable_images()`` first (it removes and counts them).
    """
    if len(catalogue) == 0:
        raise ValueError(f"catalogue {catalogue.name!r} is empty: there are no images to encode")
    loader = DataLoader(
        ImageTextDataset(catalogue, bundle.preprocess),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_skipping_unreadable,
    )
    outputs, skipped = [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            skipped += batch["skipped"]
            if "image" in batch:
                outputs.append(encode(batch["image"].to(bundle.device)))
    if skipped:
        raise CorruptImage(
            f"{len(skipped)} images of {catalogue.name!r} could not be read (e.g. {skipped[:5]}); "
            "call catalogue.drop_unreadable_images() before encoding — it removes and counts them"
        )
    return outputs


def encode_text_batches(
    texts: Sequence[str],
    encode: Callable[[list[str]], object],
    batch_size: int = 512,
    desc: str = "encoding texts",
    progress: bool = True,
) -> list:
    """``encode(batch of texts)`` for consecutive batches of ``texts`` (non-empty strings), in order."""
    texts = list(texts)
    for position, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"texts[{position}] is {text!r}: every text must be a non-empty string")
    with torch.inference_mode():
        return [
            encode(texts[start : start + batch_size])
            for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, leave=False)
        ]


# --- pooled embeddings -----------------------------------------------------------------------------------------------


def _embedding_check(rows: int, dim: int) -> Callable[[torch.Tensor], None]:
    """Validation of a cached ``(rows, dim)`` matrix of L2-normalised embeddings."""

    def check(embeddings: torch.Tensor) -> None:
        if not isinstance(embeddings, torch.Tensor) or tuple(embeddings.shape) != (rows, dim):
            raise ValueError(
                f"expected a ({rows}, {dim}) tensor, found {getattr(embeddings, 'shape', type(embeddings))}"
            )
        check_finite_rows(embeddings, "embeddings")
        norms = embeddings.norm(dim=1)
        if rows and not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
            raise ValueError(f"row {int((norms - 1).abs().argmax())} has norm {float(norms.max()):.3g}, not 1")

    return check


def encode_images(
    bundle,
    catalogue: Catalogue,
    batch_size: int = 256,
    num_workers: int = 0,
    use_cache: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Embed every item image of ``catalogue`` (row i of the result is ``catalogue[i]``).

    Args:
        bundle: a :class:`~course_utils.models.ClipBundle`.
        catalogue: items to embed.
        batch_size, num_workers, progress: see :func:`encode_image_batches`.
        use_cache: read/write the cache (``data/cache/embeddings/``).

    Returns:
        ``(len(catalogue), embed_dim) float32`` on the CPU, L2-normalised.
    """

    def compute() -> torch.Tensor:
        chunks = encode_image_batches(
            bundle,
            catalogue,
            lambda images: bundle.encode_images(images).cpu(),
            batch_size,
            num_workers,
            progress=progress,
        )
        return torch.cat(chunks)

    # The key hashes the image bytes, not records.decode_image: a change there must bump cache.ARTIFACT_VERSIONS.
    path = feature_cache_path("images", bundle, catalogue.fingerprint()) if use_cache else None
    return cached_artifact(path, compute, use_cache, validate=_embedding_check(len(catalogue), bundle.embed_dim))


def encode_texts(
    bundle, texts: Sequence[str], batch_size: int = 512, use_cache: bool = True, progress: bool = True
) -> torch.Tensor:
    """Embed captions or queries.

    Returns:
        ``(len(texts), embed_dim) float32`` on the CPU, L2-normalised.
    """
    texts = list(texts)

    def compute() -> torch.Tensor:
        chunks = encode_text_batches(
            texts, lambda batch: bundle.encode_texts(batch).cpu(), batch_size, progress=progress
        )
        return torch.cat(chunks) if chunks else torch.empty(0, bundle.embed_dim)

    path = feature_cache_path("texts", bundle, texts_digest(texts)) if use_cache else None
    return cached_artifact(path, compute, use_cache, validate=_embedding_check(len(texts), bundle.embed_dim))


def caption_texts(catalogue: Catalogue, style: str | None = None) -> list[str]:
    """One caption per item (the first of ``style``), aligned with ``encode_images(catalogue)``."""
    return [item.caption(style) for item in catalogue]


# --- token features (notebooks 03 and 05) -------------------------------------------------------------------------


@dataclass
class ImageTokens:
    """Token-level image features of a set of images (row i = image i).

    Attributes:
        tokens: ``(n, 1 + P, D_image) float32`` the class token, then the ``P`` patch tokens, after the vision
            tower's final LayerNorm.
        pooled: ``(n, embed_dim) float32`` the dual encoder's L2-normalised image embeddings.
        grid: ``(rows, cols)`` of the patch grid, ``rows * cols == P`` (to draw attention maps: token ``1 + r *
            cols + c`` is patch ``(r, c)``).
    """

    tokens: torch.Tensor
    pooled: torch.Tensor
    grid: tuple[int, int]

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass
class TextTokens:
    """Token-level text features of a set of captions (row i = caption i).

    Attributes:
        tokens: ``(n, L, D_text) float32`` token states after the text tower's final LayerNorm.
        padding: ``(n, L) bool``, True at positions after the end-of-text token (ignored by attention).
        pooled: ``(n, embed_dim) float32`` the dual encoder's L2-normalised text embeddings.
    """

    tokens: torch.Tensor
    padding: torch.Tensor
    pooled: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]


def trim_padding(states: torch.Tensor, padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing columns that are padding in every row (CLIP pads captions to 77 or 48 tokens).

    The matcher masks padding anyway; cutting it only saves compute.

    Args:
        states: ``(n, L, D)`` token states.
        padding: ``(n, L) bool``.

    Returns:
        ``(n, L', D)`` and ``(n, L')`` with ``L'`` = the longest caption (EOT included).
    """
    length = int((~padding).sum(dim=1).max()) if len(padding) else padding.shape[1]
    return states[:, :length].contiguous(), padding[:, :length].contiguous()


def _cached_tokens(kind: str, bundle, payload: str, rows: int, use_cache: bool, compute: Callable[[], dict]) -> dict:
    """``{name: tensor}`` from ``compute`` or the token cache; token grids stored as float16.

    Results are always returned after the float16 round trip, so a first run and a cached rerun give identical
    numbers.
    """

    def compute_half() -> dict:
        return {name: t.half() if t.is_floating_point() and t.ndim == 3 else t for name, t in compute().items()}

    def check(stored: dict) -> None:
        for name, tensor in stored.items():
            if tensor.shape[0] != rows:
                raise ValueError(f"{name}: {tensor.shape[0]} rows, expected {rows}")
            if tensor.is_floating_point():
                check_finite_rows(tensor, name)

    path = feature_cache_path(kind, bundle, payload, artifact="tokens") if use_cache else None
    stored = cached_artifact(path, compute_half, use_cache, validate=check)
    return {name: t.float() if t.is_floating_point() else t for name, t in stored.items()}


def encode_image_tokens(
    bundle, catalogue: Catalogue, batch_size: int = 256, use_cache: bool = True, progress: bool = True
) -> ImageTokens:
    """Class + patch tokens of every image of ``catalogue`` with a frozen encoder, computed once and cached.

    Returns:
        :class:`ImageTokens` on the CPU (row i = ``catalogue[i]``).
    """

    def compute() -> dict:
        def tokens_and_pooled(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            tokens, pooled = image_token_features(bundle.model, images)
            return tokens.float().cpu(), pooled.float().cpu()

        batches = encode_image_batches(
            bundle, catalogue, tokens_and_pooled, batch_size, desc="image tokens", progress=progress
        )
        return {"tokens": torch.cat([t for t, _ in batches]), "pooled": torch.cat([p for _, p in batches])}

    found = _cached_tokens("image-tokens", bundle, catalogue.fingerprint(), len(catalogue), use_cache, compute)
    return ImageTokens(found["tokens"], found["pooled"], patch_grid(bundle.model, found["tokens"].shape[1] - 1))


def encode_text_tokens(
    bundle, texts: Sequence[str], batch_size: int = 512, use_cache: bool = True, progress: bool = True
) -> TextTokens:
    """Token features of captions or queries with a frozen encoder (trailing padding trimmed, cached on disk).

    Returns:
        :class:`TextTokens` on the CPU.
    """
    texts = list(texts)

    def compute() -> dict:
        def states_padding_pooled(batch: list[str]) -> tuple[torch.Tensor, ...]:
            states, padding, pooled = text_token_features(bundle.model, bundle.tokenizer(batch).to(bundle.device))
            return states.float().cpu(), padding.cpu(), pooled.float().cpu()

        batches = encode_text_batches(texts, states_padding_pooled, batch_size, desc="text tokens", progress=progress)
        states, padding = trim_padding(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
        return {"tokens": states, "padding": padding, "pooled": torch.cat([b[2] for b in batches])}

    found = _cached_tokens("text-tokens", bundle, texts_digest(texts), len(texts), use_cache, compute)
    return TextTokens(found["tokens"], found["padding"], found["pooled"])


def patch_tokens(
    bundle, catalogue: Catalogue, block_from_end: int = 2, batch_size: int = 256, progress: bool = True
) -> torch.Tensor:
    """The patch tokens of every item image (after the final LayerNorm), the feature map of ASEN-style heads.

    The default is the penultimate block: CLIP pools the class token, so the last block's outputs at the patch
    positions feed nothing and are never trained, while the penultimate tokens are what the class token attends
    to (notebook 05).

    Args:
        bundle: the CLIP bundle (an open_clip ViT).
        catalogue: items to encode.
        block_from_end: 1 = last transformer block, 2 = penultimate, ...
        batch_size: images per forward pass.
        progress: show a tqdm bar.

    Returns:
        ``(len(catalogue), L, c) float32`` on the CPU: ``L`` patches (64 for the tiny CLIP, 49 for ViT-B-32).
    """

    def patches(images: torch.Tensor) -> torch.Tensor:
        return image_token_features(bundle.model, images, block_from_end, class_token=False)[0].float().cpu()

    return torch.cat(
        encode_image_batches(bundle, catalogue, patches, batch_size, desc="patch tokens", progress=progress)
    )
