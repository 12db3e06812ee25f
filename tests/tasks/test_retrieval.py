"""Seed 002's normal(0, 0.02) re-init, seed 000's MLP head and two-stage recipe, and the recall curve callback."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import parameters_of, preprocess, tiny_catalogue, tiny_clip, tokenize

from course_utils.data.adapters import ImageTextDataset
from course_utils.embed import caption_texts, encode_images, encode_texts
from course_utils.metrics import full_gallery_recall
from course_utils.models import ClipBundle
from course_utils.models.heads import HeadedClip, ResidualMLPHead, normal_init_
from course_utils.models.parts import set_trainable
from course_utils.tasks.experiment import Experiment
from course_utils.tasks.retrieval import (
    EmbeddingPairs,
    finetuned_bundle,
    head_only_bundle,
    recall_by_model,
    recall_evaluator,
    train_backbone_stage,
    train_head_stage,
    two_stage_bundle,
)
from course_utils.train import TrainConfig

QUICK = TrainConfig(epochs=1, batch_size=8, lr=1e-2, warmup_steps=0, seed=0)


def tiny_bundle() -> ClipBundle:
    return ClipBundle(tiny_clip(), preprocess, tokenize, 16, "test:tiny", torch.device("cpu"))


# --- seed 002's re-initialisation ------------------------------------------------------------------------------


def test_normal_init_redraws_every_trainable_tensor_from_n_0_002():
    model = tiny_clip()
    set_trainable(model.visual, False)
    frozen_before = parameters_of(model.visual)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert normal_init_(model, std=0.02, seed=0) == trainable
    for name, value in parameters_of(model.visual).items():
        assert torch.equal(value, frozen_before[name]), name  # seed 002 skips frozen tensors
    everything = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
    assert abs(everything.mean().item()) < 0.002
    assert abs(everything.std().item() - 0.02) < 0.001
    assert abs(model.logit_scale.item()) < 0.1  # temperature exp(~0) = 1, not CLIP's 1/0.07
    assert abs(model.ln_final.weight.mean().item()) < 0.01  # LayerNorm gains near 0 as well


def test_normal_init_is_deterministic_by_seed_and_leaves_the_global_rng_alone():
    a, b, c = tiny_clip(), tiny_clip(), tiny_clip()
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    normal_init_(a, seed=1)
    assert torch.equal(torch.rand(1), expected_next)
    normal_init_(b, seed=1)
    normal_init_(c, seed=2)
    assert torch.equal(a.logit_scale, b.logit_scale) and torch.equal(a.text_projection, b.text_projection)
    assert not torch.equal(a.text_projection, c.text_projection)


# --- seed 000's head and two stages ----------------------------------------------------------------------------


def test_residual_head_starts_as_the_identity():
    head = ResidualMLPHead(16)
    x = torch.randn(4, 16)
    assert torch.equal(head(x), x)
    assert head.fc1.out_features == 32


def test_headed_clip_starts_at_the_normalised_clip_embeddings():
    clip = tiny_clip()
    headed = HeadedClip(clip, 16)
    images = torch.rand(3, 3, 16, 16)
    tokens = tokenize(["red dress", "blue shirt", "coat"])
    torch.testing.assert_close(headed.encode_image(images), F.normalize(clip.encode_image(images), dim=-1))
    torch.testing.assert_close(headed.encode_text(tokens), F.normalize(clip.encode_text(tokens), dim=-1))
    assert headed.logit_scale is clip.logit_scale


def _changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if not torch.equal(before[name], after[name])}


def test_stage_one_trains_only_the_heads_and_stage_two_only_the_backbone():
    model = HeadedClip(tiny_clip(), 16)
    generator = torch.Generator().manual_seed(0)
    pairs = EmbeddingPairs(
        F.normalize(torch.randn(32, 16, generator=generator), dim=-1),
        F.normalize(torch.randn(32, 16, generator=generator), dim=-1),
    )
    start = parameters_of(model)
    history = train_head_stage(model, pairs, TrainConfig(epochs=3, batch_size=8, lr=1e-2), progress=False)
    after_head = parameters_of(model)
    assert _changed(start, after_head) == {n for n in start if n.startswith(("image_head.", "text_head."))}
    assert len(history.steps) == 12

    images = ImageTextDataset(tiny_catalogue(16), preprocess, caption_style="web")
    train_backbone_stage(model, images, tokenize, QUICK, progress=False)
    after_backbone = parameters_of(model)
    moved = _changed(after_head, after_backbone)
    assert moved and all(n.startswith("clip.") for n in moved)
    assert all(p.requires_grad for p in model.parameters())  # stage 2 hands back a fully trainable model


def test_embedding_pairs_refuse_mismatched_shapes():
    import pytest

    with pytest.raises(ValueError, match="one shape"):
        EmbeddingPairs(torch.zeros(3, 4), torch.zeros(2, 4))


def test_two_stage_bundle_trains_once_then_loads_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_CACHE", str(tmp_path))
    catalogue = tiny_catalogue(16)
    base = tiny_bundle()
    base_before = parameters_of(base.model)
    experiment = Experiment(catalogue, base, catalogue, catalogue, "web")
    tuned, histories = two_stage_bundle(experiment, QUICK, QUICK, progress=False)
    assert set(histories) == {"head", "backbone"} and len(histories["backbone"].steps) == 2
    assert isinstance(tuned.model, HeadedClip) and tuned.identity.startswith("test:tiny+two-stage-")
    assert not _changed(base_before, parameters_of(base.model))  # the base bundle is untouched
    again, histories_again = two_stage_bundle(experiment, QUICK, QUICK, progress=False)
    assert again.identity == tuned.identity and histories_again["head"].steps == histories["head"].steps
    assert not _changed(parameters_of(tuned.model), parameters_of(again.model))


def test_head_only_bundle_is_stage_one_of_the_two_stage_recipe_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_CACHE", str(tmp_path))
    catalogue = tiny_catalogue(16)
    experiment = Experiment(catalogue, tiny_bundle(), catalogue, catalogue, "web")
    first, history = head_only_bundle(experiment, QUICK, progress=False)
    second, _ = head_only_bundle(experiment, QUICK, progress=False)
    assert not _changed(parameters_of(first.model), parameters_of(second.model))
    assert not _changed(parameters_of(experiment.bundle.model), parameters_of(first.model.clip))  # CLIP frozen
    _, histories = two_stage_bundle(experiment, QUICK, QUICK, use_cache=False, progress=False)
    assert histories["head"].steps == history.steps


# --- the recall curve ------------------------------------------------------------------------------------------


def test_recall_evaluator_is_full_gallery_text_to_image_recall(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_CACHE", str(tmp_path))
    catalogue = tiny_catalogue(12)
    bundle = tiny_bundle()
    evaluate = recall_evaluator(bundle, catalogue, "web", ks=(1, 5))
    with torch.inference_mode():
        metrics = evaluate(bundle.model)
        images = torch.cat([bundle.encode_images(preprocess(item.image)[None]) for item in catalogue])
        texts = bundle.encode_texts(caption_texts(catalogue, "web"))
    expected = full_gallery_recall(texts, images, torch.arange(12), (1, 5))
    assert metrics == {"R@1": expected[1], "R@5": expected[5]}


def test_finetuned_bundle_adds_a_recall_curve_to_a_cached_run_without_changing_weights(tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("FASHION_COURSE_CACHE", str(tmp_path))
    catalogue = tiny_catalogue(16)
    experiment = Experiment(catalogue, tiny_bundle(), catalogue, catalogue, "web")
    plain, plain_history = finetuned_bundle(experiment, QUICK, progress=False)
    assert plain_history.evals == []
    evaluate = recall_evaluator(experiment.bundle, catalogue, "web", ks=(1, 5))
    curve_config = replace(QUICK, eval_every=1)
    with_curve, history = finetuned_bundle(experiment, curve_config, evaluate=evaluate, progress=False)
    assert with_curve.identity == plain.identity  # eval_every is not part of the cache key
    assert [e["step"] for e in history.evals] == [1, 2]
    assert not _changed(parameters_of(plain.model), parameters_of(with_curve.model))
    _, cached_history = finetuned_bundle(experiment, curve_config, evaluate=evaluate, progress=False)
    assert cached_history.evals == history.evals
    # another eval_every retrains for its curve (it returned the cached curve of every step, without a word)
    _, every_other = finetuned_bundle(experiment, replace(QUICK, eval_every=2), evaluate=evaluate, progress=False)
    assert [e["step"] for e in every_other.evals] == [2]


def test_recall_by_model_has_both_directions_and_a_chance_row(tmp_path, monkeypatch):

    monkeypatch.setenv("FASHION_COURSE_CACHE", str(tmp_path))
    catalogue = tiny_catalogue(10)
    bundle = tiny_bundle()
    table = recall_by_model({"tiny": bundle}, catalogue, "web", ks=(1, 5))
    assert list(table.index) == ["tiny", "chance"]
    assert list(table.columns) == ["text→image R@1", "text→image R@5", "image→text R@1", "image→text R@5"]
    assert table.loc["chance"].tolist() == [0.1, 0.5, 0.1, 0.5]
    evaluate = recall_evaluator(bundle, catalogue, "web", ks=(1, 5))
    assert table.loc["tiny", "text→image R@5"] == evaluate(bundle.model)["R@5"]
    # image→text: each image is the query, the captions are the gallery (not the text→image scores read again)
    images = encode_images(bundle, catalogue, progress=False)
    texts = encode_texts(bundle, caption_texts(catalogue, "web"), progress=False)
    image_to_text = full_gallery_recall(images, texts, torch.arange(10), (1, 5))
    assert table.loc["tiny", ["image→text R@1", "image→text R@5"]].tolist() == [image_to_text[1], image_to_text[5]]
    assert image_to_text != full_gallery_recall(texts, images, torch.arange(10), (1, 5))  # the directions differ


def test_a_curve_with_a_step_of_unreadable_images_is_still_the_curve_of_its_eval_every():
    """fit keeps no record of a step whose every image was unreadable, yet counts it: read from the number of step
    records, the cached run's curve never matched and was retrained on every call."""
    from course_utils.tasks.retrieval import _evaluated_every

    history = {"steps": [{"step": 1}, {"step": 3}, {"step": 4}], "evals": [{"step": 2}, {"step": 4}]}  # 2: unread
    assert _evaluated_every(history, 2) and not _evaluated_every(history, 1)
    assert not _evaluated_every({"steps": [{"step": 1}], "evals": []}, 1)


class _KeyTaken(Exception):
    """Stops a fine-tuning at its cache key, before any training."""


def test_fine_tuned_models_trained_in_bfloat16_on_a_gpu_are_cached_apart_from_float32_ones(monkeypatch):
    import course_utils.tasks.retrieval as retrieval

    keys = []

    def take_key(artifact, parts, **_):
        keys.append(parts)
        raise _KeyTaken

    monkeypatch.setattr(retrieval, "artifact_path", take_key)
    catalogue = tiny_catalogue(8)
    bundle = tiny_bundle()
    for device in ("cpu", "cuda"):  # the key is computed before anything runs on the device
        on_device = dataclasses.replace(bundle, device=torch.device(device))
        experiment = Experiment(catalogue, on_device, catalogue, catalogue, "web")
        for build in (finetuned_bundle, two_stage_bundle):
            with pytest.raises(_KeyTaken):
                build(experiment, progress=False)
    on_cpu, on_cpu_two_stage, on_gpu, on_gpu_two_stage = keys
    assert on_gpu[-1] == {**on_cpu[-1], "autocast": "bfloat16"}  # the recipe, last of the fine-tuning's key
    assert on_cpu[-1]["mixed_precision"] and "autocast" not in on_cpu[-1]  # CPU keys as before: their caches hit
    assert on_gpu_two_stage[-3:-1] == [{**recipe, "autocast": "bfloat16"} for recipe in on_cpu_two_stage[-3:-1]]
