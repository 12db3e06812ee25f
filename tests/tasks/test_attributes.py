"""Tests of course_utils.models.conditional: CRL's basis, projection, heads, two-stage freezing, triplets, mAP."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from course_utils import embed
from course_utils.data import Catalogue, ConditionSplit, Item
from course_utils.losses import triplet_margin_loss
from course_utils.models import conditional as cond
from course_utils.tasks import attributes as attrs
from course_utils.train import TrainConfig, fit

# ------------------------------------------------------------------------------------------------ basis and projection


def test_pca_basis_shape_and_naive_reference():
    generator = torch.Generator().manual_seed(0)
    words = torch.nn.functional.normalize(torch.randn(10, 16, generator=generator), dim=-1)
    basis = attrs.pca_basis(words, 4)
    assert basis.shape == (4, 16) and basis.dtype == torch.float32
    # CRL's PCA treats the d coordinates as samples: centre each word's column, SVD, keep U * S.
    samples = words.double().T  # (d, m)
    centred = samples - samples.mean(dim=0, keepdim=True)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    reference = (u[:, :4] * s[:4]).T.float()  # (k, d), each row up to sign
    for row, ref in zip(basis, reference, strict=True):
        sign = torch.sign(torch.dot(row, ref))
        torch.testing.assert_close(row, sign * ref, atol=1e-5, rtol=1e-4)


def test_pca_basis_keeps_a_list_of_exactly_k_words_and_rejects_too_many_components():
    words = torch.eye(3, 5)
    torch.testing.assert_close(attrs.pca_basis(words, 3), words)
    with pytest.raises(ValueError, match="n_components"):
        attrs.pca_basis(words, 4)


def test_build_criterion_bases_uses_the_smallest_word_count(tiny_bundle, isolated_cache):
    descriptors = {"colour": ["red", "blue", "green", "black", "white"], "pattern": ["striped", "dotted", "plain"]}
    bases = attrs.build_criterion_bases(tiny_bundle, descriptors, "a photo of a {word} garment")
    assert bases.criteria == ["colour", "pattern"]
    assert bases.bases.shape == (2, 3, tiny_bundle.embed_dim)
    assert bases.word_counts == {"colour": 5, "pattern": 3}
    # the smallest list is used as it is: its rows are its normalised word embeddings
    torch.testing.assert_close(bases["pattern"].norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match="fabric"):
        bases.index("fabric")


def test_conditional_projection_hand_made():
    features = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    basis = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    # coordinates [[1, 1], [0, 2]] -> normalised
    expected = torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0]])
    torch.testing.assert_close(cond.conditional_projection(features, basis), expected)
    # one basis per row gives the same as the shared basis
    torch.testing.assert_close(cond.conditional_projection(features, basis.expand(2, 2, 3)), expected)
    # a basis per row: row 1 projected on a different basis
    other = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mixed = cond.conditional_projection(features, torch.stack([basis, other]))
    torch.testing.assert_close(mixed, torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [1.0, 0.0]]))


# ------------------------------------------------------------------------------------------------ heads


def test_criterion_heads_route_each_row_to_its_criterion():
    torch.manual_seed(0)
    heads = cond.CriterionHeads(n_criteria=3, in_dim=4, out_dim=6).eval()
    x = torch.randn(5, 4)
    criterion = torch.tensor([2, 0, 2, 1, 0])
    out = heads(x, criterion)
    assert out.shape == (5, 6)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))
    for i in range(5):
        expected = torch.nn.functional.normalize(heads.heads[int(criterion[i])](x[i : i + 1]), dim=-1)
        torch.testing.assert_close(out[i : i + 1], expected)


def test_criterion_heads_skip_a_lone_row_in_training_like_crl():
    torch.manual_seed(0)
    heads = cond.CriterionHeads(n_criteria=2, in_dim=4, out_dim=3).train()
    out = heads(torch.randn(3, 4), torch.tensor([0, 0, 1]))
    assert torch.equal(out[2], torch.zeros(3))  # BatchNorm cannot normalise one row
    assert torch.all(out[:2].norm(dim=-1) > 0.99)


# ------------------------------------------------------------------------------------------------ two-stage freezing


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: torch.nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


@pytest.fixture
def crl_setup(tiny_bundle, small_catalogue):
    torch.manual_seed(0)
    train = small_catalogue.split("train")
    conditions = ["colour", "pattern"]
    d = tiny_bundle.embed_dim
    bases = torch.nn.functional.normalize(torch.randn(2, 4, d), dim=-1)
    model = cond.CRL(bases, cond.CriterionHeads(2, 4, 8), image_tower=copy.deepcopy(tiny_bundle.model.visual))
    triplets = attrs.sample_condition_triplets(train, conditions, n_triplets=16, seed=0)
    return model, train, triplets


def test_stage_one_trains_heads_only(crl_setup):
    model, train, triplets = crl_setup
    features = torch.nn.functional.normalize(torch.randn(len(train), model.bases.shape[-1]), dim=-1)
    heads_before, tower_before = _state(model.heads), _state(model.image_tower)
    attrs.train_crl_stage(
        model, 1, triplets, TrainConfig(batch_size=8, max_steps=1, lr=1e-2, seed=0), features=features, progress=False
    )
    assert _changed(tower_before, model.image_tower) == []
    changed = _changed(heads_before, model.heads)
    assert any(k.endswith("weight") for k in changed) and any(k.endswith("running_mean") for k in changed)
    assert all(not p.requires_grad for p in model.image_tower.parameters())


def test_stage_two_trains_the_image_tower_and_leaves_heads_untouched(crl_setup, tiny_bundle):
    model, train, triplets = crl_setup
    bases_before, heads_before, tower_before = model.bases.clone(), _state(model.heads), _state(model.image_tower)
    attrs.train_crl_stage(
        model,
        2,
        triplets,
        TrainConfig(batch_size=8, max_steps=1, lr=1e-3, seed=0),
        catalogue=train,
        preprocess=tiny_bundle.preprocess,
        progress=False,
    )
    assert _changed(heads_before, model.heads) == []  # weights AND BatchNorm running statistics
    assert torch.equal(model.bases, bases_before)
    assert len(_changed(tower_before, model.image_tower)) > 0
    model.train()
    assert not model.heads.training and model.image_tower.training


def test_set_stage_rejects_impossible_stages():
    model = cond.CRL(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="no heads"):
        model.set_stage(1)
    with pytest.raises(ValueError, match="image_tower"):
        cond.CRL(torch.randn(2, 3, 5), cond.CriterionHeads(2, 3, 4)).set_stage(2)


# ------------------------------------------------------------------------------------------------ triplets and loss


def test_sample_condition_triplets_follow_the_condition(small_catalogue):
    train = small_catalogue.split("train")
    conditions = ["colour", "sleeve"]
    triplets = attrs.sample_condition_triplets(train, conditions, n_triplets=200, seed=1)
    assert triplets.shape == (200, 4)
    for anchor, positive, negative, c in triplets.tolist():
        name = conditions[c]
        value = train[anchor].attributes[name]
        assert anchor != positive and train[positive].attributes[name] == value
        assert train[negative].attributes[name] != value
    assert set(triplets[:, 3].tolist()) == {0, 1}
    assert torch.equal(triplets, attrs.sample_condition_triplets(train, conditions, n_triplets=200, seed=1))


def test_triplet_margin_loss_hand_computed():
    anchor = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    positive = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # cos 1, cos 0
    negative = torch.tensor([[0.0, 3.0], [1.0, 0.0]])  # cos 0, cos 1
    # triplet 1: max(0, 0.3 - 1 + 0) = 0; triplet 2: max(0, 0.3 - 0 + 1) = 1.3
    assert triplet_margin_loss(anchor, positive, negative, 0.3).item() == pytest.approx(0.65)


# ------------------------------------------------------------------------------------------------ ASEN-style head


def test_asen_style_head_shapes_and_attention():
    torch.manual_seed(0)
    head = cond.ASENStyleHead(n_conditions=3, token_dim=16, embed_dim=8, condition_dim=4, common_dim=8).eval()
    tokens, condition = torch.randn(5, 9, 16), torch.tensor([0, 1, 2, 0, 1])
    attention = head.attention(tokens, condition)
    assert attention.shape == (5, 9)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(5))
    out = head(tokens, condition)
    assert out.shape == (5, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))
    # the condition changes the embedding of the same image
    assert not torch.allclose(head(tokens[:1], torch.tensor([0])), head(tokens[:1], torch.tensor([1])))


def test_patch_tokens_of_the_tiny_clip(tiny_bundle, small_catalogue):
    subset = small_catalogue.split("test").subset(small_catalogue.split("test").ids[:3])
    tokens = embed.patch_tokens(tiny_bundle, subset, progress=False)
    assert tokens.shape == (3, 64, 128)  # 64 px / patch 8 -> 8 x 8 patches, width 128


# ------------------------------------------------------------------------------------------------ mAP protocol


def _item(item_id: str, **attributes) -> Item:
    return Item(item_id, ("x",), ("title",), attributes, "test")


def test_evaluate_attribute_retrieval_hand_made():
    catalogue = Catalogue(
        "toy",
        [
            _item("q1", colour="red", fabric="silk"),
            _item("q2", colour="blue", fabric="wool"),
            _item("c1", colour="red", fabric="silk"),
            _item("c2", colour="blue", fabric="wool"),
            _item("c3", colour="red", fabric="wool"),
        ],
    )
    protocol = {
        # q1 ranks c1, c2, c3: relevant at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2 = 5/6
        "colour": ConditionSplit("colour", ["q1"], ["c1", "c2", "c3"], ["red"], ["red", "blue", "red"], 0),
        # q1 (silk) ranks c1 first -> AP 1; q2 (wool) ranks c1, c2, c3 -> relevant at 2, 3 -> (1/2 + 2/3) / 2 = 7/12
        "fabric": ConditionSplit(
            "fabric", ["q1", "q2"], ["c1", "c2", "c3"], ["silk", "wool"], ["silk", "wool", "wool"], 0
        ),
    }
    # a fixed embedding where every query scores c1 > c2 > c3
    vectors = {"q1": [1.0, 0.0], "q2": [1.0, 0.0], "c1": [1.0, 0.0], "c2": [0.8, 0.6], "c3": [0.0, 1.0]}
    table = torch.tensor([vectors[i] for i in catalogue.ids])

    def embed(positions, condition):
        return table[positions]

    result = attrs.evaluate_attribute_retrieval(embed, protocol, catalogue)
    assert result["colour"] == pytest.approx(5 / 6)
    assert result["fabric"] == pytest.approx((1 + 7 / 12) / 2)
    assert result["overall"] == pytest.approx((5 / 6 + 1 + 7 / 12) / 3)  # query-weighted


def test_embed_under_condition_matches_the_model():
    torch.manual_seed(0)
    model = cond.CRL(torch.nn.functional.normalize(torch.randn(2, 3, 6), dim=-1), cond.CriterionHeads(2, 3, 4))
    features = torch.randn(7, 6)
    out = attrs.embed_under_condition(model, features, condition=1, batch_size=3)
    expected = model.eval().embed_features(features, torch.ones(7, dtype=torch.long))
    torch.testing.assert_close(out, expected)
    assert np.allclose(out.norm(dim=-1).numpy(), 1.0)


def test_fit_with_triplet_loss_reduces_it_on_separable_features():
    torch.manual_seed(0)
    values = torch.arange(40) % 4
    features = torch.nn.functional.normalize(torch.eye(8)[values] + 0.05 * torch.randn(40, 8), dim=-1)
    catalogue = Catalogue("toy", [_item(f"i{i}", colour=str(int(v))) for i, v in enumerate(values)])
    triplets = attrs.sample_condition_triplets(catalogue, ["colour"], n_triplets=512, seed=0)
    model = cond.CRL(torch.nn.functional.normalize(torch.randn(1, 6, 8), dim=-1), cond.CriterionHeads(1, 6, 8))
    model.set_stage(1)
    history = fit(
        model,
        attrs.ConditionTripletDataset(triplets),
        attrs.triplet_batch_loss(features),
        TrainConfig(epochs=2, batch_size=64, lr=1e-2, weight_decay=0.0, seed=0),
        progress=False,
    )
    losses = [s["loss"] for s in history.steps]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_default_conditions_are_the_datasets_or_every_attribute_of_one_without_them():
    """Notebook 05 read ``DEFAULT_CONDITIONS[dataset]`` before loading, so a dataset without an entry (Fashion200k)
    or a typo failed with a bare ``KeyError``."""
    from course_utils.data import ArrayImage

    pixels = np.zeros((1, 4, 4, 3), dtype=np.uint8)
    item = Item("i0", ("a caption",), ("title",), {"colour": "red"}, "test", ArrayImage(pixels, 0))
    catalogue = Catalogue("fashion200k", [item], attribute_names=("colour", "category"))
    assert attrs.default_conditions("fashion200k", catalogue) == ["colour", "category"]
    assert attrs.default_conditions("fashion-product-small", catalogue) == [
        "articleType",
        "baseColour",
        "season",
        "usage",
        "gender",
    ]
