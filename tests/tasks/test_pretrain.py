"""The embedded tiny CLIP: an open_clip JSON config (models), pretrained by the course and cached by key (tasks)."""

import dataclasses

import open_clip
import pytest
import torch

import course_utils.models.tiny_clip as tiny
from course_utils.tasks import pretrain
from course_utils.train import TrainConfig

QUICK = TrainConfig(max_steps=2, batch_size=16, lr=1e-3, seed=0)


def test_config_is_registered_with_open_clip():
    tiny.register_course_configs()
    assert tiny.TINY_MODEL in open_clip.list_models()
    assert open_clip.get_model_config(tiny.TINY_MODEL)["embed_dim"] == 128


def test_pretraining_is_cached_and_reused(small_catalogue, isolated_cache, monkeypatch, caplog):
    first = pretrain.pretrained_tiny_clip(small_catalogue, config=QUICK, progress=False)
    assert len(first.history) == 2 and first.checkpoint_path.exists()
    assert first.identity.startswith("open_clip:tiny-fashion-clip:embedded-")

    monkeypatch.setattr(pretrain, "fit", lambda *a, **k: pytest.fail("retrained although cached"))
    second = pretrain.pretrained_tiny_clip(small_catalogue, config=QUICK, progress=False)
    assert second.identity == first.identity
    assert "initialized randomly" not in caplog.text  # the cached weights are loaded: no misleading warning
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_cache_key_follows_data_and_recipe(small_catalogue):
    split = small_catalogue.split("pretrain")
    key = pretrain.pretrain_key_parts(split, QUICK, "web", "cpu")
    assert pretrain.pretrain_key_parts(split, QUICK, "title", "cpu") != key
    assert pretrain.pretrain_key_parts(split, TrainConfig(max_steps=3, batch_size=16, lr=1e-3), "web", "cpu") != key
    assert pretrain.pretrain_key_parts(split.subset(split.ids[:10]), QUICK, "web", "cpu") != key


def test_cache_key_follows_the_precision_training_runs_in(small_catalogue):
    split = small_catalogue.split("pretrain")
    on_cpu = pretrain.pretrain_key_parts(split, QUICK, "web", "cpu")
    assert on_cpu["train"] == dataclasses.asdict(QUICK)  # as before the precision entered the key: CPU caches hit
    # A GPU trains in bfloat16 with the same recipe: its model is another cache entry, in float32 it is not.
    assert pretrain.pretrain_key_parts(split, QUICK, "web", "cuda")["train"] == {
        **on_cpu["train"],
        "autocast": "bfloat16",
    }
    full_precision = dataclasses.replace(QUICK, mixed_precision=False)
    assert pretrain.pretrain_key_parts(split, full_precision, "web", "cuda") == pretrain.pretrain_key_parts(
        split, full_precision, "web", "cpu"
    )


def test_pretraining_is_deterministic(small_catalogue):
    a = pretrain.pretrained_tiny_clip(small_catalogue, config=QUICK, use_cache=False, progress=False)
    b = pretrain.pretrained_tiny_clip(small_catalogue, config=QUICK, use_cache=False, progress=False)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
