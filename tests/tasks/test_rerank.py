"""Tests of course_utils.models.cross_modal: shapes, padding masking, hard-negative mining, the ITM loss, re-ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_utils import embed, metrics
from course_utils.models import cross_modal as cm
from course_utils.models import tokens
from course_utils.retriever import FashionRetriever
from course_utils.tasks import rerank as rr

SOT, EOT = 49406, 49407


def _matcher(seed: int = 0, **kwargs) -> cm.ImageTextMatcher:
    torch.manual_seed(seed)
    return cm.ImageTextMatcher(image_width=16, text_width=24, width=32, heads=4, layers=2, **kwargs).eval()


def _inputs(batch: int = 3, patches: int = 9, length: int = 7, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, patches, 16, generator=generator)
    text = torch.randn(batch, length, 24, generator=generator)
    padding = torch.zeros(batch, length, dtype=torch.bool)
    padding[0, 4:] = True  # caption 0 has 4 real tokens
    padding[1, 6:] = True
    return image, text, padding


# ------------------------------------------------------------------------------------------------ padding mask


def test_text_padding_mask_is_true_after_eot():
    ids = torch.tensor([[SOT, 5, 6, EOT, 0, 0], [SOT, 7, EOT, 0, 0, 0], [SOT, 1, 2, 3, 4, EOT]])
    expected = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(tokens.text_padding_mask(ids), expected)


# ------------------------------------------------------------------------------------------------ the matcher


def test_matcher_output_shapes_and_attention_rows_sum_to_one():
    matcher = _matcher()
    image, text, padding = _inputs()
    with torch.no_grad():
        logits, attention = matcher(image, text, padding, return_attention=True)
    assert logits.shape == (3,)
    assert len(attention) == 2
    for weights in attention:
        assert weights.shape == (3, 1 + 7, 9)  # (batch, match token + text tokens, patches)
        assert torch.allclose(weights.sum(-1), torch.ones(3, 8), atol=1e-5)


def test_matcher_ignores_the_text_states_at_padding_positions():
    matcher = _matcher()
    image, text, padding = _inputs()
    changed = text.clone()
    changed[padding] = torch.randn(int(padding.sum()), 24) * 10  # garbage where the caption is padded
    with torch.no_grad():
        before, after = matcher(image, text, padding), matcher(image, changed, padding)
    assert torch.allclose(before, after, atol=1e-5)
    # a real token does matter (the mask is not hiding everything)
    changed[0, 2] += 5.0
    with torch.no_grad():
        assert not torch.allclose(matcher(image, changed, padding)[0], before[0], atol=1e-4)


def test_matcher_depends_on_the_image():
    matcher = _matcher()
    image, text, padding = _inputs()
    with torch.no_grad():
        assert not torch.allclose(matcher(image, text, padding), matcher(image.flip(1) * 2, text, padding), atol=1e-4)


def test_changing_tokens_after_eot_does_not_change_the_match_logit():
    """End to end through the (random-init) tiny CLIP text tower: padding ids never reach the logit."""
    import open_clip

    from course_utils.models import TINY_MODEL, register_course_configs

    register_course_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model(TINY_MODEL).eval()
    ids = torch.zeros(2, clip.context_length, dtype=torch.long)
    ids[:, :5] = torch.tensor([SOT, 320, 1125, 2595, EOT])
    changed = ids.clone()
    changed[:, 6:12] = torch.arange(400, 406)  # arbitrary tokens after the EOT
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        patches, pooled = tokens.image_token_features(clip, images)
        assert patches.shape == (2, 1 + 64, 128) and pooled.shape == (2, 128)  # class token + 8 x 8 patches
        # token 0 is the class token: CLIP's pooled embedding is its projection
        assert torch.allclose(
            torch.nn.functional.normalize(patches[:, 0] @ clip.visual.proj, dim=-1), pooled, atol=1e-5
        )
        states, padding, text_pooled = tokens.text_token_features(clip, ids)
        states2, padding2, text_pooled2 = tokens.text_token_features(clip, changed)
        assert torch.equal(padding, padding2) and padding[0, :5].sum() == 0 and padding[0, 5:].all()
        assert torch.allclose(text_pooled, text_pooled2, atol=1e-6)
        assert torch.allclose(pooled, torch.nn.functional.normalize(clip.encode_image(images), dim=-1), atol=1e-5)
        matcher = cm.ImageTextMatcher(128, 128, width=32, heads=4, layers=2).eval()
        assert torch.allclose(matcher(patches, states, padding), matcher(patches, states2, padding2), atol=1e-5)


def test_seed002_model_shape():
    torch.manual_seed(0)
    model = cm.Seed002CrossModal(embed_dim=16, num_heads=4, num_layers=2).eval()
    with torch.no_grad():
        assert model(torch.randn(5, 16), torch.randn(5, 16)).shape == (5,)


def test_seed002_logit_is_symmetric_in_image_and_text():
    # no position or modality embeddings: swapping the image and the text only permutes tokens 1 and 3,
    # which self-attention cannot see, so the first token's output and the logit stay the same
    torch.manual_seed(0)
    model = cm.Seed002CrossModal(embed_dim=16, num_heads=4, num_layers=2).eval()
    image, text = torch.randn(5, 16), torch.randn(5, 16)
    with torch.no_grad():
        assert torch.allclose(model(image, text), model(text, image), atol=1e-5)


# ------------------------------------------------------------------------------------------------ hard negatives


def test_mine_hard_negatives_hand_computed():
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.5], [0.7, 0.2, 0.6, 0.3], [0.1, 0.9, 0.95, 0.0]])
    # row 0: positive col 0 excluded -> 1 (0.8), 3 (0.5); row 1: 0 (0.7), 2 (0.6); row 2: 1 (0.9), 0 (0.1)
    assert rr.mine_hard_negatives(sim, k=2).tolist() == [[1, 3], [0, 2], [1, 0]]
    # without exclusion it is the plain top-k, positive included
    assert rr.mine_hard_negatives(sim, k=2, exclude_positive=False).tolist() == [[0, 1], [0, 2], [2, 1]]


def test_mine_hard_negatives_never_returns_the_positive_and_matches_a_naive_reference():
    generator = torch.Generator().manual_seed(3)
    sim = torch.randn(20, 30, generator=generator)
    sim[torch.arange(20), torch.arange(20)] += 3.0  # positives score high, as after fine-tuning
    hard = rr.mine_hard_negatives(sim, k=5, seed=0)
    assert hard.shape == (20, 5)
    for i in range(20):
        assert i not in hard[i].tolist()
        reference = sorted((j for j in range(30) if j != i), key=lambda j: -sim[i, j].item())[:5]
        assert hard[i].tolist() == reference


def test_mine_hard_negatives_breaks_ties_only_among_tied_items_deterministically():
    sim = torch.tensor([[1.0, 0.5, 0.5, 0.5, 0.2]])
    picks = {tuple(rr.mine_hard_negatives(sim, k=2, seed=s)[0].tolist()) for s in range(20)}
    assert all(set(p) <= {1, 2, 3} and len(set(p)) == 2 for p in picks)
    assert len(picks) > 1  # different seeds break the tie differently
    assert torch.equal(rr.mine_hard_negatives(sim, k=2, seed=4), rr.mine_hard_negatives(sim, k=2, seed=4))


def test_mine_hard_negatives_rejects_bad_k():
    with pytest.raises(ValueError):
        rr.mine_hard_negatives(torch.zeros(3, 3), k=3)


def test_hard_negative_pairs_draw_from_the_mined_lists():
    image_negatives = torch.tensor([[1, 2], [0, 2], [0, 1]])
    text_negatives = torch.tensor([[2, 1], [2, 0], [1, 0]])
    pairs = rr.HardNegativePairs(image_negatives, text_negatives, seed=0)
    by_epoch = []
    for epoch in range(4):
        pairs.set_epoch(epoch)
        for i in range(3):
            sample = pairs[i]
            assert sample["index"] == i
            assert sample["negative_image"] in image_negatives[i].tolist()
            assert sample["negative_text"] in text_negatives[i].tolist()
        by_epoch.append([pairs[i] for i in range(3)])
    assert any(draws != by_epoch[0] for draws in by_epoch[1:])  # each epoch draws anew
    again = rr.HardNegativePairs(image_negatives, text_negatives, seed=0)
    for epoch, draws in enumerate(by_epoch):
        again.set_epoch(epoch)
        assert [again[i] for i in range(3)] == draws  # deterministic per (seed, epoch, item)


def test_random_negatives_are_any_item_but_the_positive():
    """In the easy epochs, and with random_share 1 after them, every other item is drawn and the positive never."""
    n = 4
    mined = torch.tensor([[(i + 1) % n] for i in range(n)])  # one mined negative each: the next item
    for easy_epochs, random_share, epoch in [(1, 0.0, 0), (0, 1.0, 3)]:
        drawn = {i: set() for i in range(n)}
        for seed in range(30):
            pairs = rr.HardNegativePairs(mined, mined, seed=seed, easy_epochs=easy_epochs, random_share=random_share)
            pairs.set_epoch(epoch)
            for i in range(n):
                drawn[i] |= {pairs[i]["negative_image"], pairs[i]["negative_text"]}
        assert drawn == {i: set(range(n)) - {i} for i in range(n)}
    after_easy = rr.HardNegativePairs(mined, mined, seed=0, easy_epochs=1)
    after_easy.set_epoch(1)
    assert [after_easy[i]["negative_image"] for i in range(n)] == [1, 2, 3, 0]  # the mined ones again


# ------------------------------------------------------------------------------------------------ ITM loss


def test_itm_batch_loss_hand_computed():
    seen = {}

    def pair_logits(model, image_index, text_index):
        seen["image"], seen["text"] = image_index.tolist(), text_index.tolist()
        return torch.tensor([2.0, 2.0, 0.0, -1.0, 1.0, 0.0])  # positives first, then the two kinds of negatives

    batch = {
        "index": torch.tensor([0, 1]),
        "negative_image": torch.tensor([5, 6]),
        "negative_text": torch.tensor([7, 8]),
    }
    loss = rr.itm_batch_loss(pair_logits)(None, batch)
    assert seen == {"image": [0, 1, 5, 6, 0, 1], "text": [0, 1, 0, 1, 7, 8]}
    softplus = lambda x: math.log1p(math.exp(x))
    expected = (2 * softplus(-2.0) + softplus(0.0) + softplus(-1.0) + softplus(1.0) + softplus(0.0)) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_score_candidates_matches_pairwise_forward():
    matcher = _matcher()
    generator = torch.Generator().manual_seed(5)
    images = embed.ImageTokens(torch.randn(6, 9, 16, generator=generator), torch.randn(6, 8), (3, 3))
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 3:] = True
    texts = embed.TextTokens(torch.randn(2, 7, 24, generator=generator), padding, torch.randn(2, 8))
    candidates = torch.tensor([[4, 0, 2], [1, 5, 3]])
    scores = rr.score_candidates(matcher, rr.token_pair_logits(images, texts), candidates, batch_size=4)
    with torch.no_grad():
        for q in range(2):
            for c in range(3):
                g = candidates[q, c]
                direct = matcher(images.tokens[g : g + 1], texts.tokens[q : q + 1], texts.padding[q : q + 1])
                assert scores[q, c].item() == pytest.approx(direct.item(), abs=1e-5)


# ------------------------------------------------------------------------------------------------ re-ranking


def test_rerank_hand_computed_and_stable_on_ties():
    candidates = torch.tensor([[7, 3, 9, 1]])
    scores = torch.tensor([[0.1, 2.0, 0.1, 1.0]])
    assert rr.rerank(candidates, scores).tolist() == [[3, 1, 7, 9]]  # 7 before 9: tie keeps first-stage order


def test_rerank_puts_the_true_item_first_when_the_scorer_ranks_it_first():
    generator = torch.Generator().manual_seed(0)
    q, g, k = 12, 40, 6
    similarity = torch.randn(q, g, generator=generator)
    candidates, _ = rr.top_k_candidates(similarity, k)
    # the true item of query i is a random candidate (position > 0 too); the scorer rates it highest
    slot = torch.randint(0, k, (q,), generator=generator)
    targets = candidates[torch.arange(q), slot]
    scores = torch.randn(q, k, generator=generator)
    scores[torch.arange(q), slot] = scores.max() + 1.0
    reranked = rr.rerank(candidates, scores)
    assert torch.equal(reranked[:, 0], targets)
    assert all(sorted(r.tolist()) == sorted(c.tolist()) for r, c in zip(reranked, candidates))  # nothing dropped
    final = rr.reranked_similarity(similarity, candidates, scores)
    assert metrics.recall_at_k(final, targets, ks=(1,))[1] == 1.0


def test_reranked_similarity_keeps_non_candidates_below_and_in_order():
    similarity = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7]])
    candidates, _ = rr.top_k_candidates(similarity, 2)  # columns 0 and 4
    final = rr.reranked_similarity(similarity, candidates, torch.tensor([[-3.0, 5.0]]))
    order = final[0].argsort(descending=True).tolist()
    assert order == [4, 0, 2, 3, 1]


# ------------------------------------------------------------------------------------------------ on a real CLIP


def _split_tokens(tiny_bundle, catalogue, use_cache=True):
    split = catalogue.split("test")
    split = split.subset(split.ids[:12], name="test")
    texts = [item.caption("description") for item in split]
    images = embed.encode_image_tokens(tiny_bundle, split, batch_size=5, use_cache=use_cache, progress=False)
    captions = embed.encode_text_tokens(tiny_bundle, texts, batch_size=5, use_cache=use_cache, progress=False)
    return split, texts, images, captions


def test_token_features_are_cached_and_a_rerun_gives_identical_tensors(tiny_bundle, small_catalogue, isolated_cache):
    _, texts, images, captions = _split_tokens(tiny_bundle, small_catalogue)
    assert images.tokens.shape == (12, 1 + 64, 128) and images.grid == (8, 8) and images.pooled.shape == (12, 128)
    # padding trimmed to the longest caption (its EOT is the last kept column); every row keeps its real tokens
    assert captions.tokens.shape[1] == int((~captions.padding).sum(1).max()) < 48
    assert len(list((isolated_cache / "tokens").glob("*.pt"))) == 2
    _, _, images_again, captions_again = _split_tokens(tiny_bundle, small_catalogue)  # read from the cache
    _, _, images_fresh, _ = _split_tokens(tiny_bundle, small_catalogue, use_cache=False)  # recomputed
    assert torch.equal(images.tokens, images_again.tokens) and torch.equal(captions.tokens, captions_again.tokens)
    assert torch.equal(images.tokens, images_fresh.tokens)  # float16 round trip either way
    with torch.no_grad():
        pooled = torch.nn.functional.normalize(tiny_bundle.model.encode_text(tiny_bundle.tokenizer(texts)), dim=-1)
    assert torch.allclose(captions.pooled, pooled, atol=1e-5)


def test_retriever_reranker_reorders_the_dual_top_k_by_the_cross_encoder(tiny_bundle, small_catalogue, isolated_cache):
    split, texts, images, captions = _split_tokens(tiny_bundle, small_catalogue)
    matcher = cm.ImageTextMatcher(128, 128, width=32, heads=4, layers=1, n_image_tokens=65).eval()
    search = FashionRetriever(tiny_bundle, split, image_embeddings=images.pooled)
    search.reranker = rr.cross_encoder_reranker(tiny_bundle, images, matcher, dual_weight=0.5)
    search.rerank_k = 5
    expected_positions, expected_scores = rr.top_k_candidates(captions.pooled[:3] @ images.pooled.T, 5)
    logits = rr.score_candidates(matcher, rr.token_pair_logits(images, captions), expected_positions)[:3]
    final = logits + 0.5 * tiny_bundle.model.logit_scale.exp().item() * expected_scores
    for row, text in enumerate(texts[:3]):
        dual = search.search_by_text(text, top_k=5, rerank=False)
        assert [split.position(i) for i in dual["item_id"]] == expected_positions[row].tolist()
        found = search.search_by_text(text, top_k=5)
        assert [split.position(i) for i in found["item_id"]] == rr.rerank(expected_positions, final)[row].tolist()
        assert found["score"].to_numpy() == pytest.approx(final[row].sort(descending=True).values.numpy(), abs=1e-3)
        top2 = search.search_by_text(text, top_k=2)  # still re-ranks rerank_k candidates, returns the best 2
        assert top2["item_id"].tolist() == found["item_id"].tolist()[:2]
    search.rerank_k = len(split)  # the cross-encoder over the whole gallery
    whole = search.search_by_text(texts[0], top_k=len(split))
    assert sorted(split.position(i) for i in whole["item_id"]) == list(range(len(split)))


def test_retriever_reranker_reads_the_tuned_towers_tokens_and_the_dual_encoders_cosines(
    tiny_bundle, small_catalogue, isolated_cache
):
    """With ``tune_encoders=True`` the matcher reads a tuned copy's tokens; the first stage stays the dual encoder."""
    import copy
    from dataclasses import replace

    split, texts, images, captions = _split_tokens(tiny_bundle, small_catalogue)
    towers = replace(tiny_bundle, model=copy.deepcopy(tiny_bundle.model), identity=tiny_bundle.identity + "+tuned")
    with torch.no_grad():
        for parameter in towers.model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(2)))
        towers.model.logit_scale.fill_(0.0)  # the hook must scale the cosines by the dual encoder's, not this
    _, _, tuned_images, tuned_captions = _split_tokens(towers, small_catalogue)
    assert not torch.equal(tuned_images.tokens, images.tokens)
    matcher = cm.ImageTextMatcher(128, 128, width=32, heads=4, layers=1, n_image_tokens=65).eval()
    search = FashionRetriever(tiny_bundle, split, image_embeddings=images.pooled)
    search.reranker = rr.cross_encoder_reranker(tiny_bundle, tuned_images, matcher, dual_weight=0.5, towers=towers)
    search.rerank_k = 5
    positions, cosines = rr.top_k_candidates(captions.pooled[:3] @ images.pooled.T, 5)
    logits = rr.score_candidates(matcher, rr.token_pair_logits(tuned_images, tuned_captions), positions)[:3]
    final = logits + 0.5 * tiny_bundle.model.logit_scale.exp().item() * cosines
    for row, text in enumerate(texts[:3]):
        found = search.search_by_text(text, top_k=5)
        assert [split.position(i) for i in found["item_id"]] == rr.rerank(positions, final)[row].tolist()
        assert found["score"].to_numpy() == pytest.approx(final[row].sort(descending=True).values.numpy(), abs=1e-3)


def test_tuned_encoders_scorer_equals_the_matcher_on_fresh_tokens_and_trains_the_towers(tiny_bundle, small_catalogue):
    import copy

    split = small_catalogue.split("test")
    split = split.subset(split.ids[:6], name="test")
    images = torch.stack([tiny_bundle.preprocess(item.image) for item in split])
    token_ids = tiny_bundle.tokenizer([item.caption("description") for item in split])
    torch.manual_seed(0)
    model = cm.MatcherWithEncoders(copy.deepcopy(tiny_bundle.model), cm.ImageTextMatcher(128, 128, width=32, layers=1))
    image_index, text_index = torch.tensor([0, 3, 3, 5]), torch.tensor([0, 0, 2, 5])
    logits = rr.live_pair_logits(images, token_ids)(model, image_index, text_index)
    with torch.no_grad():  # reference: encode each pair's image and caption on its own, repeats included
        patches, _ = tokens.image_token_features(model.clip, images[image_index])
        states, padding, _ = tokens.text_token_features(model.clip, token_ids[text_index])
        assert torch.allclose(logits, model.matcher(patches, states, padding), atol=1e-5)
    logits.sum().backward()
    assert model.clip.visual.conv1.weight.grad is not None and model.matcher.head.weight.grad is not None


def _eight_pairs(easy_epochs: int = 0) -> rr.HardNegativePairs:
    """Pairs over 8 items whose hard negatives are the next two items (mod 8), drawn with seed 0."""
    negatives = torch.tensor([[(i + 1) % 8, (i + 2) % 8] for i in range(8)])
    return rr.HardNegativePairs(negatives, negatives, seed=0, easy_epochs=easy_epochs)


def test_fit_with_tuned_towers_trains_a_copy_and_leaves_the_dual_encoder_and_the_config_as_they_were(
    tiny_bundle, small_catalogue
):
    from course_utils.train import TrainConfig

    split = small_catalogue.split("test")
    split = split.subset(split.ids[:8], name="test")
    captions = [item.caption("description") for item in split]
    pairs = _eight_pairs()
    torch.manual_seed(0)
    matcher = cm.ImageTextMatcher(128, 128, width=32, layers=1, n_image_tokens=65)
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-3, seed=3)
    before = {name: value.clone() for name, value in tiny_bundle.model.state_dict().items()}
    history, tuned = rr.fit_with_tuned_towers(matcher, pairs, tiny_bundle, split, captions, config, progress=False)
    assert len(history.steps) == 2
    assert (config.lr, config.head_lr) == (1e-3, None)  # the caller's config trains its other models unchanged
    assert all(torch.equal(before[name], value) for name, value in tiny_bundle.model.state_dict().items())
    assert tuned.model is not tiny_bundle.model and tuned.identity == f"{tiny_bundle.identity}+itm-tuned-seed3"
    assert not torch.equal(tuned.model.visual.conv1.weight, before["visual.conv1.weight"])  # the copy trained


def _frozen_features(items: int = 8, seed: int = 2) -> tuple[embed.ImageTokens, embed.TextTokens]:
    """Random frozen features of ``items`` images (9 tokens of width 16) and captions (7 tokens of width 24), in the
    shapes notebook 03 hands the matcher and seed 002's model."""
    image, text, padding = _inputs(batch=items, seed=seed)
    pooled = torch.nn.functional.normalize(torch.randn(items, 16, generator=torch.Generator().manual_seed(seed)), dim=1)
    return embed.ImageTokens(image, pooled, (2, 4)), embed.TextTokens(text, padding, pooled.flip(0))


def _fit_once(model_seed: int = 0, easy_epochs: int = 0, lr: float = 1e-2, features=None, use_cache: bool = True):
    """The matcher of ``_matcher(model_seed)`` trained by :func:`rr.fit_on_frozen_features` on 8 items, 2 steps."""
    from course_utils.train import TrainConfig

    images, texts = features or _frozen_features()
    pairs = _eight_pairs(easy_epochs)
    matcher = _matcher(model_seed)
    config = TrainConfig(epochs=1, batch_size=4, lr=lr, seed=3)
    done = rr.fit_on_frozen_features(
        matcher, pairs, rr.token_pair_logits, images, texts, config, use_cache=use_cache, progress=False
    )
    return matcher, done


def test_fit_on_frozen_features_trains_once_and_a_rerun_loads_the_same_weights_history_and_seconds(isolated_cache):
    trained, first = _fit_once()
    assert first.trained_here and len(first.history.steps) == 2 and first.seconds > 0
    uncached, _ = _fit_once(use_cache=False)  # what fit gives without the cache: the same weights
    loaded, again = _fit_once()
    assert not again.trained_here
    assert (again.history.steps, again.seconds) == (first.history.steps, first.seconds)
    for name, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value) and torch.equal(uncached.state_dict()[name], value)
    assert not torch.equal(loaded.state_dict()["head.weight"], _matcher(0).state_dict()["head.weight"])  # it trained


@pytest.mark.parametrize(
    "change",
    [{"model_seed": 1}, {"easy_epochs": 1}, {"lr": 1e-3}, {"features": _frozen_features(seed=5)}],
    ids=["initial weights", "negative draws", "recipe", "features"],
)
def test_fit_on_frozen_features_trains_again_when_anything_the_training_reads_changes(isolated_cache, change):
    _fit_once()
    assert _fit_once(**change)[1].trained_here


def test_fit_on_frozen_features_keys_seed002s_model_apart_and_heals_a_damaged_file(isolated_cache, caplog):
    from course_utils.train import TrainConfig

    images, texts = _frozen_features()
    pairs = _eight_pairs()
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-2, seed=3)

    def fit_seed002(heads: int):
        torch.manual_seed(0)
        model = cm.Seed002CrossModal(16, num_heads=heads, num_layers=1)
        return model, rr.fit_on_frozen_features(
            model, pairs, rr.pooled_pair_logits, images, texts, config, progress=False
        )

    model, first = fit_seed002(heads=4)
    assert first.trained_here
    assert fit_seed002(heads=2)[1].trained_here  # the same weights' shapes, another architecture: its own file
    files = sorted((isolated_cache / "reranker-fit").glob("Seed002CrossModal-*.pt"))
    assert len(files) == 2
    for path in files:
        path.write_bytes(path.read_bytes()[:-10])  # truncated: fails its checksum
    healed, again = fit_seed002(heads=4)
    assert again.trained_here and "damaged" in caplog.text
    assert again.history.steps == first.history.steps
    for name, value in model.state_dict().items():
        assert torch.equal(healed.state_dict()[name], value)
    assert not fit_seed002(heads=4)[1].trained_here  # healed: the rebuilt file loads


def test_rerank_split_and_pick_dual_weight_hand_computed():
    # 3 queries, 4 gallery items; query i's true item is i
    images = embed.ImageTokens(torch.zeros(4, 2, 3), torch.eye(4), (1, 1))
    cosines = torch.tensor([[0.2, 0.9, 0.1, 0.0], [0.8, 0.7, 0.0, 0.1], [0.1, 0.0, 0.3, 0.5]])
    queries = embed.TextTokens(
        torch.zeros(3, 2, 3), torch.zeros(3, 2, dtype=torch.bool), cosines
    )  # pooled @ eye = cosines

    class Bundle:  # logit_scale.exp() == 10
        model = type("M", (), {"logit_scale": torch.tensor(math.log(10.0))})()

    def prefers_the_true_item(model, image_index, text_index):  # +3 for the true pair, else 0
        return 3.0 * (image_index == text_index).float()

    run = rr.rerank_split(Bundle, images, queries, {"oracle": (None, prefers_the_true_item)}, k=2)
    assert run.candidates.tolist() == [[1, 0], [0, 1], [3, 2]]
    assert torch.allclose(run.dual_logits, torch.tensor([[9.0, 2.0], [8.0, 7.0], [5.0, 3.0]]))
    assert run.recall("oracle", 0.0, ks=(1,))[1] == 1.0  # the re-ranker alone puts every true item first
    # with the dual logit weighted 1: query 0 keeps 1 (9 > 2 + 3), query 1 moves 1 up (7 + 3 > 8), query 2 moves 2 up
    assert run.recall("oracle", 1.0, ks=(1,))[1] == pytest.approx(2 / 3)
    assert run.recall("oracle", 1.0, ks=(2,))[2] == 1.0
    assert rr.pick_dual_weight(run, "oracle", [1.0, 0.0, 0.5]) == 0.0
    assert rr.pick_dual_weight(run, "oracle", [0.1, 0.0]) == 0.1  # equal R@1: the first listed wins
    assert rr.pick_dual_weight(run, "oracle", (2, 0)) == 0  # a tuple of ints is a grid too
    assert rr.pick_dual_weight(run, "oracle", np.array([1.0, 0.0, 0.5])) == 0.0  # and so is a 1-D array
    # an empty grid failed in max() ("arg is an empty sequence"), a word in torch's indexing: each is refused by name
    for bad in ([], ["a"], [0.0, True], "1.0", 3.0, None):
        with pytest.raises(ValueError, match="weights must be a non-empty list of numbers"):
            rr.pick_dual_weight(run, "oracle", bad)


def test_is_weight_grid_accepts_a_non_empty_list_of_numbers_only():
    assert rr.is_weight_grid([0.0, 0.3, 1.0]) and rr.is_weight_grid((1, 2.5)) and rr.is_weight_grid([np.float32(1)])
    assert rr.is_weight_grid(np.array([0.0, 1.0]))  # a 1-D array was picked from before the check existed
    for bad in ([], (), "1.0", b"1", 3.0, None, ["1.0"], [1.0, None], [False, 1.0], {1.0: 2}, np.zeros((2, 2))):
        assert not rr.is_weight_grid(bad), bad


# ------------------------------------------------------------------------------------------ catalogue-label re-ranker


def _labelled_captions() -> tuple[list[str], list[dict[str, str]]]:
    colours, kinds = ["black", "white", "red"], ["shirt", "shoes"]
    captions, attributes = [], []
    for brand in ("acme", "zeta", "nova", "orbit"):
        for colour in colours:
            for kind in kinds:
                captions.append(f"{brand} men {colour} {kind}")
                attributes.append({"baseColour": colour, "articleType": kind, "gender": "Men"})
    return captions, attributes


def test_fit_caption_labels_learns_every_attribute_that_varies():
    captions, attributes = _labelled_captions()
    models = rr.fit_caption_labels(captions, attributes)
    assert sorted(models) == ["articleType", "baseColour"]  # gender has one value: nothing to tell apart
    assert list(models["baseColour"].predict(["plain red shirt", "black shoes"])) == ["red", "black"]
    with pytest.raises(ValueError, match="2 captions but 1 attribute"):
        rr.fit_caption_labels(["a", "b"], [{"x": "1"}])


def test_label_agreement_ranks_the_item_whose_labels_the_query_names_first():
    models = rr.fit_caption_labels(*_labelled_captions())
    gallery = [
        {"baseColour": "white", "articleType": "shirt"},
        {"baseColour": "red", "articleType": "shoes"},
        {"baseColour": "red", "articleType": "shirt"},
    ]
    agreement = rr.label_agreement(models, ["orbit men red shirt", "acme white shirt"], gallery)
    assert agreement.shape == (2, 3) and agreement.dtype == torch.float64
    assert agreement.argmax(dim=1).tolist() == [2, 0]
    assert bool((agreement <= 0).all())  # sums of log-probabilities


def test_label_agreement_floors_unseen_labels():
    models = rr.fit_caption_labels(*_labelled_captions())
    gallery = [{"baseColour": "red", "articleType": "shirt"}, {"baseColour": "purple", "articleType": "shirt"}]
    agreement = rr.label_agreement(models, ["zeta red shirt"], gallery, floor=1e-3)
    shirt_term = rr.label_agreement(models, ["zeta red shirt"], [{"articleType": "shirt"}])[0, 0]
    assert agreement[0, 1] == pytest.approx(shirt_term + math.log(1e-3))  # a colour never seen in training


def test_a_missing_label_scores_as_the_catalogues_mix_of_values_not_as_a_match():
    models = rr.fit_caption_labels(*_labelled_captions())
    query = ["orbit men red shirt"]
    gallery = [
        {"baseColour": "red", "articleType": "shirt"},
        {"baseColour": "black", "articleType": "shirt"},
        {"baseColour": "black", "articleType": "shirt"},
        {"articleType": "shirt"},  # colour unknown
    ]
    agreement = rr.label_agreement(models, query, gallery)[0]
    mix = rr.label_agreement(models, query, [{"articleType": "shirt", "baseColour": {"red": 1 / 3, "black": 2 / 3}}])
    assert agreement[3] == pytest.approx(float(mix[0, 0]))  # the labelled items' shares: 1 red, 2 black
    assert agreement[1] < agreement[3] < agreement[0]  # below the red shirt the query names, above a black one
    # an attribute that no gallery item carries adds no term to any of them
    shirts_only = rr.label_agreement(models, query, [{"articleType": "shirt"}] * 2)
    shirt_term = rr.label_agreement({"articleType": models["articleType"]}, query, [{"articleType": "shirt"}] * 2)
    assert torch.equal(shirts_only, shirt_term)


def test_neighbour_label_shares_are_the_vote_of_the_nearest_training_photos():
    # two directions in embedding space: "red shirt" photos near (1, 0), "black shoes" photos near (0, 1)
    train = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.9, 0.0], [0.1, 1.0], [-0.1, 1.0]])
    labels = [{"baseColour": "red", "articleType": "shirt"}] * 3 + [
        {"baseColour": "black", "articleType": "shoes"},
        {"articleType": "shoes"},
    ]
    votes = rr.neighbour_label_shares(train, labels, torch.tensor([[1.0, 0.05], [0.0, 1.0]]), k=2)
    assert votes[0] == {"articleType": {"shirt": 1.0}, "baseColour": {"red": 1.0}}  # both neighbours red shirts
    # (0, 1)'s colour voters: the black shoes right next to it and the nearest red shirt, at a right angle
    assert votes[1]["articleType"] == {"shoes": 1.0} and sum(votes[1]["baseColour"].values()) == pytest.approx(1.0)
    assert votes[1]["baseColour"]["black"] > 0.99
    # the unlabelled photo does not vote on colour: with k=5 the colour vote has 4 voters, 3 of them red and far
    # away; the black one is nearest and weighs most (1 / cosine distance), by hand:
    query = torch.tensor([[0.05, 1.0]])
    distance = 1 - torch.nn.functional.cosine_similarity(query, train[:4]).double()
    weight = 1 / distance
    colour = rr.neighbour_label_shares(train, labels, query, k=5)[0]["baseColour"]
    assert colour["black"] == pytest.approx(float(weight[3] / weight.sum()))
    assert colour["red"] == pytest.approx(float(weight[:3].sum() / weight.sum()))
    assert rr.strongest_labels([{"baseColour": colour}]) == [{"baseColour": "black"}]


def test_strongest_labels_are_the_nearest_neighbours_hard_guess():
    from sklearn.neighbors import KNeighborsClassifier

    generator = torch.Generator().manual_seed(0)
    train, items = torch.randn(60, 8, generator=generator), torch.randn(40, 8, generator=generator)
    colours = [str(int(i)) for i in torch.randint(0, 4, (60,), generator=generator)]
    guessed = rr.strongest_labels(rr.neighbour_label_shares(train, [{"c": c} for c in colours], items, k=6))
    vote = KNeighborsClassifier(6, weights="distance", metric="cosine").fit(train.numpy(), colours)
    assert [g["c"] for g in guessed] == list(vote.predict(items.numpy()))


def test_a_soft_vote_weighs_each_value_by_its_share():
    models = rr.fit_caption_labels(*_labelled_captions())
    query = ["acme red shirt"]
    shirt = rr.label_agreement(models, query, [{"articleType": "shirt"}])[0, 0]
    red, black = (float(rr.label_agreement(models, query, [{"baseColour": c}])[0, 0]) for c in ("red", "black"))
    soft = rr.label_agreement(models, query, [{"articleType": "shirt", "baseColour": {"red": 0.25, "black": 0.75}}])
    by_hand = float(shirt) + math.log(0.25 * math.exp(red) + 0.75 * math.exp(black))
    assert soft[0, 0] == pytest.approx(by_hand)
    # a vote with all its share on one value is that value as a hard label, to the bit
    assert torch.equal(
        rr.label_agreement(models, query, [{"baseColour": {"red": 1.0}}]),
        rr.label_agreement(models, query, [{"baseColour": "red"}]),
    )


def test_neighbour_label_shares_feed_label_agreement_and_check_their_input():
    models = rr.fit_caption_labels(*_labelled_captions())
    train = torch.eye(3)
    votes = rr.neighbour_label_shares(
        train,
        [{"baseColour": c, "articleType": "shirt"} for c in ("black", "white", "red")],
        torch.tensor([[0.0, 0.1, 1.0], [1.0, 0.0, 0.1]]),
        k=1,
    )
    gallery = rr.strongest_labels(votes)
    assert gallery == [{"articleType": "shirt", "baseColour": "red"}, {"articleType": "shirt", "baseColour": "black"}]
    for labels in (gallery, votes):
        agreement = rr.label_agreement(models, ["acme red shirt"], labels)
        assert agreement.argmax(dim=1).tolist() == [0]  # the photo next to the red shirt
    with pytest.raises(ValueError, match="3 training embeddings but 2 attribute dicts"):
        rr.neighbour_label_shares(train, [{}, {}], train)
    with pytest.raises(ValueError, match="k must be at least 1"):
        rr.neighbour_label_shares(train, [{}] * 3, train, k=0)


# ------------------------------------------------------------------------------------------------ argument checks


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"random_share": 25}, "random_share must be a share from 0 to 1 (a fraction, not a percent: 0.25 for 25%), "
         "got 25"),
        ({"random_share": -0.1}, "random_share must be a share from 0 to 1"),
        ({"random_share": float("nan")}, "random_share must be a share from 0 to 1"),
        ({"random_share": True}, "random_share must be a share from 0 to 1"),
        ({"easy_epochs": -1}, "easy_epochs must be a whole number >= 0 (epochs of random negatives before the hard "
         "ones), got -1"),
        ({"easy_epochs": 1.5}, "easy_epochs must be a whole number >= 0"),
    ],
)  # fmt: skip
def test_hard_negative_pairs_refuse_a_share_outside_0_1_and_bad_easy_epochs(arguments, message):
    """``random_share=25`` (a percent) made every negative random, silently: the matcher never saw a hard one."""
    mined = torch.tensor([[1], [0]])
    with pytest.raises(ValueError) as refused:
        rr.HardNegativePairs(mined, mined, **arguments)
    assert str(refused.value).startswith(message)
    for share in (0, 0.25, 1.0):  # the edges stay allowed
        assert rr.HardNegativePairs(mined, mined, easy_epochs=0, random_share=share).random_share == share


def test_matcher_refuses_a_width_its_heads_do_not_divide_by_name():
    """torch said only ``AssertionError: embed_dim must be divisible by num_heads``."""
    with pytest.raises(ValueError) as refused:
        cm.ImageTextMatcher(16, 24, width=64, heads=3)
    assert str(refused.value).startswith("width=64 must be divisible by heads=3")
    assert "choose heads among [1, 2, 4, 8, 16]" in str(refused.value)
    for name, value in (("heads", 0), ("width", 0), ("layers", 0), ("layers", 1.5)):
        with pytest.raises(ValueError, match=f"ImageTextMatcher {name} must be a whole number >= 1, got {value}"):
            cm.ImageTextMatcher(16, 24, **{name: value})
    assert cm.ImageTextMatcher(16, 24, width=48, heads=3, layers=1).config["heads"] == 3
