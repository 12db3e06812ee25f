"""The training engine: schedule, freezing, gradient accumulation, evaluation isolation and exact resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import flip_a_tensor_byte, parameters_of, preprocess, tiny_catalogue, tiny_clip, tokenize
from torch import nn
from torch.utils.data import Dataset

import course_utils.train as train_module
from course_utils.data.adapters import ImageTextDataset
from course_utils.models.parts import set_trainable
from course_utils.train import TrainConfig, WarmupCosine, clamp_logit_scale, contrastive_batch_loss, fit

# --- schedule ------------------------------------------------------------------------------------------------------


def test_warmup_cosine_values_by_hand():
    schedule = WarmupCosine(warmup=2, total=6)
    expected = [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0, 0.0]
    assert [schedule(step) for step in range(8)] == pytest.approx(expected)


def test_max_steps_zero_is_zero_steps_not_no_limit():
    """``if self.max_steps`` read 0 as "no limit": train_contrastive's --steps 0 scheduled 31 million steps."""
    assert TrainConfig(max_steps=0, epochs=10**6, batch_size=32).total_steps(1000) == 0
    assert TrainConfig(max_steps=None, epochs=2, batch_size=32).total_steps(1000) == 62


def test_a_dataset_smaller_than_one_accumulated_step_is_refused_by_its_numbers():
    """9 items, batch 8 x 2 micro-batches: the one step had a micro-batch of 8 and an empty one, which fit read as
    "every image unreadable". One short batch without accumulation still trains."""
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=8, grad_accum=2, lr=0.05)
    with pytest.raises(
        ValueError, match=r"holds 9 items, fewer than one optimizer step's 16 \(batch_size 8 x grad_acc"
    ):
        fit(NoisyRegressor(), RegressionData(9), mse_loss, config, progress=False)
    history = fit(
        NoisyRegressor(), RegressionData(9), mse_loss, dataclasses.replace(config, grad_accum=1), progress=False
    )
    assert len(history.steps) == 1


def test_fit_records_the_scheduled_learning_rate():
    model = nn.Linear(3, 1)
    config = TrainConfig(epochs=1, batch_size=2, lr=0.1, warmup_steps=2, max_grad_norm=None, weight_decay=0.0)
    history = fit(model, RegressionData(12), mse_loss, config, progress=False)
    schedule = WarmupCosine(2, 6)
    assert [s["lr"] for s in history.steps] == pytest.approx([0.1 * schedule(i) for i in range(6)])
    assert [s["step"] for s in history.steps] == list(range(1, 7))


# --- freezing ------------------------------------------------------------------------------------------------------


def test_frozen_tower_is_unchanged_after_training_and_counted_out():
    model = tiny_clip()
    total = sum(p.numel() for p in model.parameters())
    visual = sum(p.numel() for p in model.visual.parameters())
    set_trainable(model.visual, False)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == total - visual
    before = parameters_of(model)
    dataset = ImageTextDataset(tiny_catalogue(), preprocess, caption_style="web")
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-2, warmup_steps=0)
    fit(model, dataset, contrastive_batch_loss(tokenize), config, progress=False)
    after = parameters_of(model)
    for name in before:
        changed = not torch.equal(before[name], after[name])
        assert changed != name.startswith("visual."), name  # visual frozen; everything else moved


# --- gradient accumulation -----------------------------------------------------------------------------------------


class RegressionData(Dataset):
    """A fixed linear-regression problem: per-sample losses, so accumulation is exact."""

    def __init__(self, n: int):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, generator=generator)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


def mse_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def test_accumulating_two_micro_batches_equals_one_double_batch():
    runs = []
    for batch_size, accum in ((4, 2), (8, 1)):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        config = TrainConfig(
            epochs=2, batch_size=batch_size, grad_accum=accum, lr=0.05, warmup_steps=1, max_grad_norm=0.5
        )
        history = fit(model, RegressionData(32), mse_loss, config, progress=False)
        runs.append((parameters_of(model), [s["loss"] for s in history.steps]))
    (params_a, losses_a), (params_b, losses_b) = runs
    assert len(losses_a) == len(losses_b) == 8
    assert losses_a == pytest.approx(losses_b, rel=1e-5)
    for name in params_a:
        torch.testing.assert_close(params_a[name], params_b[name], rtol=1e-5, atol=1e-6)


# --- unreadable images ---------------------------------------------------------------------------------------------


class FirstRequestsUnreadable(Dataset):
    """RegressionData whose first ``n_unreadable`` requested items are unreadable (marked as the adapters mark them).

    It logs the indices ``fit`` asks for, in order, and ``stand_in`` serves another index's sample for an index.
    """

    def __init__(self, n: int, n_unreadable: int = 0, stand_in: dict[int, int] | None = None):
        self.data, self.n_unreadable, self.stand_in = RegressionData(n), n_unreadable, stand_in or {}
        self.requested: list[int] = []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        self.requested.append(i)
        if len(self.requested) <= self.n_unreadable:
            return {"skipped": f"item-{i}"}
        return self.data[self.stand_in.get(i, i)]


def test_a_batch_of_unreadable_images_only_is_counted_and_changes_nothing():
    model = nn.Linear(3, 1)
    before = parameters_of(model)
    config = TrainConfig(epochs=1, batch_size=4, lr=0.1)
    history = fit(model, FirstRequestsUnreadable(4, n_unreadable=4), mse_loss, config, progress=False)
    assert history.skipped_items == 4 and history.steps == []
    for name, value in parameters_of(model).items():
        assert torch.equal(value, before[name]), name


def test_a_step_of_unreadable_images_only_makes_no_update_and_the_next_steps_keep_their_numbers(caplog):
    config = TrainConfig(epochs=1, batch_size=2, lr=0.1, warmup_steps=0)
    with caplog.at_level("WARNING", logger="course_utils.train"):
        history = fit(nn.Linear(3, 1), FirstRequestsUnreadable(8, n_unreadable=2), mse_loss, config, progress=False)
    assert history.skipped_items == 2
    assert "2 sample(s) left out of training: their image could not be read" in caplog.text
    assert [s["step"] for s in history.steps] == [2, 3, 4]
    # the schedule (4 steps, no warmup) moves with the updates: 1, (1 + cos(pi / 4)) / 2, 1/2
    assert [s["lr"] for s in history.steps] == pytest.approx([0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05])


def _train_linear(dataset: Dataset, config: TrainConfig) -> tuple:
    """The history and trained weights of ``nn.Linear(3, 1)`` (seeded) on ``dataset``."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    history = fit(model, dataset, mse_loss, config, progress=False)
    return history, parameters_of(model)


def test_a_micro_batch_of_unreadable_images_only_leaves_its_step_the_mean_of_the_others():
    # a step of micro-batches (unreadable, B) must train exactly as one of (B, B)
    config = TrainConfig(epochs=1, batch_size=2, grad_accum=2, lr=0.05, warmup_steps=0, max_grad_norm=None)
    flaky = FirstRequestsUnreadable(8, n_unreadable=2)
    history, params = _train_linear(flaky, config)
    first, second, third, fourth = flaky.requested[:4]
    b_twice = FirstRequestsUnreadable(8, stand_in={first: third, second: fourth})
    history_b_twice, params_b_twice = _train_linear(b_twice, config)
    assert b_twice.requested == flaky.requested  # the same data order, so the same second step
    assert history.skipped_items == 2 and history_b_twice.skipped_items == 0
    assert [s["step"] for s in history.steps] == [1, 2]
    assert [s["loss"] for s in history.steps] == pytest.approx([s["loss"] for s in history_b_twice.steps], rel=1e-6)
    for name in params:
        torch.testing.assert_close(params[name], params_b_twice[name], rtol=1e-6, atol=1e-7)


# --- evaluation does not perturb training --------------------------------------------------------------------------


class NoisyRegressor(nn.Module):
    """Dropout makes training consume the global RNG, as an evaluation callback may too."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.3), nn.Linear(8, 1))

    def forward(self, x):
        return self.net(x)


def test_evaluations_do_not_change_the_trained_weights():
    runs = []
    for with_eval in (False, True):
        torch.manual_seed(0)
        model = NoisyRegressor()
        config = TrainConfig(epochs=2, batch_size=4, lr=0.05, eval_every=2)
        evaluate = (lambda: {"noise": torch.rand(5).sum().item()}) if with_eval else None
        history = fit(model, RegressionData(16), mse_loss, config, evaluate=evaluate, progress=False)
        runs.append(parameters_of(model))
        if with_eval:
            assert [e["step"] for e in history.evals] == [2, 4, 6, 8]
            assert model.training is False  # fit leaves the model in eval mode
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), name


# --- exact resume ----------------------------------------------------------------------------------------------------


RESUME_CONFIG = TrainConfig(epochs=3, batch_size=4, grad_accum=2, lr=5e-3, warmup_steps=2, checkpoint_every=1, seed=3)


def _resume_run(checkpoint_dir=None, stop=None, model=None):
    """Train the tiny CLIP on 16 items (2 optimizer steps per epoch, 6 in all), optionally stopping or resuming."""
    model = model or tiny_clip()
    dataset = ImageTextDataset(tiny_catalogue(16), preprocess, caption_style="web", seed=3)
    history = fit(
        model,
        dataset,
        contrastive_batch_loss(tokenize),
        RESUME_CONFIG,
        checkpoint_dir=checkpoint_dir,
        stop_after=stop,
        progress=False,
        after_step=clamp_logit_scale,
    )
    return model, history


@pytest.fixture(scope="module")
def uninterrupted_run():
    return _resume_run()


def test_a_damaged_checkpoint_is_named_removed_and_training_restarts(tmp_path, uninterrupted_run, caplog):
    straight, straight_history = uninterrupted_run
    _resume_run(tmp_path / "run", stop=3)
    checkpoint = tmp_path / "run" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # a crash or a full disk cut it short
    with caplog.at_level("WARNING", logger="course_utils.train"):
        restarted, history = _resume_run(tmp_path / "run")
    assert f"checkpoint {checkpoint} was damaged" in caplog.text and "restarts from step 0" in caplog.text
    assert history.steps == straight_history.steps  # from step 0, the same run as without the damage
    for name, value in parameters_of(straight).items():
        assert torch.equal(value, dict(restarted.named_parameters())[name].detach()), name


def test_a_checkpoint_with_a_changed_tensor_byte_is_named_removed_and_training_restarts(
    tmp_path, uninterrupted_run, caplog
):
    """A changed byte among the weights still unpickles; the digest saved with them tells (before, the run resumed
    from the changed weights, and every later resume too)."""
    straight, straight_history = uninterrupted_run
    _resume_run(tmp_path / "run", stop=3)
    checkpoint = tmp_path / "run" / "last.pt"
    flip_a_tensor_byte(checkpoint)
    with caplog.at_level("WARNING", logger="course_utils.train"):
        restarted, history = _resume_run(tmp_path / "run")
    assert f"checkpoint {checkpoint} was damaged" in caplog.text and "differ from the digest" in caplog.text
    assert history.steps == straight_history.steps
    for name, value in parameters_of(straight).items():
        assert torch.equal(value, dict(restarted.named_parameters())[name].detach()), name


class RunsCodeWhenLoaded:
    """A pickled object whose loading would create ``marker`` (as a hostile file could run any command)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_holding_other_pickled_objects_is_refused_unloaded_and_kept(tmp_path):
    checkpoint, marker = tmp_path / "last.pt", tmp_path / "code-ran"
    torch.save({"model": {}, "step": RunsCodeWhenLoaded(marker)}, checkpoint)
    with pytest.raises(ValueError, match=r"holds pickled objects other than tensors .* move it out") as refused:
        _noisy_run(tmp_path)
    assert str(checkpoint) in str(refused.value)
    assert not marker.exists()  # never unpickled
    assert checkpoint.exists()


@pytest.mark.parametrize("stop", [3, None])  # a stop on a checkpoint step, and the run's end
def test_each_step_writes_its_checkpoint_once(tmp_path, monkeypatch, stop):
    """A run stopping on a checkpoint step wrote the same checkpoint twice (notebook 08 timed both writes)."""
    written = []
    save = train_module._save_checkpoint
    monkeypatch.setattr(
        train_module,
        "_save_checkpoint",
        lambda *args: written.append(args[4]) or save(*args),  # args[4]: the step
    )
    _resume_run(tmp_path / "run", stop=stop)
    assert written == ([1, 2, 3] if stop else [1, 2, 3, 4, 5, 6])


@pytest.mark.parametrize("stop_after", [1, 3])  # mid-epoch (2 steps/epoch), and with an epoch already done
def test_resume_from_checkpoint_is_exact(tmp_path, uninterrupted_run, stop_after):
    straight, straight_history = uninterrupted_run
    _, first_history = _resume_run(tmp_path / "run", stop=stop_after)
    assert len(first_history.steps) == stop_after
    resumed, resumed_history = _resume_run(tmp_path / "run", model=tiny_clip(seed=99))  # weights from the checkpoint
    assert len(straight_history.steps) == 6
    assert resumed_history.steps == straight_history.steps  # same losses, learning rates, epochs
    for name, value in parameters_of(straight).items():
        assert torch.equal(value, dict(resumed.named_parameters())[name].detach()), name


NOISY_CONFIG = TrainConfig(epochs=2, batch_size=4, lr=0.05, checkpoint_every=1)  # 16 items: 4 steps per epoch


def _noisy_run(checkpoint_dir=None, stop=None, config=NOISY_CONFIG, evaluate=None):
    """Train a NoisyRegressor (dropout draws from the global torch RNG at every step) from torch seed 0."""
    torch.manual_seed(0)
    model = NoisyRegressor()
    history = fit(
        model,
        RegressionData(16),
        mse_loss,
        config,
        evaluate=evaluate,
        checkpoint_dir=checkpoint_dir,
        stop_after=stop,
        progress=False,
    )
    return model, history


@pytest.mark.parametrize("stop_after", [1, 4, 6])  # mid-epoch, at the epoch boundary, mid-way through epoch 2
def test_resume_with_dropout_draws_the_same_random_numbers(tmp_path, stop_after):
    straight, straight_history = _noisy_run()
    _noisy_run(tmp_path, stop=stop_after)
    resumed, resumed_history = _noisy_run(tmp_path)  # a fresh loader must not shift the restored RNG stream
    assert resumed_history.resumed_from_step == stop_after and straight_history.resumed_from_step == 0
    assert resumed_history.steps == straight_history.steps
    for name, value in parameters_of(straight).items():
        assert torch.equal(value, dict(resumed.named_parameters())[name].detach()), name


def test_a_checkpoint_is_read_onto_the_cpu_whatever_device_trains(tmp_path):
    """``torch.set_rng_state`` takes CPU byte tensors only: read onto the training device (``map_location`` a GPU),
    the saved RNG states failed every resume on a GPU ("RNG state must be a torch.ByteTensor"). CI has no GPU, so
    ``fit`` is told another device, ``meta``, as it would be told ``cuda``: fit reads the checkpoint with it, while
    the model (and so every batch) stays on the CPU."""
    straight, straight_history = _noisy_run()
    _noisy_run(tmp_path, stop=1)
    torch.manual_seed(0)
    model = NoisyRegressor()
    history = fit(
        model, RegressionData(16), mse_loss, NOISY_CONFIG, checkpoint_dir=tmp_path, progress=False, device="meta"
    )
    assert history.resumed_from_step == 1 and history.steps == straight_history.steps
    for name, value in parameters_of(straight).items():
        assert torch.equal(value, dict(model.named_parameters())[name].detach()), name


def test_resume_with_another_configuration_is_refused_by_name(tmp_path):
    config = TrainConfig(epochs=100, max_steps=8, batch_size=4, lr=0.1, checkpoint_every=1)
    _noisy_run(tmp_path, stop=4, config=config)
    changed = dataclasses.replace(config, max_steps=16, lr=0.5)
    with pytest.raises(ValueError) as refused:
        _noisy_run(tmp_path, config=changed)
    message = str(refused.value)
    assert str(tmp_path / "last.pt") in message and "delete" in message
    assert "max_steps 8 there, 16 now" in message and "lr 0.1 there, 0.5 now" in message
    assert "batch_size" not in message  # only the fields that differ are named
    # when to checkpoint and evaluate may change: the run resumes on the saved schedule, 0.1 x WarmupCosine(0, 8)
    _, history = _noisy_run(tmp_path, config=dataclasses.replace(config, checkpoint_every=None, eval_every=2))
    assert [s["lr"] for s in history.steps] == pytest.approx([0.1 * WarmupCosine(0, 8)(i) for i in range(8)])


def test_a_checkpoint_of_another_model_is_named(tmp_path):
    fit(nn.Linear(3, 1), RegressionData(16), mse_loss, NOISY_CONFIG, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="holds the training state of another model") as refused:
        _noisy_run(tmp_path)
    assert str(tmp_path / "last.pt") in str(refused.value) and "Missing key(s)" in str(refused.value)


def test_a_file_that_is_no_training_checkpoint_is_named_and_kept(tmp_path):
    checkpoint = tmp_path / "last.pt"
    torch.save(NoisyRegressor().state_dict(), checkpoint)  # weights alone, saved under fit's file name
    with pytest.raises(ValueError, match="is not a training checkpoint") as refused:
        _noisy_run(tmp_path)
    assert str(checkpoint) in str(refused.value) and "optimizer" in str(refused.value)
    assert checkpoint.exists()  # it loads, so it is someone's file, not a damaged checkpoint to remove


def test_a_finished_checkpoint_is_evaluated_once(tmp_path):
    calls = []

    def evaluate():
        calls.append(1)
        return {"call": len(calls)}

    histories = [_noisy_run(tmp_path, evaluate=evaluate)[1] for _ in range(3)]  # the 2nd and 3rd run no step
    assert len(calls) == 1
    assert [h.evals for h in histories] == [[{"step": 8, "call": 1}]] * 3
    assert histories[2].steps == histories[0].steps and histories[2].resumed_from_step == 8


# --- configuration checks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("epochs", 0, "a whole number >= 1, got 0"),  # notebook 02's finetune_epochs=0 failed on an empty history
        ("epochs", 2.5, "a whole number >= 1, got 2.5"),
        ("epochs", True, "a whole number >= 1, got True"),
        ("batch_size", 0, "a whole number >= 1, got 0"),
        ("grad_accum", 0, "a whole number >= 1, got 0"),
        ("warmup_steps", -1, "a whole number >= 0, got -1"),
        ("max_steps", -1, "a whole number >= 0 (or None: no limit), got -1"),
        ("max_steps", 2.0, "a whole number >= 0 (or None: no limit), got 2.0"),
        ("checkpoint_every", 0, "a whole number >= 1 (or None: no checkpoints), got 0"),
        ("eval_every", 0, "a whole number >= 1 (or None: evaluate at the end only), got 0"),
        ("num_workers", -1, "a whole number >= 0, got -1"),
        ("lr", -1e-4, "a finite number > 0, got -0.0001"),  # torch said "Invalid learning rate" at the first fit
        ("lr", 0.0, "a finite number > 0, got 0.0"),
        ("lr", float("nan"), "a finite number > 0, got nan"),
        ("lr", "1e-4", "a finite number > 0, got '1e-4'"),
        ("head_lr", 0, "a finite number > 0 (or None: the heads train at lr), got 0"),
        ("weight_decay", -0.1, "a finite number >= 0, got -0.1"),
        ("max_grad_norm", 0.0, "a finite number > 0 (or None: no gradient clipping), got 0.0"),
    ],
)
def test_a_config_value_out_of_range_is_refused_by_name_value_and_range(field, value, allowed):
    with pytest.raises(ValueError) as refused:
        TrainConfig(**{field: value})
    assert str(refused.value) == f"TrainConfig {field} must be {allowed}"
    with pytest.raises(ValueError, match=f"TrainConfig {field} must be"):  # replace() checks too, as notebook 02 uses
        dataclasses.replace(TrainConfig(), **{field: value})


def test_the_configs_of_the_course_and_their_edges_are_accepted_and_a_saved_config_rebuilds():
    edges = TrainConfig(
        epochs=1,
        max_steps=0,
        batch_size=1,
        lr=1,
        head_lr=None,
        weight_decay=0,
        warmup_steps=0,
        grad_accum=1,
        max_grad_norm=None,
        checkpoint_every=None,
        eval_every=None,
        num_workers=0,
    )
    numpy_values = TrainConfig(epochs=np.int64(2), batch_size=np.int32(8), lr=np.float64(1e-3), head_lr=1e-2)
    for config in (TrainConfig(), RESUME_CONFIG, NOISY_CONFIG, edges, numpy_values):
        assert TrainConfig(**dataclasses.asdict(config)) == config  # what a checkpoint saves
