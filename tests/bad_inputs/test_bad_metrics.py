"""Issue 15, metrics: float cut-offs are refused instead of floored, and graded relevances (0.5) are refused
instead of counted as relevant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils import metrics

SIMILARITY = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
RELEVANT = torch.tensor([[True, False, False], [False, False, True]])


@pytest.mark.parametrize("ks", [(2.5,), (1, 2.0), 1.5, (True,)])
def test_float_or_bool_cut_offs_are_refused(ks):
    with pytest.raises(ValueError, match=r"each k in ks must be a whole number \(an int\), got"):
        metrics.recall_at_k(SIMILARITY, RELEVANT, ks=ks)


@pytest.mark.parametrize(
    "call",
    [
        lambda: metrics.full_gallery_recall(torch.eye(3), torch.eye(3), torch.arange(3), ks=(1.5,)),
        lambda: metrics.composed_recall(SIMILARITY, RELEVANT, ks=(2.5,)),
        lambda: metrics.attribute_match_recall(SIMILARITY, [{"c": 1}] * 2, [{"c": 1}] * 3, ks=(1.0,)),
        lambda: metrics.recall_vs_gallery_size(torch.eye(3), torch.eye(3), sizes=(3,), k=2.5),
    ],
    ids=["full_gallery_recall", "composed_recall", "attribute_match_recall", "recall_vs_gallery_size"],
)
def test_every_recall_refuses_float_cut_offs(call):
    with pytest.raises(ValueError, match="must be a whole number"):
        call()


@pytest.mark.parametrize(
    ("args", "name"), [((2.5, 10), "k"), ((2, 10.0), "gallery_size"), ((2, 10, 1.5), "n_relevant")]
)
def test_chance_recall_refuses_floats(args, name):
    with pytest.raises(ValueError, match=rf"{name} must be a whole number"):
        metrics.chance_recall(*args)


def test_numpy_integer_cut_offs_are_accepted():
    assert metrics.recall_at_k(SIMILARITY, RELEVANT, ks=np.array([1, 2])) == {1: 0.5, 2: 1.0}


@pytest.mark.parametrize("value", [0.5, 2.0, float("nan")])
def test_graded_relevances_are_refused_naming_the_cell(value):
    relevant = RELEVANT.float()
    relevant[1, 2] = value
    with pytest.raises(ValueError, match=r"relevant must be boolean \(or 0/1\), got .* at \[1, 2\]; threshold"):
        metrics.recall_at_k(SIMILARITY, relevant, ks=(1,))
    with pytest.raises(ValueError, match=r"relevant must be boolean \(or 0/1\)"):
        metrics.average_precisions(SIMILARITY, relevant)
    with pytest.raises(ValueError, match=r"relevant must be boolean \(or 0/1\)"):
        metrics.composed_recall(SIMILARITY, relevant, ks=(1,))


def test_zero_one_relevances_equal_booleans():
    """By hand: query 0's relevant item ranks 1st, query 1's ranks 2nd -> R@1 = 0.5, AP = (1 + 1/2) / 2."""
    for relevant in (RELEVANT, RELEVANT.float(), RELEVANT.int().numpy(), RELEVANT.tolist()):
        assert metrics.recall_at_k(SIMILARITY, relevant, ks=(1, 2)) == {1: 0.5, 2: 1.0}
        np.testing.assert_allclose(metrics.average_precisions(SIMILARITY, relevant), [1.0, 0.5])


def test_nan_scores_are_refused():
    """Already answered well before issue 15; kept here so the suite lists every bad metric input."""
    with pytest.raises(ValueError, match="similarity contains NaN"):
        metrics.recall_at_k(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), ks=(1,))
