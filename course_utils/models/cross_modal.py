"""Cross-modal attention modules (notebook 03): an image–text matching (ITM) cross-encoder and seed 002's variant.

A dual encoder (CLIP) compares one pooled image vector with one pooled text vector, so words never look at image
regions. A cross-encoder lets them: the text tokens (plus a learned *match token*) attend to the image's class and
patch tokens, and a binary head on the match token says "does this caption describe this image?" — the
image–text-matching (ITM) objective of ALBEF and BLIP. It needs one forward pass per (query, image) pair, so it
re-ranks the dual encoder's top-K rather than scanning the gallery; the recipe (hard negatives, ITM loss,
re-ranking, evaluation) is in ``course_utils.tasks.rerank``.

Modules: :class:`CrossAttentionBlock`, :class:`ImageTextMatcher`, :class:`MatcherWithEncoders` (the matcher with
the CLIP towers, for ``tune_encoders``), :class:`Seed002CrossModal` (seed 002's pooled-vector transformer).
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import is_whole_number
from .tokens import image_token_features, text_token_features


class CrossAttentionBlock(nn.Module):
    """One layer of the matcher: words talk to each other, then look at the image patches.

    Residual block in the order of ALBEF/BLIP's cross-attention text encoder: self-attention over
    [match token + text tokens] (padding masked), cross-attention from those tokens to the image tokens
    (class token + patches), then an MLP. Their BERT layers put LayerNorm after each residual sum; this block
    normalises before each sublayer (pre-LayerNorm), which trains more stably from scratch.

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
        for name, value in (("width", width), ("heads", heads), ("layers", layers)):
            if not is_whole_number(value, minimum=1):
                raise ValueError(f"ImageTextMatcher {name} must be a whole number >= 1, got {value!r}")
        if width % heads:
            fitting = [h for h in range(1, min(width, 16) + 1) if width % h == 0]
            raise ValueError(
                f"width={width} must be divisible by heads={heads} (each head attends over width / heads "
                f"channels): choose heads among {fitting}, or a width that is a multiple of {heads}"
            )
        # the constructor arguments, saved with the weights so a checkpoint can rebuild the module
        self.config = {
            "image_width": image_width,
            "text_width": text_width,
            "width": width,
            "heads": heads,
            "layers": layers,
            "mlp_ratio": mlp_ratio,
            "n_image_tokens": n_image_tokens,
        }
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

    def forward(
        self, images: torch.Tensor, token_ids: torch.Tensor, image_row: torch.Tensor, text_row: torch.Tensor
    ) -> torch.Tensor:
        """Match logits of (image, caption) pairs, each image and caption encoded once however many pairs use it.

        Args:
            images: ``(U, 3, H, W)`` preprocessed images.
            token_ids: ``(V, L)`` tokenized captions.
            image_row: ``(B,) int64`` the row of ``images`` in each pair.
            text_row: ``(B,) int64`` the row of ``token_ids`` in each pair.

        Returns:
            ``(B,)`` match logits.
        """
        patches, _ = image_token_features(self.clip, images)
        states, padding, _ = text_token_features(self.clip, token_ids)
        return self.matcher(patches[image_row], states[text_row], padding[text_row])


class Seed002CrossModal(nn.Module):
    """Seed 002's "cross-modal attention", reimplemented as a comparison row.

    A ``TransformerEncoder`` over the 4-token sequence ``[zero CLS, pooled image vector, zero CLS, pooled text
    vector]`` (seed defaults: 6 layers, 8 heads), with a linear ITM head on the first output. It sees only the
    two pooled vectors, without positional or modality embeddings, so it cannot relate words to image regions
    and cannot even tell which vector is the image: swapping image and text gives the same logit.
    The seed used ``embed_dim=512`` with PyTorch's default feed-forward width 2048 = 4 x 512; the feed-forward
    width here keeps that ratio.

    Args:
        embed_dim: size of the pooled CLIP embeddings.
        num_heads: attention heads (seed: 8).
        num_layers: encoder layers (seed: 6).
    """

    def __init__(self, embed_dim: int, num_heads: int = 8, num_layers: int = 6):
        super().__init__()
        self.config = {"embed_dim": embed_dim, "num_heads": num_heads, "num_layers": num_layers}  # as the matcher's
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
