"""Several processes training one model: the few pieces of ``torch.distributed`` that ``train.fit`` needs (notebook 08).

``torchrun --nproc_per_node N script.py`` starts N copies of a script and gives each the environment variables
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_from_env` joins the
process group they describe (gloo on CPU, nccl on CUDA), so the same script runs alone or under torchrun.
``fit`` then gives each rank its slice of every global batch (:func:`rank_slice`), averages the gradients
(:func:`average_gradients`), and the contrastive loss sees the whole global batch through
:func:`gather_with_grad`. The layout follows open_clip_train's ``distributed.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among ``world_size`` processes (rank 0 logs and checkpoints)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_type: str | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment; a lone process gets rank 0 of 1.

    Args:
        device_type: "cuda" picks the nccl backend, anything else gloo (default: cuda when available).

    Returns:
        The context; calling it again returns the same group without re-initialising.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {missing} are not set; launch the script with torchrun "
            "(it sets RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT) or unset WORLD_SIZE"
        )
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method="env://")
    return current()


def current() -> DistributedContext:
    """The context of an initialised process group, else rank 0 of 1."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext()
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_slice(batch: Sequence[int], context: DistributedContext) -> list[int]:
    """This rank's contiguous share of a global batch of dataset indices.

    Contiguous shares keep the gathered features in global batch order: rank r holds rows
    ``r * b .. (r + 1) * b - 1`` of the global batch, ``b = len(batch) / world_size``.
    """
    if len(batch) % context.world_size:
        raise ValueError(
            f"a global batch of {len(batch)} items cannot be split evenly over {context.world_size} "
            "processes; choose batch_size divisible by the number of processes"
        )
    share = len(batch) // context.world_size
    return list(batch[context.rank * share : (context.rank + 1) * share])


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the summed gradient of its own rows (every rank's loss used them)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        rows = [torch.zeros(1, dtype=torch.int64, device=tensor.device) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, torch.tensor([tensor.shape[0]], device=tensor.device))
        if len({int(r) for r in rows}) > 1:
            raise RuntimeError(
                f"ranks hold different batch sizes {[int(r) for r in rows]} (unreadable images were "
                "skipped?); call catalogue.drop_unreadable_images() before training on several ranks"
            )
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """``(world_size * b, ...)``: every rank's ``(b, ...)`` rows in rank order, differentiable (open_clip's idea).

    A lone process gets ``tensor`` back unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over ranks (what DDP does during backward), one flat all-reduce."""
    context = current()
    if not context.is_distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= context.world_size
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def sum_over_ranks(values: Sequence[float]) -> list[float]:
    """Sum a few numbers (e.g. the step's loss, skipped items) over ranks, for rank 0's log."""
    if not current().is_distributed:
        return list(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # nccl only moves GPU tensors
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast_model(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so all ranks start from the same weights."""
    if not current().is_distributed:
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint); no-op for a lone process."""
    if current().is_distributed:
        dist.barrier()
