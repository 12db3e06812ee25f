"""CLIP's symmetric contrastive loss against hand computations and against open_clip's ``ClipLoss``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.losses import clip_contrastive_loss, multi_positive_contrastive_loss
from course_utils.metrics import same_value_mask


def test_two_pairs_by_hand():
    # Orthonormal pairs and logit scale log(1): S = identity, so every row's softmax is (e, 1) / (e + 1).
    features = torch.eye(2)
    loss = clip_contrastive_loss(features, features, torch.tensor(0.0))
    expected = -math.log(math.e / (math.e + 1))  # = log(1 + e^-1) ≈ 0.3133, same in both directions
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_three_pairs_by_hand_is_asymmetric_per_direction():
    # Unit vectors in 2-D at 0°, 90°, 180° for images; texts at 0°, 90°, 90°.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    scale = 2.0  # logit_scale = log 2: logits are 2 x cosine
    # S[i, j] = 2 cos(image i, text j):
    #   image 0: [ 2, 0, 0]   image 1: [0, 2, 2]   image 2: [-2, 0, 0]
    e = math.exp
    image_to_text = [
        -math.log(e(2) / (e(2) + 2)),  # image 0 picks text 0
        -math.log(e(2) / (2 * e(2) + 1)),  # image 1 picks text 1 (text 2 is as close)
        -math.log(e(0) / (e(-2) + 2)),  # image 2 picks text 2
    ]
    # Columns of S (text j against images): text 0: [2, 0, -2]; text 1: [0, 2, 0]; text 2: [0, 2, 0].
    text_to_image = [
        -math.log(e(2) / (e(2) + 1 + e(-2))),  # text 0 picks image 0
        -math.log(e(2) / (e(2) + 2)),  # text 1 picks image 1
        -math.log(e(0) / (e(2) + 2)),  # text 2 picks image 2 (image 1 scores higher)
    ]
    expected = (sum(image_to_text) / 3 + sum(text_to_image) / 3) / 2
    loss = clip_contrastive_loss(images, texts, torch.tensor(math.log(scale)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_matches_open_clip_clip_loss():
    from open_clip.loss import ClipLoss

    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    logit_scale = torch.tensor(math.log(1 / 0.07))
    ours = clip_contrastive_loss(images, texts, logit_scale)
    theirs = ClipLoss()(images, texts, logit_scale.exp())  # open_clip takes the exponentiated scale
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)


def test_symmetric_in_its_arguments_and_gradient_flows_to_the_scale():
    generator = torch.Generator().manual_seed(1)
    images = F.normalize(torch.randn(5, 4, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(5, 4, generator=generator), dim=-1)
    scale = torch.tensor(1.0, requires_grad=True)
    loss = clip_contrastive_loss(images, texts, scale)
    assert loss.item() == pytest.approx(clip_contrastive_loss(texts, images, scale).item(), abs=1e-6)
    loss.backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)


def test_perfect_alignment_with_a_sharp_temperature_costs_almost_nothing():
    features = torch.eye(4)
    assert clip_contrastive_loss(features, features, torch.tensor(math.log(100.0))).item() < 1e-6


# --- multi-positive contrastive loss (identical titles in one batch) ---------------------------------------------


def naive_multi_positive_loss(images, texts, logit_scale, positives):
    """Loop over rows and columns: -mean over positives of log softmax, both directions (UniCL)."""
    similarity = logit_scale.exp() * images @ texts.T
    size = len(images)
    image_to_text = text_to_image = 0.0
    for i in range(size):
        log_p = torch.log_softmax(similarity[i], dim=0)
        matches = [j for j in range(size) if positives[i, j]]
        image_to_text += -sum(log_p[j] for j in matches) / len(matches)
    for j in range(size):
        log_p = torch.log_softmax(similarity[:, j], dim=0)
        matches = [i for i in range(size) if positives[i, j]]
        text_to_image += -sum(log_p[i] for i in matches) / len(matches)
    return (image_to_text / size + text_to_image / size) / 2


def random_pairs(seed: int, size: int = 7, dim: int = 5):
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(size, dim, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(size, dim, generator=generator), dim=-1)
    return images, texts


def test_multi_positive_with_distinct_groups_is_clip_loss():
    images, texts = random_pairs(0)
    logit_scale = torch.tensor(math.log(1 / 0.07))
    positives = same_value_mask(range(len(images)), range(len(images)))
    ours = multi_positive_contrastive_loss(images, texts, logit_scale, positives)
    assert ours.item() == pytest.approx(clip_contrastive_loss(images, texts, logit_scale).item(), abs=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_multi_positive_matches_a_naive_loop(seed):
    images, texts = random_pairs(seed)
    groups = [0, 1, 0, 2, 1, 0, 3]
    positives = same_value_mask(groups, groups)
    positives[3, 6] = True  # caption 6 also describes image 3, not the reverse: the mask need not be symmetric
    logit_scale = torch.tensor(1.5)
    ours = multi_positive_contrastive_loss(images, texts, logit_scale, positives)
    assert ours.item() == pytest.approx(
        naive_multi_positive_loss(images, texts, logit_scale, positives).item(), abs=1e-6
    )


def test_multi_positive_by_hand_two_identical_titles():
    # Two images with the same title and orthogonal features, scale 1: S = identity, every caption is right for both.
    features = torch.eye(2)
    positives = same_value_mask([5, 5], [5, 5])
    loss = multi_positive_contrastive_loss(features, features, torch.tensor(0.0), positives)
    # Each row: softmax (e, 1)/(e + 1); target (1/2, 1/2): -(log(e/(e+1)) + log(1/(e+1))) / 2 = log(e + 1) - 1/2.
    assert loss.item() == pytest.approx(math.log(math.e + 1) - 0.5, abs=1e-6)
    # Plain CLIP loss would push the second item away although its caption is identical.
    assert clip_contrastive_loss(features, features, torch.tensor(0.0)).item() < loss.item()


def test_multi_positive_pulls_identical_titles_together_where_clip_pushes_them_apart():
    # Captions are the basis vectors, so image i's feature k is its similarity to caption k (times the scale):
    # the gradient on images[1, 0] is the gradient on the (image 1, caption 0) logit.
    images, _ = random_pairs(4, size=4, dim=4)
    texts = torch.eye(4)
    positives = same_value_mask([0, 0, 1, 2], [0, 0, 1, 2])  # items 0 and 1 share a title
    gradients = {}
    for name, loss_of in {
        "multi": lambda x: multi_positive_contrastive_loss(x, texts, torch.tensor(2.0), positives),
        "clip": lambda x: clip_contrastive_loss(x, texts, torch.tensor(2.0)),
    }.items():
        features = images.clone().requires_grad_(True)
        loss_of(features).backward()
        gradients[name] = features.grad[1, 0].item()
    assert gradients["multi"] < 0 < gradients["clip"]  # descent raises that similarity only with multi-positive


def test_multi_positive_rejects_a_mask_without_the_diagonal():
    images, texts = random_pairs(5, size=3)
    with pytest.raises(ValueError, match="diagonal"):
        multi_positive_contrastive_loss(images, texts, torch.tensor(0.0), torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(3, 3\) bool"):
        multi_positive_contrastive_loss(images, texts, torch.tensor(0.0), torch.ones(3, 3))
