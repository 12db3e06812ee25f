"""CLIP's symmetric contrastive loss against hand computations and against open_clip's ``ClipLoss``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.losses import clip_contrastive_loss


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
