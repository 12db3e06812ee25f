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
    """Run ddp_worker.py on ``processes`` CPU processes (gloo) and return rank 0's trained weights."""
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
    assert distributed.init_from_env("cpu") == distributed.DistributedContext(0, 1, 0)
    tensor = torch.ones(2, requires_grad=True)
    assert distributed.gather_with_grad(tensor) is tensor


def test_world_size_without_torchrun_variables_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        distributed.init_from_env("cpu")


def test_two_processes_match_one_process_after_20_steps(tmp_path, one_process_weights):
    from ddp_worker import tiny_clip

    two = torchrun(tmp_path, "--steps", "20")
    assert max_difference(two, one_process_weights) <= 1e-5
    initial = tiny_clip(seed=0).double().state_dict()
    assert max_difference(two, initial) > 1e-3  # the weights did move


def test_resume_on_two_processes_from_a_one_process_checkpoint(tmp_path, one_process_weights):
    from ddp_worker import train

    train(20, checkpoint_dir=str(tmp_path), stop_after=10)  # "killed" after 10 steps on one process
    resumed = torchrun(tmp_path, "--steps", "20", "--checkpoint-dir", str(tmp_path))
    assert max_difference(resumed, one_process_weights) <= 1e-5
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 20


def test_train_contrastive_command_writes_weights_and_summary(tmp_path, tiny_bundle, small_catalogue):
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
            str(tmp_path / "out.pt"),
        ]
    )
    summary = json.loads((tmp_path / "out.pt.json").read_text())
    assert summary["processes"] == 1 and summary["steps"] == summary["steps_this_run"] == 2
    assert len(summary["losses"]) == 2
    trained = torch.load(tmp_path / "out.pt", weights_only=True)
    assert max_difference(trained, tiny_bundle.model.state_dict()) > 0  # the weights were loaded, then trained
