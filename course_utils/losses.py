"""Losses of the course, written to be read (each notebook shows the one it teaches with ``inspect.getsource``).

- :func:`clip_contrastive_loss` — CLIP's symmetric InfoNCE, seed 002's ``(CE(S) + CE(Sᵀ)) / 2`` (notebook 02).
- :func:`clip_contrastive_loss_local` — one rank's share of it when the batch is split over processes (notebook 08).
- :func:`multi_positive_contrastive_loss` — the same with several correct captions per image (identical product
  titles in one batch are not negatives).
- :func:`composed_classification_loss` — each composed query must pick its target among the batch's targets
  (TIRG, CLIP4Cir; notebook 06).
- :func:`soft_triplet_loss` — seed 004's soft triplet over the batch, a simplification of TIRG's (notebook 06).
- :func:`triplet_margin_loss` — CRL's triplet loss with margin 0.3 on conditional embeddings (notebook 05).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric contrastive loss over a batch of matching (image, text) pairs.

    Args:
        image_features: ``(B, d)`` L2-normalised image embeddings; row i matches text i.
        text_features: ``(B, d)`` L2-normalised text embeddings.
        logit_scale: CLIP's learned log inverse temperature (scalar); similarities are scaled by its exp.

    Returns:
        Scalar: mean of image->text and text->image cross-entropy, the correct pair being the diagonal.
    """
    similarity = logit_scale.exp() * image_features @ text_features.T  # S[i, j] = sim(image i, text j)
    labels = torch.arange(similarity.shape[0], device=similarity.device)
    image_to_text = F.cross_entropy(similarity, labels)  # each image must pick its own caption
    text_to_image = F.cross_entropy(similarity.T, labels)  # each caption must pick its own image
    return (image_to_text + text_to_image) / 2


def clip_contrastive_loss_local(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    all_image_features: torch.Tensor,
    all_text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    offset: int,
) -> torch.Tensor:
    """One rank's share of :func:`clip_contrastive_loss` over a global batch split across ranks (notebook 08).

    Each rank scores only its own rows against every rank's features (open_clip's ``local_loss``): a
    ``(b, B)`` block of the ``(B, B)`` similarity matrix instead of all of it. The mean of the ranks' values
    equals the global-batch loss, and so do the averaged gradients when ``all_*`` come from
    ``distributed.gather_with_grad``.

    Args:
        image_features, text_features: ``(b, d)`` this rank's L2-normalised embeddings.
        all_image_features, all_text_features: ``(B, d)`` every rank's embeddings, in global batch order.
        logit_scale: CLIP's learned log inverse temperature.
        offset: global row of this rank's first pair (``rank * b``).

    Returns:
        Scalar: mean of image->text and text->image cross-entropy over this rank's rows.
    """
    scale = logit_scale.exp()
    image_to_text = scale * image_features @ all_text_features.T  # (b, B): my images against every caption
    text_to_image = scale * text_features @ all_image_features.T  # (b, B): my captions against every image
    labels = offset + torch.arange(image_features.shape[0], device=image_features.device)
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels)) / 2


def multi_positive_contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric contrastive loss when a caption can match several images of the batch (real catalogues).

    Many products share a title ("Nike Men Black T-shirt"); with plain CLIP loss the other items of that title are
    pushed away as negatives although the caption describes them too. Here every correct pair is a positive: each
    image's target is the uniform distribution over its positive captions and each caption's target the uniform
    distribution over its positive images (UniCL's multi-positive cross-entropy). When the only positives are the
    diagonal pairs this is exactly :func:`clip_contrastive_loss`.

    Args:
        image_features: ``(B, d)`` L2-normalised image embeddings.
        text_features: ``(B, d)`` L2-normalised text embeddings; caption i was drawn for image i.
        logit_scale: CLIP's learned log inverse temperature (scalar).
        positives: ``(B, B) bool``, ``[i, j]`` True when caption j describes image i; the diagonal must be True
            (e.g. ``course_utils.metrics.same_value_mask(titles, titles)``).

    Returns:
        Scalar: mean of the image->text and text->image soft-target cross-entropies.
    """
    size = image_features.shape[0]
    if positives.shape != (size, size) or positives.dtype != torch.bool:
        raise ValueError(
            f"positives must be a ({size}, {size}) bool matrix, got {tuple(positives.shape)} {positives.dtype}"
        )
    if not positives.diagonal().all():
        raise ValueError("positives must be True on the diagonal: caption i was drawn for image i")
    similarity = logit_scale.exp() * image_features @ text_features.T  # S[i, j] = sim(image i, text j)
    targets = positives.to(similarity.dtype)
    image_to_text = F.cross_entropy(
        similarity, targets / targets.sum(dim=1, keepdim=True)
    )  # rows: spread over positives
    text_to_image = F.cross_entropy(similarity.T, targets.T / targets.T.sum(dim=1, keepdim=True))
    return (image_to_text + text_to_image) / 2


# --- composed image+text retrieval (notebook 06) ---------------------------------------------------------------


def _other_matches(groups: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    """``(B, B) bool``: column j is a *different* batch row whose target matches row i's (same group id)."""
    if groups is None:
        return torch.zeros(size, size, dtype=torch.bool, device=device)
    same = groups[:, None] == groups[None, :]
    return same & ~torch.eye(size, dtype=torch.bool, device=device)


def composed_classification_loss(
    queries: torch.Tensor, targets: torch.Tensor, scale: float, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """TIRG's batch-based classification loss: composed query i must pick target i among the batch's targets.

    Args:
        queries: ``(B, d)`` L2-normalised composed queries.
        targets: ``(B, d)`` L2-normalised target image features; row i is query i's target.
        scale: inverse temperature applied to the cosine similarities.
        groups: optional ``(B,)`` ids; targets j != i with query i's group also match it, so they are masked
            out (neither positive nor negative) instead of being pushed away.

    Returns:
        Scalar: mean cross-entropy of the ``(B, B)`` logits with the diagonal as labels.
    """
    logits = scale * queries @ targets.T  # logits[i, j] = scale * cos(query i, target j)
    logits = logits.masked_fill(_other_matches(groups, len(queries), logits.device), float("-inf"))
    labels = torch.arange(len(queries), device=logits.device)
    return F.cross_entropy(logits, labels)


def soft_triplet_loss(queries: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Seed 004's soft triplet loss: ``log(1 + exp(d(q_i, t_i) - d(q_i, t_j)))``, mean over every in-batch triplet.

    ``d`` is the squared Euclidean distance between the (unit) vectors as given. Every in-batch target ``t_j``
    (j != i, not in query i's group) is a negative of query i; the loss is the mean over all (i, j). Seed 004 samples
    3 random triplets per anchor instead, which has the same expectation but is not deterministic. TIRG's soft
    triplet (which ComposeAE's code shares; both trained on Fashion200k with the classification loss instead) is
    wider: the queries and the targets are all anchors, any item of another label is a negative, 3 are sampled
    per anchor, and the vectors are scaled by a learned factor (4 at the start) before the distances.

    Args:
        queries: ``(B, d)`` composed queries.
        targets: ``(B, d)`` target features; row i is query i's target.
        groups: optional ``(B,)`` ids; targets of query i's group are not used as its negatives.

    Returns:
        Scalar loss.
    """
    distances = (queries[:, None, :] - targets[None, :, :]).pow(2).sum(-1)  # (B, B) ||q_i - t_j||^2
    positive = distances.diagonal()[:, None]  # (B, 1) distance to the own target
    negatives = ~torch.eye(len(queries), dtype=torch.bool, device=distances.device)
    negatives &= ~_other_matches(groups, len(queries), distances.device)
    if not negatives.any():  # every target in the batch matches every query: nothing to contrast
        return distances.sum() * 0.0
    return F.softplus(positive - distances)[negatives].mean()  # softplus(x) = log(1 + exp(x))


def triplet_margin_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    """CRL's / ASEN's triplet ranking loss on cosine similarity (notebook 05).

    ``mean(max(0, margin - cos(anchor, positive) + cos(anchor, negative)))``: the positive must be closer to the
    anchor than the negative by at least ``margin`` (CRL: 0.3, ``nn.MarginRankingLoss`` on cosine similarities).

    Args:
        anchor, positive, negative: ``(B, e)`` embeddings; row i is one triplet.
        margin: required gap between the two cosine similarities.

    Returns:
        Scalar loss; 0 once every triplet is ordered with the margin.
    """
    positive_similarity = F.cosine_similarity(anchor, positive, dim=-1)
    negative_similarity = F.cosine_similarity(anchor, negative, dim=-1)
    return F.relu(margin - positive_similarity + negative_similarity).mean()
