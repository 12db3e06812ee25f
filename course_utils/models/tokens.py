"""Token-level features of open_clip's towers: the one wrapper around ``forward_intermediates``.

A dual encoder compares pooled vectors; the re-ranker of notebook 03 and the ASEN-style head of notebook 05 need
what comes before the pooling: the image's class and patch tokens and the caption's token states. These functions
run the towers once and return those tokens (keeping gradients, so models that tune the towers can use them);
``course_utils.embed`` batches and caches them for frozen encoders.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def require_token_features(model: nn.Module) -> None:
    """Raise ``TypeError`` unless ``model`` is an open_clip CLIP with ``forward_intermediates`` (token outputs)."""
    if not hasattr(model, "forward_intermediates"):
        raise TypeError(
            "token-level features come from open_clip's model.forward_intermediates; load the model through "
            "open_clip (e.g. model='ViT-B-32', pretrained='openai'), not the 'clip:' package"
        )


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


def image_token_features(
    model: nn.Module, images: torch.Tensor, block_from_end: int = 1, class_token: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens of one vision-tower block, and the pooled embeddings, of a batch of images (keeps gradients).

    The class token comes first, as in the ViT outputs ALBEF and BLIP cross-attend to: CLIP trains only the pooled
    class token, so it is the token that summarises the whole garment; the patch tokens say where things are.
    A convolutional tower (a timm tower through open_clip, e.g. ``photo-clip-resnet18``) has no class token: its
    "patch tokens" are the cells of the block's feature map (row by row) and its summary token is their average —
    what the tower's average pooling hands to its projection.

    Args:
        model: an open_clip CLIP model (a ViT or a timm convolutional image tower).
        images: ``(n, 3, H, W)`` preprocessed images.
        block_from_end: 1 = last transformer block (or convolutional stage), 2 = penultimate, ...
        class_token: put the class (summary) token before the patch tokens (False: patch tokens only).

    Returns:
        ``(n, [1 +] P, D_image)`` tokens (final LayerNorm applied to a ViT's) and ``(n, embed_dim)``
        L2-normalised embeddings.
    """
    require_token_features(model)
    if _is_convolutional(model):
        out = model.forward_intermediates(
            image=images, image_indices=block_from_end, image_output_fmt="NCHW", normalize=True
        )
        patches = out["image_intermediates"][0].flatten(2).transpose(1, 2)  # (n, rows * cols, channels)
        summary = patches.mean(dim=1, keepdim=True)
        return (torch.cat([summary, patches], dim=1) if class_token else patches), out["image_features"]
    out = model.forward_intermediates(
        image=images,
        image_indices=block_from_end,
        normalize_intermediates=True,
        image_output_fmt="NLC",
        normalize=True,
        image_output_extra_tokens=class_token,
    )
    patches = out["image_intermediates"][0]  # the oldest of the last ``block_from_end`` blocks
    if not class_token:
        return patches, out["image_features"]
    if "image_intermediates_prefix" not in out:
        raise TypeError("the class token needs a ViT image tower with a class token (e.g. ViT-B-32)")
    return torch.cat([out["image_intermediates_prefix"][0], patches], dim=1), out["image_features"]


def _is_convolutional(model: nn.Module) -> bool:
    """True for an open_clip timm image tower without a class token (a CNN such as resnet18)."""
    trunk = getattr(model.visual, "trunk", None)
    return trunk is not None and not getattr(trunk, "num_prefix_tokens", 0) and not hasattr(trunk, "cls_token")


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
    require_token_features(model)
    out = model.forward_intermediates(text=token_ids, text_indices=1, normalize_intermediates=True, normalize=True)
    return out["text_intermediates"][-1], text_padding_mask(token_ids), out["text_features"]


def patch_grid(model: nn.Module, n_patches: int) -> tuple[int, int]:
    """``(rows, cols)`` of the vision tower's patch grid (token ``r * cols + c`` is patch ``(r, c)``).

    A ViT states its grid; otherwise (a convolutional tower, a feature map of another block) the grid is the
    factorisation ``rows x cols = n_patches`` whose shape is closest to the input image's (e.g. 3 x 2 cells for a
    80 x 60 photo at stride 32).
    """
    grid = getattr(model.visual, "grid_size", None)
    if grid is not None and grid[0] * grid[1] == n_patches:
        return int(grid[0]), int(grid[1])
    size = getattr(model.visual, "image_size", None) or 1
    height, width = (size, size) if isinstance(size, int) else size
    shapes = [(rows, n_patches // rows) for rows in range(1, n_patches + 1) if n_patches % rows == 0]
    return min(shapes, key=lambda shape: abs(math.log(shape[0] / shape[1]) - math.log(height / width)))
