"""Cross-modal attention: an image–text matching (ITM) head that re-ranks the dual encoder's top-K (notebook 03).

A dual encoder (CLIP) compares one pooled image vector with one pooled text vector, so words never look at image
regions. A cross-encoder lets them: the text tokens (plus a learned *match token*) attend to the image patch
tokens, and a binary head on the match token says "does this caption describe this image?" — the
image–text-matching (ITM) objective of ALBEF and BLIP. It needs one forward pass per (query, image) pair, so it
is used to re-rank the dual encoder's top-K candidates rather than to scan the whole gallery.

Contents:
    * token features: :func:`text_padding_mask`, :func:`image_token_features`, :func:`text_token_features`,
      :func:`encode_image_tokens`, :func:`encode_text_tokens` (token-level outputs of open_clip's towers);
    * models: :class:`CrossAttentionBlock`, :class:`ImageTextMatcher`, :class:`MatcherWithEncoders`
      (``tune_encoders``), and :class:`Seed002CrossModal` (seed 002's pooled-vector transformer, for comparison);
    * training: :func:`mine_hard_negatives`, :class:`HardNegativePairs`, :func:`itm_batch_loss` and the pair
      scorers :func:`token_pair_logits`, :func:`pooled_pair_logits`, :func:`live_pair_logits`;
    * use: :func:`top_k_candidates`, :func:`score_candidates`, :func:`rerank`, :func:`reranked_similarity`,
      :func:`rerank_split` / :class:`RerankedSplit` (evaluation), :func:`pick_dual_weight`, :class:`TwoStageSearch`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

PairLogits = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


# --- token-level features of the CLIP towers ---------------------------------------------------------------------


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


def text_padding_mask(token_ids: torch.Tensor) -> torch.Tensor:
    """Positions after the end-of-text (EOT) token: the padding a cross-encoder must not attend to.

    CLIP tokenizers put EOT at the highest token id (open_clip pools the text at ``argmax``), then pad with 0.

    Args:
        token_ids: ``(n, L) int64`` tokenizer output.

    Returns:
        ``(n, L) bool``, True after each row's EOT position.
    """
    eot = token_ids.argmax(dim=-1, keepdim=True)  # (n, 1)
    positions = torch.arange(token_ids.shape[1], device=token_ids.device)
    return positions.unsqueeze(0) > eot


def _require_intermediates(model: nn.Module) -> None:
    if not hasattr(model, "forward_intermediates"):
        raise NotImplementedError(
            "cross-modal re-ranking reads token-level features with open_clip's model.forward_intermediates; "
            "load the model through open_clip (e.g. model='ViT-B-32', pretrained='openai'), not the 'clip:' package"
        )


def image_token_features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class and patch tokens, and pooled embeddings, of a batch of images in one vision-tower pass (keeps gradients).

    The class token comes first, as in the ViT outputs ALBEF and BLIP cross-attend to: CLIP trains only the pooled
    class token, so it is the token that summarises the whole garment; the patch tokens say where things are.

    Args:
        model: an open_clip CLIP model (ViT image tower).
        images: ``(n, 3, H, W)`` preprocessed images.

    Returns:
        ``(n, 1 + P, D_image)`` class + patch tokens (final LayerNorm applied) and ``(n, embed_dim)``
        L2-normalised embeddings.
    """
    _require_intermediates(model)
    out = model.forward_intermediates(
        image=images, image_indices=1, normalize_intermediates=True, image_output_fmt="NLC", normalize=True,
        image_output_extra_tokens=True,
    )
    if "image_intermediates_prefix" not in out:
        raise NotImplementedError("cross-modal re-ranking needs a ViT image tower with a class token (e.g. ViT-B-32)")
    tokens = torch.cat([out["image_intermediates_prefix"][-1], out["image_intermediates"][-1]], dim=1)
    return tokens, out["image_features"]


def text_token_features(model: nn.Module, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token states, padding mask and pooled embeddings of tokenized captions in one text-tower pass.

    CLIP's text tower is causal, so the state of a token never depends on the padding after the EOT.

    Args:
        model: an open_clip CLIP model.
        token_ids: ``(n, L) int64``.

    Returns:
        ``(n, L, D_text)`` token states (final LayerNorm applied), ``(n, L) bool`` padding mask, and
        ``(n, embed_dim)`` L2-normalised embeddings.
    """
    _require_intermediates(model)
    out = model.forward_intermediates(text=token_ids, text_indices=1, normalize_intermediates=True, normalize=True)
    return out["text_intermediates"][-1], text_padding_mask(token_ids), out["text_features"]


def _patch_grid(model: nn.Module, n_patches: int) -> tuple[int, int]:
    grid = getattr(model.visual, "grid_size", None)
    if grid is not None and grid[0] * grid[1] == n_patches:
        return int(grid[0]), int(grid[1])
    side = int(round(n_patches**0.5))
    return side, n_patches // side


TOKEN_CACHE_VERSION = 2


def _token_cache(kind: str, bundle, payload: str, use_cache: bool, compute: Callable[[], dict]) -> dict:
    """Compute ``{name: tensor}`` or read it from ``data/cache/tokens/`` (keyed by model identity, weights, data).

    Token grids are stored as float16 and always returned after the float16 round trip, so a first run and a
    cached rerun give identical numbers.
    """
    from ..embed import cache_path, cached

    def compute_half() -> dict:
        return {name: t.half() if t.is_floating_point() and t.ndim == 3 else t for name, t in compute().items()}

    stored = cached(
        lambda: cache_path(kind, bundle, payload, folder="tokens", version=TOKEN_CACHE_VERSION), use_cache, compute_half
    )
    return {name: t.float() if t.is_floating_point() else t for name, t in stored.items()}


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


def encode_image_tokens(
    bundle, catalogue, batch_size: int = 256, use_cache: bool = True, progress: bool = True
) -> ImageTokens:
    """Token features of every image of ``catalogue`` with a frozen encoder, computed once and cached on disk.

    Args:
        bundle: a :class:`~course_utils.models.ClipBundle` (open_clip backend).
        catalogue: items; row i of the result is ``catalogue[i]``.
        batch_size: images per forward pass.
        use_cache: read/write ``data/cache/tokens/`` (keyed by model identity, weights and catalogue).
        progress: show a tqdm bar.

    Returns:
        :class:`ImageTokens` on the CPU.
    """
    from ..data.adapters import ImageTextDataset, collate_skipping_unreadable

    def compute() -> dict:
        loader = torch.utils.data.DataLoader(
            ImageTextDataset(catalogue, bundle.preprocess),
            batch_size=batch_size,
            collate_fn=collate_skipping_unreadable,
        )
        tokens, pooled = [], []
        with torch.inference_mode():
            for batch in tqdm(loader, desc="image tokens", disable=not progress, leave=False):
                if batch["skipped"]:
                    raise ValueError(
                        f"unreadable images {batch['skipped'][:5]}; call catalogue.drop_unreadable_images() first"
                    )
                patch, emb = image_token_features(bundle.model, batch["image"].to(bundle.device))
                tokens.append(patch.float().cpu())
                pooled.append(emb.float().cpu())
        return {"tokens": torch.cat(tokens), "pooled": torch.cat(pooled)}

    found = _token_cache("image-tokens", bundle, catalogue.fingerprint(), use_cache, compute)
    return ImageTokens(found["tokens"], found["pooled"], _patch_grid(bundle.model, found["tokens"].shape[1] - 1))


def encode_text_tokens(
    bundle, texts: Sequence[str], batch_size: int = 512, use_cache: bool = True, progress: bool = True
) -> TextTokens:
    """Token features of captions or queries with a frozen encoder (trailing padding trimmed, cached on disk).

    Returns:
        :class:`TextTokens` on the CPU.
    """
    texts = list(texts)

    def compute() -> dict:
        tokens, padding, pooled = [], [], []
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), desc="text tokens", disable=not progress, leave=False):
                ids = bundle.tokenizer(texts[start : start + batch_size]).to(bundle.device)
                states, pad, emb = text_token_features(bundle.model, ids)
                tokens.append(states.float().cpu())
                padding.append(pad.cpu())
                pooled.append(emb.float().cpu())
        states, pad = trim_padding(torch.cat(tokens), torch.cat(padding))
        return {"tokens": states, "padding": pad, "pooled": torch.cat(pooled)}

    payload = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
    found = _token_cache("text-tokens", bundle, payload, use_cache, compute)
    return TextTokens(found["tokens"], found["padding"], found["pooled"])


# --- the cross-encoder -------------------------------------------------------------------------------------------


class CrossAttentionBlock(nn.Module):
    """One layer of the matcher: words talk to each other, then look at the image patches.

    Pre-LayerNorm residual block, as in ALBEF/BLIP's text encoder with cross-attention:
    self-attention over [match token + text tokens] (padding masked), cross-attention from those tokens to the
    image tokens (class token + patches), then an MLP.

    Args:
        width: token width D.
        heads: attention heads.
        mlp_ratio: hidden size of the MLP relative to ``width``.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(width)
        self.norm_image = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(
        self, text: torch.Tensor, image: torch.Tensor, text_padding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the text-side tokens.

        Args:
            text: ``(B, 1 + L, D)`` match token followed by the text tokens.
            image: ``(B, N, D)`` image tokens (keys and values of the cross-attention).
            text_padding: ``(B, 1 + L) bool``, True where a text position is padding.

        Returns:
            The updated ``(B, 1 + L, D)`` tokens and the cross-attention weights ``(B, 1 + L, N)``
            (averaged over heads): how much each text position looked at each image token.
        """
        # 1. self-attention: the match token and the words read each other; padding is never read
        h = self.norm_self(text)
        text = text + self.self_attn(h, h, h, key_padding_mask=text_padding, need_weights=False)[0]
        # 2. cross-attention: queries come from the text side, keys and values from the image patches
        h, patches = self.norm_cross(text), self.norm_image(image)
        attended, weights = self.cross_attn(h, patches, patches, need_weights=True, average_attn_weights=True)
        text = text + attended
        # 3. position-wise MLP
        text = text + self.mlp(self.norm_mlp(text))
        return text, weights


class ImageTextMatcher(nn.Module):
    """ITM cross-encoder: (image tokens, text tokens) -> one logit "this caption matches this image".

    The encoders' tokens are projected to ``width``; a learned match token is prepended to the text tokens;
    ``layers`` :class:`CrossAttentionBlock` s mix them with the image; a linear head reads the match token.
    Defaults are sized for the tiny CLIP on 2 CPU cores (notebook 03).

    Args:
        image_width: width of the vision tower's tokens (128 for the tiny CLIP, 768 for ViT-B-32).
        text_width: width of the text tower's token states (128 / 512).
        width: the matcher's token width.
        heads: attention heads per block.
        layers: number of blocks.
        mlp_ratio: hidden size of the blocks' MLPs relative to ``width``.
        n_image_tokens: when given, a learned position embedding is added to the ``n_image_tokens`` image tokens
            (class token + patches; 65 for the tiny CLIP, 50 for ViT-B-32). It
            starts at unit scale so that keys differ by position from the first step: shape words (sleeves,
            length, the garment type) must look at *where* the garment is, and with a small init the attention
            stays uniform over the patches for hundreds of steps.
    """

    def __init__(
        self,
        image_width: int,
        text_width: int,
        width: int = 64,
        heads: int = 4,
        layers: int = 2,
        mlp_ratio: float = 2.0,
        n_image_tokens: int | None = None,
    ):
        super().__init__()
        self.image_proj = nn.Linear(image_width, width)
        self.image_position = nn.Parameter(torch.randn(1, n_image_tokens, width)) if n_image_tokens else None
        self.text_proj = nn.Linear(text_width, width)
        self.match_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.blocks = nn.ModuleList([CrossAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_padding: torch.Tensor,
        return_attention: bool = False,
    ):
        """Match logits of aligned (image, text) pairs.

        Args:
            image_tokens: ``(B, N, image_width)`` (class token + patches).
            text_tokens: ``(B, L, text_width)``.
            text_padding: ``(B, L) bool``, True at padding positions.
            return_attention: also return each block's cross-attention weights.

        Returns:
            ``(B,)`` logits; with ``return_attention`` also a list of ``(B, 1 + L, N)`` weights, one per block
            (position 0 is the match token).
        """
        batch = text_tokens.shape[0]
        text = torch.cat([self.match_token.expand(batch, -1, -1), self.text_proj(text_tokens)], dim=1)
        padding = torch.cat([text_padding.new_zeros(batch, 1), text_padding], dim=1)
        image = self.image_proj(image_tokens)
        if self.image_position is not None:
            image = image + self.image_position
        attention = []
        for block in self.blocks:
            text, weights = block(text, image, padding)
            attention.append(weights)
        logits = self.head(self.norm(text[:, 0])).squeeze(-1)
        return (logits, attention) if return_attention else logits


class MatcherWithEncoders(nn.Module):
    """The matcher plus the CLIP towers that feed it, trained together when ``tune_encoders=True``.

    Args:
        clip_model: an open_clip CLIP model (a copy: tuning it must not change the first-stage dual encoder).
        matcher: the :class:`ImageTextMatcher`.
    """

    def __init__(self, clip_model: nn.Module, matcher: ImageTextMatcher):
        super().__init__()
        self.clip, self.matcher = clip_model, matcher

    def forward(self, images: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images and ``(B, L)`` token ids -> ``(B,)`` match logits."""
        patches, _ = image_token_features(self.clip, images)
        states, padding, _ = text_token_features(self.clip, token_ids)
        return self.matcher(patches, states, padding)


class Seed002CrossModal(nn.Module):
    """Seed 002's "cross-modal attention", reimplemented as a comparison row.

    A ``TransformerEncoder`` over the 4-token sequence ``[zero CLS, pooled image vector, zero CLS, pooled text
    vector]`` (seed defaults: 6 layers, 8 heads), with a linear ITM head on the first output. It sees only the
    two pooled vectors, without positional or modality embeddings, so it cannot relate words to image regions.
    The seed used ``embed_dim=512`` with PyTorch's default feed-forward width 2048 = 4 x 512; the feed-forward
    width here keeps that ratio.

    Args:
        embed_dim: size of the pooled CLIP embeddings.
        num_heads: attention heads (seed: 8).
        num_layers: encoder layers (seed: 6).
    """

    def __init__(self, embed_dim: int, num_heads: int = 8, num_layers: int = 6):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=embed_dim, nhead=num_heads, dim_feedforward=4 * embed_dim, batch_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.head = nn.Linear(embed_dim, 1)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` pooled image and text embeddings -> ``(B,)`` match logits."""
        zeros = torch.zeros_like(image_features)
        sequence = torch.stack([zeros, image_features, zeros, text_features], dim=1)  # (B, 4, d)
        return self.head(self.transformer(sequence)[:, 0]).squeeze(-1)


# --- training: hard negatives and the ITM loss ---------------------------------------------------------------------


def mine_hard_negatives(similarity: torch.Tensor, k: int, exclude_positive: bool = True, seed: int = 0) -> torch.Tensor:
    """The ``k`` highest-scoring non-matching gallery items of every query: the negatives ITM learns from.

    Query ``i``'s positive is gallery item ``i`` (paired data). Exact score ties are broken by a random
    permutation drawn from ``seed``, so the result is deterministic.

    Args:
        similarity: ``(n, g)`` first-stage scores (e.g. the dual encoder's cosine similarities), ``g >= n``.
        k: negatives per query, ``k <= g - 1`` when excluding the positive.
        exclude_positive: never return the query's own item (True for training; False returns the plain top-k).
        seed: tie-breaking seed.

    Returns:
        ``(n, k) int64`` gallery columns, highest score first.
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64).clone()
    n, g = sim.shape
    limit = g - 1 if exclude_positive else g
    if not 1 <= k <= limit:
        raise ValueError(f"k must be in [1, {limit}] for a gallery of {g}, got {k}")
    if exclude_positive:
        if g < n:
            raise ValueError(f"query i's positive is gallery item i, so the gallery needs >= {n} items, got {g}")
        sim[torch.arange(n), torch.arange(n)] = -torch.inf
    permutation = torch.randperm(g, generator=torch.Generator().manual_seed(seed))
    # sort by score descending, then by a random key: a stable sort of the permuted columns does exactly that
    order = torch.sort(sim[:, permutation], dim=1, descending=True, stable=True).indices[:, :k]
    return permutation[order]


class HardNegativePairs(Dataset):
    """Index triples for ITM training: a positive pair and one negative image and one negative caption for it.

    Item ``i`` yields ``{"index": i, "negative_image": j, "negative_text": t}``: image ``j`` is drawn from the
    hard negative images of caption ``i``, caption ``t`` from the hard negative captions of image ``i`` — a new
    draw per (seed, epoch, item), deterministic. A matcher trained from scratch on hard negatives only stays at
    the constant guess (notebook 03 shows it), so a curriculum can start with random negatives.

    Args:
        image_negatives: ``(n, k)`` hard negative images per caption (from :func:`mine_hard_negatives`).
        text_negatives: ``(n, k)`` hard negative captions per image.
        seed: sampling seed.
        easy_epochs: during the first ``easy_epochs`` epochs every negative is a uniformly random other item.
        random_share: afterwards, the probability that a negative is random instead of hard.
    """

    def __init__(
        self,
        image_negatives: torch.Tensor,
        text_negatives: torch.Tensor,
        seed: int = 0,
        easy_epochs: int = 0,
        random_share: float = 0.0,
    ):
        if image_negatives.shape[0] != text_negatives.shape[0]:
            raise ValueError(f"negatives of {image_negatives.shape[0]} captions but {text_negatives.shape[0]} images")
        self.image_negatives, self.text_negatives, self.seed = image_negatives, text_negatives, seed
        self.easy_epochs, self.random_share = easy_epochs, random_share
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.image_negatives.shape[0]

    def _draw(self, rng: np.random.Generator, index: int, hard: torch.Tensor) -> int:
        if self.epoch < self.easy_epochs or rng.random() < self.random_share:
            other = int(rng.integers(len(self) - 1))
            return other + (other >= index)  # any item but the positive
        return int(hard[index, rng.integers(hard.shape[1])])

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return {
            "index": index,
            "negative_image": self._draw(rng, index, self.image_negatives),
            "negative_text": self._draw(rng, index, self.text_negatives),
        }


def itm_batch_loss(pair_logits: PairLogits) -> Callable[[nn.Module, dict], torch.Tensor]:
    """The ITM loss for :func:`course_utils.train.fit`: binary cross-entropy on 1 positive + 2 hard negatives.

    Each item of a :class:`HardNegativePairs` batch gives three pairs: (image i, caption i) labelled 1,
    (hard negative image, caption i) labelled 0 and (image i, hard negative caption) labelled 0.

    Args:
        pair_logits: ``(model, image_index (m,), text_index (m,)) -> (m,)`` logits, e.g. :func:`token_pair_logits`.
    """

    def batch_loss(model: nn.Module, batch: dict) -> torch.Tensor:
        positive, negative_image, negative_text = batch["index"], batch["negative_image"], batch["negative_text"]
        image_index = torch.cat([positive, negative_image, positive])
        text_index = torch.cat([positive, positive, negative_text])
        labels = torch.cat([torch.ones(len(positive)), torch.zeros(2 * len(positive))])
        logits = pair_logits(model, image_index, text_index)
        return F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device))

    return batch_loss


def token_pair_logits(images: ImageTokens, texts: TextTokens) -> PairLogits:
    """Pair scorer of an :class:`ImageTextMatcher` on cached (frozen-encoder) token features."""

    def pair_logits(model: nn.Module, image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        return model(
            images.tokens[image_index].to(device),
            texts.tokens[text_index].to(device),
            texts.padding[text_index].to(device),
        )

    return pair_logits


def pooled_pair_logits(images: ImageTokens, texts: TextTokens) -> PairLogits:
    """Pair scorer of a :class:`Seed002CrossModal` on cached pooled embeddings."""

    def pair_logits(model: nn.Module, image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        return model(images.pooled[image_index].to(device), texts.pooled[text_index].to(device))

    return pair_logits


def live_pair_logits(images: torch.Tensor, token_ids: torch.Tensor) -> PairLogits:
    """Pair scorer of a :class:`MatcherWithEncoders`: encodes the (unique) images and captions of each batch.

    Args:
        images: ``(n, 3, H, W)`` preprocessed images of the split.
        token_ids: ``(n, L)`` its tokenized captions.
    """

    def pair_logits(model: nn.Module, image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        unique_images, image_row = torch.unique(image_index, return_inverse=True)
        unique_texts, text_row = torch.unique(text_index, return_inverse=True)
        patches, _ = image_token_features(model.clip, images[unique_images].to(device))
        states, padding, _ = text_token_features(model.clip, token_ids[unique_texts].to(device))
        return model.matcher(patches[image_row], states[text_row], padding[text_row])

    return pair_logits


# --- use: re-ranking the dual encoder's top-K ----------------------------------------------------------------------


def top_k_candidates(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first stage: each query's ``k`` best gallery columns by dual-encoder score.

    Returns:
        ``(q, k) int64`` candidate columns and their ``(q, k)`` scores, best first.
    """
    scores, positions = torch.as_tensor(similarity).topk(k, dim=1)
    return positions, scores


@torch.inference_mode()
def score_candidates(
    model: nn.Module, pair_logits: PairLogits, candidate_positions: torch.Tensor, batch_size: int = 2048
) -> torch.Tensor:
    """Cross-encoder scores of each query (row) with each of its candidate gallery items.

    Args:
        model: the ITM model, in eval mode.
        pair_logits: scorer whose image rows are the gallery and text rows the queries.
        candidate_positions: ``(q, k)`` gallery columns per query.
        batch_size: pairs per forward pass.

    Returns:
        ``(q, k) float32`` logits on the CPU.
    """
    q, k = candidate_positions.shape
    image_index = candidate_positions.reshape(-1).cpu()
    text_index = torch.arange(q).repeat_interleave(k)
    chunks = [
        pair_logits(model, image_index[s : s + batch_size], text_index[s : s + batch_size]).float().cpu()
        for s in range(0, q * k, batch_size)
    ]
    return torch.cat(chunks).reshape(q, k)


def rerank(candidate_positions: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Reorder each query's candidates by the re-ranker's scores (descending; ties keep the first-stage order).

    Args:
        candidate_positions: ``(q, k)`` gallery columns in first-stage order.
        scores: ``(q, k)`` re-ranker scores of those candidates.

    Returns:
        ``(q, k)`` the same columns, best re-ranker score first.
    """
    order = torch.sort(torch.as_tensor(scores), dim=1, descending=True, stable=True).indices
    return torch.gather(torch.as_tensor(candidate_positions), 1, order)


def reranked_similarity(
    similarity: torch.Tensor, candidate_positions: torch.Tensor, scores: torch.Tensor
) -> torch.Tensor:
    """A full ``(q, g)`` score matrix whose ranking is "re-ranked top-K first, then the rest in dual order".

    Lets :func:`course_utils.metrics.recall_at_k` score a re-ranker: the candidates' scores are shifted above
    every non-candidate of their row (order and ties among them preserved); the others keep their first-stage score.

    Args:
        similarity: ``(q, g)`` first-stage scores.
        candidate_positions: ``(q, k)`` columns of the candidates.
        scores: ``(q, k)`` re-ranker scores.

    Returns:
        ``(q, g) float64``.
    """
    final = torch.as_tensor(similarity, dtype=torch.float64).clone()
    scores = torch.as_tensor(scores, dtype=torch.float64)
    shifted = scores - scores.min(dim=1, keepdim=True).values + final.max(dim=1, keepdim=True).values + 1.0
    final.scatter_(1, torch.as_tensor(candidate_positions), shifted)
    return final


@dataclass
class RerankedSplit:
    """One split's first stage and its re-rankers' scores: what Recall@K after re-ranking is computed from.

    Query ``i`` is the caption of gallery item ``i`` (paired data).

    Attributes:
        similarity: ``(q, g)`` the dual encoder's cosine similarities.
        candidates: ``(q, k)`` each query's top-k gallery columns by cosine, best first.
        dual_logits: ``(q, k)`` the dual encoder's logits (``logit_scale x cosine``) of those candidates.
        scores: re-ranker name -> its ``(q, k)`` logits of the candidates.
    """

    similarity: torch.Tensor
    candidates: torch.Tensor
    dual_logits: torch.Tensor
    scores: dict[str, torch.Tensor]

    def final_similarity(self, name: str, dual_weight: float) -> torch.Tensor:
        """``(q, g)`` scores after re-ranking the top-k by ``name``'s logit + ``dual_weight`` x the dual logit."""
        return reranked_similarity(self.similarity, self.candidates, self.scores[name] + dual_weight * self.dual_logits)

    def recall(self, name: str, dual_weight: float, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
        """Full-gallery Recall@K after re-ranking (see :meth:`final_similarity`)."""
        from ..metrics import recall_at_k

        targets = torch.arange(self.similarity.shape[0])
        return recall_at_k(self.final_similarity(name, dual_weight), targets, ks)


def rerank_split(
    bundle, images: ImageTokens, queries: TextTokens, rerankers: dict[str, tuple[nn.Module, PairLogits]], k: int
) -> RerankedSplit:
    """The dual encoder's top-``k`` of every query and each re-ranker's logits for them.

    Args:
        bundle: the dual encoder (its ``logit_scale`` turns cosines into logits).
        images: the split's image token features (their ``pooled`` rows are the gallery).
        queries: the split's caption token features (their ``pooled`` rows are the queries).
        rerankers: name -> (model in eval mode, pair scorer whose image rows are the gallery, text rows the queries).
        k: candidates per query.
    """
    similarity = queries.pooled @ images.pooled.T
    candidates, dual_scores = top_k_candidates(similarity, k)
    scores = {name: score_candidates(model, scorer, candidates) for name, (model, scorer) in rerankers.items()}
    return RerankedSplit(similarity, candidates, bundle.model.logit_scale.exp().item() * dual_scores, scores)


def pick_dual_weight(run: RerankedSplit, name: str, weights: Sequence[float]) -> float:
    """The weight of the dual logit that gives re-ranker ``name`` the best R@1 on ``run`` (the first on ties).

    Pick it on a validation split and report on test.
    """
    recall_at_1 = [run.recall(name, weight, ks=(1,))[1] for weight in weights]
    return weights[recall_at_1.index(max(recall_at_1))]


@dataclass
class TwoStageSearch:
    """Text→image search as deployed: the dual encoder's top-K, then (optionally) the cross-encoder re-ranks them.

    The gallery's pooled embeddings and image tokens are computed offline; a query costs one text-tower pass,
    one matrix product with the gallery, and — when re-ranking — ``k`` cross-encoder pairs.

    Attributes:
        bundle: the first-stage dual encoder (its tokenizer and towers also encode the query tokens).
        gallery: token features of the gallery (:func:`encode_image_tokens`).
        model: the re-ranker (:class:`ImageTextMatcher` or :class:`Seed002CrossModal`), in eval mode.
        k: candidates re-ranked per query.
        dual_weight: final score = re-ranker logit + ``dual_weight`` x the dual encoder's logit
            (``logit_scale x cosine``); 0 uses the re-ranker alone.
        pair_scorer: :func:`token_pair_logits` (token-level matcher) or :func:`pooled_pair_logits` (seed 002).
    """

    bundle: object
    gallery: ImageTokens
    model: nn.Module
    k: int = 20
    dual_weight: float = 0.0
    pair_scorer: Callable[[ImageTokens, TextTokens], PairLogits] = token_pair_logits

    @torch.inference_mode()
    def search(
        self, texts: Sequence[str], rerank_on: bool = True, k: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank the gallery for each query text.

        Args:
            texts: query captions.
            rerank_on: re-rank the top-k with the cross-encoder (False: dual encoder only).
            k: overrides ``self.k`` (``k = len(gallery)`` runs the cross-encoder over the whole gallery).

        Returns:
            ``(q, k)`` gallery columns, best first, and their ``(q, k)`` final scores.
        """
        k = min(k or self.k, len(self.gallery))
        ids = self.bundle.tokenizer(list(texts)).to(self.bundle.device)
        states, padding, pooled = text_token_features(self.bundle.model, ids)
        states, padding = trim_padding(states.float().cpu(), padding.cpu())
        queries = TextTokens(states, padding, pooled.float().cpu())
        candidates, dual_scores = top_k_candidates(queries.pooled @ self.gallery.pooled.T, k)
        if not rerank_on:
            return candidates, dual_scores
        scores = score_candidates(self.model, self.pair_scorer(self.gallery, queries), candidates)
        scores = scores + self.dual_weight * self.bundle.model.logit_scale.exp().item() * dual_scores
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return rerank(candidates, scores), torch.gather(scores, 1, order)
