"""Compositors return unit-norm (B, d) queries; the composed-retrieval losses match hand computations."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.losses import composed_classification_loss, soft_triplet_loss
from course_utils.models.compositors import (
    COMPOSITORS,
    ComplexRotation,
    compose,
    make_compositor,
)

DIM, BATCH = 8, 5


def _features(seed: int, rows: int = BATCH, dim: int = DIM) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("name", list(COMPOSITORS))
def test_every_compositor_returns_unit_norm_queries(name):
    compositor = make_compositor(name, DIM, hidden=16, seed=0).eval()
    query = compositor(_features(0), _features(1))
    assert query.shape == (BATCH, DIM)
    assert torch.allclose(query.norm(dim=-1), torch.ones(BATCH), atol=1e-5)
    assert compose(compositor, _features(0), _features(1), batch_size=2).shape == (BATCH, DIM)


def test_baselines_are_what_they_say():
    image, text = _features(0), _features(1)
    assert torch.allclose(make_compositor("image only", DIM)(image, text), image)
    assert torch.allclose(make_compositor("text only", DIM)(image, text), text)
    assert torch.allclose(make_compositor("sum", DIM)(image, text), F.normalize(image + text, dim=-1))
    assert not any(True for _ in make_compositor("sum", DIM).parameters())


def test_same_seed_gives_same_weights_and_unknown_names_fail():
    a, b = make_compositor("TIRG", DIM, hidden=16, seed=3), make_compositor("TIRG", DIM, hidden=16, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="unknown compositor"):
        make_compositor("magic", DIM)


def test_complex_rotation_conjugate_rotates_the_other_way():
    model = ComplexRotation(DIM, hidden=16, dropout=0.0).eval()
    with torch.no_grad():  # zero angles: conjugation changes nothing
        model.angle[-1].weight.zero_()
        model.angle[-1].bias.zero_()
    image, text = _features(0), _features(1)
    assert torch.allclose(model(image, text), model(image, text, conjugate=True))
    with torch.no_grad():
        model.angle[-1].bias.fill_(0.7)  # non-zero angles: +delta and -delta differ
    assert not torch.allclose(model(image, text), model(image, text, conjugate=True))


def test_tirg_is_a_weighted_gated_image_plus_a_weighted_residual():
    model = make_compositor("TIRG", 2, hidden=4, seed=0)
    with torch.no_grad():  # zeroed last layers: the gate and the residual become constants (their biases)
        model.gate[-1].weight.zero_()
        model.gate[-1].bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # sigmoid -> [0.5, 0.75]
        model.residual[-1].weight.zero_()
        model.residual[-1].bias.copy_(torch.tensor([1.0, -1.0]))
        image, text = torch.tensor([[0.6, 0.8]]), torch.tensor([[1.0, 0.0]])
        model.weights.copy_(torch.tensor([1.0, 0.0]))  # gate only: [0.5 * 0.6, 0.75 * 0.8] = [0.3, 0.6]
        assert torch.allclose(model(image, text), torch.tensor([[1.0, 2.0]]) / math.sqrt(5.0))
        model.weights.copy_(torch.tensor([2.0, 0.5]))  # 2 * [0.3, 0.6] + 0.5 * [1, -1] = [1.1, 0.7]
        assert torch.allclose(model(image, text), torch.tensor([[1.1, 0.7]]) / math.sqrt(1.7))


def test_combiner_mixes_text_and_image_with_the_learned_weight_plus_its_output():
    model = make_compositor("Combiner (CLIP4Cir)", 2, hidden=8, seed=0)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
        model.mixing[-2].weight.zero_()
        model.mixing[-2].bias.fill_(math.log(3.0))  # lam = sigmoid(log 3) = 0.75
        image, text = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        # 0.75 * text + 0.25 * image = [0.25, 0.75]
        assert torch.allclose(model(image, text), torch.tensor([[1.0, 3.0]]) / math.sqrt(10.0))
        model.out.bias.copy_(torch.tensor([0.5, -0.5]))  # out(...) adds its bias: [0.75, 0.25]
        assert torch.allclose(model(image, text), torch.tensor([[3.0, 1.0]]) / math.sqrt(10.0))


def test_compose_runs_in_eval_mode_even_on_a_compositor_left_in_train_mode():
    image, text = _features(0), _features(1)
    compositor = make_compositor("TIRG", DIM, hidden=16, dropout=0.5, seed=0)  # modules are built in train mode
    with torch.no_grad():
        assert not torch.allclose(compositor(image, text), compositor(image, text))  # dropout is active
        reference = copy.deepcopy(compositor).eval()(image, text)
    assert torch.allclose(compose(compositor.train(), image, text, batch_size=2), reference, atol=1e-6)


def test_soft_triplet_loss_matches_hand_computation():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    # d(q0,t0) = 0.4² + 0.8² = 0.8, d(q0,t1) = 0; d(q1,t1) = 1 + 1 = 2, d(q1,t0) = 0.6² + 0.2² = 0.4
    expected = (math.log(1 + math.exp(0.8 - 0.0)) + math.log(1 + math.exp(2.0 - 0.4))) / 2
    assert soft_triplet_loss(queries, targets).item() == pytest.approx(expected, rel=1e-6)


def test_soft_triplet_loss_skips_negatives_that_match_the_target():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    # rows 0 and 2 share a group: (0, 2) and (2, 0) are not triplets; left: (0,1), (1,0), (1,2), (2,1)
    d = (queries[:, None] - targets[None]).pow(2).sum(-1)
    pairs = [(0, 1), (1, 0), (1, 2), (2, 1)]
    expected = sum(math.log(1 + math.exp(d[i, i] - d[i, j])) for i, j in pairs) / len(pairs)
    groups = torch.tensor([5, 7, 5])
    assert soft_triplet_loss(queries, targets, groups).item() == pytest.approx(expected, rel=1e-6)
    assert soft_triplet_loss(queries, targets, torch.tensor([1, 1, 1])).item() == 0.0  # no negatives at all


def test_classification_loss_matches_hand_computation():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    # logits = 2 * [[0.6, 1.0], [0.8, 0.0]]; labels on the diagonal
    row0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(2.0)))
    row1 = -math.log(math.exp(0.0) / (math.exp(1.6) + math.exp(0.0)))
    assert composed_classification_loss(queries, targets, 2.0).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # same group: the other target is masked out, each row only sees its own target -> loss 0
    assert composed_classification_loss(queries, targets, 2.0, torch.tensor([0, 0])).item() == pytest.approx(0.0)
