"""Training on several processes (notebook 08): 2 gloo processes under torchrun match one process step for step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_utils import distributed
from course_utils.losses import clip_contrastive_loss, clip_contrastive_loss_local

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(tmp_path: Path, *args: str, processes: int = 2) -> dict[str, torch.Tensor]:
    """Run ddp_worker.py on ``processes`` CPU processes (gloo) and return what rank 0 saved: its trained weights, or
    with ``--gradients`` its averaged gradients."""
    out = tmp_path / f"weights-{processes}.pt"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join([str(WORKER.parent.parent), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        str(WORKER),
        "--out",
        str(out),
        *args,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out, weights_only=True)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


@pytest.fixture(scope="module")
def one_process_weights() -> dict[str, torch.Tensor]:
    """20 steps in this (single) process: the reference."""
    sys.path.insert(0, str(WORKER.parent))
    from ddp_worker import train

    return {k: v.clone() for k, v in train(20).state_dict().items()}


def test_local_losses_average_to_the_global_batch_loss():
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(8, 5, generator=generator, dtype=torch.float64), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(8, 5, generator=generator, dtype=torch.float64), dim=-1)
    scale = torch.tensor(2.0, dtype=torch.float64)
    shares = [
        clip_contrastive_loss_local(
            images[r * 2 : r * 2 + 2], texts[r * 2 : r * 2 + 2], images, texts, scale, offset=r * 2
        )
        for r in range(4)
    ]
    assert torch.stack(shares).mean().item() == pytest.approx(
        clip_contrastive_loss(images, texts, scale).item(), abs=1e-12
    )


def test_rank_slice_splits_a_global_batch_contiguously():
    batch = [5, 3, 9, 1, 0, 7]
    assert [distributed.rank_slice(batch, distributed.DistributedContext(r, 3)) for r in range(3)] == [
        [5, 3],
        [9, 1],
        [0, 7],
    ]
    with pytest.raises(ValueError, match="divisible"):
        distributed.rank_slice(batch, distributed.DistributedContext(0, 4))


def test_a_lone_process_is_rank_0_of_1(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env("cpu") == distributed.DistributedContext(0, 1)
    tensor = torch.ones(2, requires_grad=True)
    assert distributed.gather_with_grad(tensor) is tensor


def test_world_size_without_torchrun_variables_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        distributed.init_from_env("cpu")


def test_init_from_env_closes_the_group_when_the_process_exits(monkeypatch):
    registered, group = [], {"open": False}
    monkeypatch.setattr(distributed.atexit, "register", registered.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: group["open"])
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **options: group.update(open=True))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: group.update(open=False))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert distributed.init_from_env("cpu") == distributed.DistributedContext(1, 2)
    assert group["open"] and len(registered) == 1
    registered[0]()  # what the interpreter runs at exit
    assert not group["open"]
    registered[0]()  # harmless when the script closed the group itself


def test_process_device_is_the_ranks_gpu_or_the_cpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.process_device() == "cpu"  # tests force the CPU
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert distributed.process_device() == "cuda:3"


@pytest.fixture
def as_rank_0_of_2(monkeypatch) -> list[list[int]]:
    """This process posing as rank 0 of 2, without a process group: each all_gather hands "rank 1" the next list
    the test appends to the returned queue; an all_reduce fails the test."""
    queue: list[list[int]] = []

    def all_gather(parts: list[torch.Tensor], local: torch.Tensor) -> None:
        parts[0].copy_(local)
        parts[1].copy_(torch.tensor(queue.pop(0), dtype=local.dtype))

    def all_reduce(*args, **kwargs) -> None:
        pytest.fail("all_reduce reached although the ranks disagree")

    fakes = {"is_available": lambda: True, "is_initialized": lambda: True, "get_rank": lambda: 0}
    fakes |= {"get_world_size": lambda: 2, "get_backend": lambda: "gloo", "all_gather": all_gather}
    for name, fake in {**fakes, "all_reduce": all_reduce}.items():
        monkeypatch.setattr(distributed.dist, name, fake)
    return queue


def test_gather_with_grad_refuses_different_batch_sizes(as_rank_0_of_2):
    as_rank_0_of_2.append([3])  # rank 1 holds 3 rows, this rank 4
    with pytest.raises(RuntimeError, match=r"different batch sizes \[4, 3\]"):
        distributed.gather_with_grad(torch.zeros(4, 2, requires_grad=True))


def test_average_gradients_names_parameters_whose_gradients_differ_between_ranks(as_rank_0_of_2):
    layer = torch.nn.Linear(2, 2)
    layer.weight.grad = torch.ones(2, 2)  # this rank's batch left the bias without a gradient
    as_rank_0_of_2 += [[2], [4, 2]]  # rank 1: 2 parameters, gradients of 4 and 2 numbers
    with pytest.raises(RuntimeError, match=r"different gradients for 1 parameter\(s\) .* #1 \(2,\): \['none', 2\]"):
        distributed.average_gradients(layer.parameters())
    as_rank_0_of_2.append([3])  # rank 1 passes 3 parameters
    with pytest.raises(RuntimeError, match=r"different numbers of parameters to average_gradients \(\[2, 3\]"):
        distributed.average_gradients(layer.parameters())


def test_two_processes_match_one_process_after_20_steps(tmp_path, one_process_weights):
    from ddp_worker import tiny_clip

    two = torchrun(tmp_path, "--steps", "20")
    assert max_difference(two, one_process_weights) <= 1e-5
    initial = tiny_clip(seed=0).double().state_dict()
    assert max_difference(two, initial) > 1e-3  # the weights did move


def test_two_processes_average_to_the_one_process_gradients_of_the_global_batch(tmp_path):
    """fit's AdamW and gradient clipping hide a constant factor on every gradient, so the 20-step test above would
    pass if the ranks' gradients were summed instead of averaged; the gradients of one batch do not hide it."""
    from ddp_worker import contrastive_gradients

    two = torchrun(tmp_path, "--gradients")
    one = contrastive_gradients()  # this lone process: the whole global batch's clip_contrastive_loss
    assert two.keys() == one.keys()
    for name, gradient in one.items():
        largest = gradient.abs().max().item()
        assert largest > 1e-3, f"{name}: gradient too small to compare"  # measured: every parameter's >= 0.07
        # float64 rounding differs by at most ~1e-15 of the largest entry (measured 9.6e-16, summing the slices'
        # shares in another order); a scale bug (sum over 2 ranks, not mean) differs by 1.0 of it.
        difference = (two[name] - gradient).abs().max().item()
        assert difference <= 1e-10 * largest, f"{name}: off by {difference / largest:.3g} of its largest entry"


def test_resume_on_two_processes_from_a_one_process_checkpoint(tmp_path, one_process_weights):
    from ddp_worker import train

    train(20, checkpoint_dir=str(tmp_path), stop_after=10)  # "killed" after 10 steps on one process
    resumed = torchrun(tmp_path, "--steps", "20", "--checkpoint-dir", str(tmp_path))
    assert max_difference(resumed, one_process_weights) <= 1e-5
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 20


def run_train_contrastive(tmp_path: Path, tiny_bundle, *options: str, out: Path | None = None) -> dict:
    """``train_contrastive`` for 2 steps of 8 pairs on conftest's small catalogue, writing ``out`` (default
    ``tmp_path / "out.pt"``); the summary it writes."""
    out = out or tmp_path / "out.pt"
    from course_utils import train_contrastive

    weights = tmp_path / "base.pt"
    torch.save(tiny_bundle.model.state_dict(), weights)
    size = '{"pretrain": 40, "train": 160, "val": 20, "test": 160}'  # conftest's small_catalogue
    train_contrastive.main(
        [
            "--size",
            size,
            "--seed",
            "3",
            "--split",
            "train",
            "--weights",
            str(weights),
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
            "--out",
            str(out),
            *options,
        ]
    )
    return json.loads(Path(f"{out}.json").read_text())


def test_train_contrastive_command_writes_weights_and_summary(tmp_path, tiny_bundle, small_catalogue):
    summary = run_train_contrastive(tmp_path, tiny_bundle)
    assert summary["processes"] == 1 and summary["steps"] == summary["steps_this_run"] == 2
    assert len(summary["losses"]) == 2
    trained = torch.load(tmp_path / "out.pt", weights_only=True)
    assert max_difference(trained, tiny_bundle.model.state_dict()) > 0  # the weights were loaded, then trained


def test_train_contrastive_counts_only_this_runs_steps_after_a_resume(tmp_path, tiny_bundle, small_catalogue):
    checkpoints = ["--checkpoint-dir", str(tmp_path / "checkpoints"), "--checkpoint-every", "1"]
    stopped = run_train_contrastive(tmp_path, tiny_bundle, *checkpoints, "--stop-after", "1")
    resumed = run_train_contrastive(tmp_path, tiny_bundle, *checkpoints)
    assert (stopped["steps"], stopped["steps_this_run"]) == (1, 1)
    assert (resumed["steps"], resumed["steps_this_run"]) == (2, 1)


def test_train_contrastive_heals_a_damaged_checkpoint(tmp_path, tiny_bundle, small_catalogue, caplog):
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"cut short by a crash")
    with caplog.at_level("WARNING", logger="course_utils.train"):
        summary = run_train_contrastive(tmp_path, tiny_bundle, "--checkpoint-dir", str(checkpoint.parent))
    assert f"checkpoint {checkpoint} was damaged" in caplog.text
    assert summary["steps"] == summary["steps_this_run"] == 2  # fit removed it and trained from step 0


@pytest.mark.parametrize(("option", "value"), [("--steps", "0"), ("--batch-size", "0"), ("--stop-after", "-1")])
def test_train_contrastive_refuses_counts_below_one_by_flag(option, value, tmp_path, capsys):
    """--steps 0 trained ~31 million steps (0 read as no limit) and --batch-size 0 ended in ZeroDivisionError."""
    from course_utils import train_contrastive

    with pytest.raises(SystemExit) as refused:
        train_contrastive.main([option, value, "--out", str(tmp_path / "out.pt")])
    assert refused.value.code == 2
    assert f"argument {option}: must be a whole number of at least 1, got '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--lr", "-1", "must be a finite number above 0, like 1e-5, got '-1'"),  # TrainConfig's traceback
        ("--lr", "nan", "must be a finite number above 0, like 1e-5, got 'nan'"),
        ("--warmup-steps", "-3", "must be a whole number of at least 0, got '-3'"),  # TrainConfig's traceback
        # a negative seed trained until a style with several captions drew one: numpy refuses negative seeds
        ("--train-seed", "-5", "must be a whole number from 0 to 4294967295, got '-5'"),
        ("--seed", "-1", "must be a whole number from 0 to 4294967295, got '-1'"),
    ],
)
def test_train_contrastive_refuses_a_bad_rate_or_seed_by_flag(option, value, said, tmp_path, capsys):
    from course_utils import train_contrastive

    with pytest.raises(SystemExit) as refused:
        train_contrastive.main([option, value, "--out", str(tmp_path / "out.pt")])
    assert refused.value.code == 2
    assert f"argument {option}: {said}" in capsys.readouterr().err


def test_train_contrastive_says_in_one_line_what_it_cannot_load(tmp_path, tiny_bundle, small_catalogue):
    """A caption style the items lack stopped the training at its first batch, in a ``KeyError`` naming one item;
    a missing weights file or an unknown dataset came as a traceback."""
    with pytest.raises(SystemExit) as refused:
        run_train_contrastive(tmp_path, tiny_bundle, "--caption-style", "tag")
    assert refused.value.code == (
        "cannot load the training data and model: caption style 'tag': 160 of 160 items of synthetic/train have no "
        "caption "
        "of that style (the first: syn-000040); the styles its items have: ['description', 'title', 'web']"
    )
    with pytest.raises(SystemExit) as refused:
        run_train_contrastive(tmp_path, tiny_bundle, "--weights", str(tmp_path / "missing.pt"))
    assert str(refused.value.code).startswith("cannot load the training data and model: weights file ")
    assert not (tmp_path / "out.pt").exists()


def test_train_contrastive_refuses_a_batch_the_processes_cannot_share_before_loading(tmp_path, monkeypatch, capsys):
    from course_utils import train_contrastive

    monkeypatch.setattr(distributed, "init_from_env", lambda device_type: distributed.DistributedContext(0, 4))
    monkeypatch.setattr(train_contrastive, "bundle_from_args", lambda *a, **k: pytest.fail("loaded the model first"))
    with pytest.raises(SystemExit):
        train_contrastive.main(["--batch-size", "30", "--out", str(tmp_path / "out.pt")])
    assert "--batch-size 30 cannot be split evenly over 4 processes; choose a multiple of 4" in capsys.readouterr().err


def test_train_contrastive_checks_out_before_training_and_creates_its_folder(
    tmp_path, tiny_bundle, small_catalogue, capsys, monkeypatch
):
    from course_utils import train_contrastive

    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(train_contrastive, "fit", lambda *a, **k: pytest.fail("trained before checking --out"))
    for out in (tmp_path, tmp_path / "a_file" / "out.pt", tmp_path / "a_file" / "deeper" / "out.pt"):
        with pytest.raises(SystemExit):
            run_train_contrastive(tmp_path, tiny_bundle, out=out)
        assert f"--out {out}: give a file name inside a folder" in capsys.readouterr().err
    monkeypatch.undo()
    nested = tmp_path / "new" / "folder" / "out.pt"
    assert run_train_contrastive(tmp_path, tiny_bundle, out=nested)["steps"] == 2
    assert torch.load(nested, weights_only=True).keys() == tiny_bundle.model.state_dict().keys()
