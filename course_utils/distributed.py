"""Several processes training one model: the few pieces of ``torch.distributed`` that ``train.fit`` needs (notebook 08).

``torchrun --nproc_per_node N script.py`` starts N copies of a script and gives each the environment variables
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. :func:`init_from_env` joins the
process group they describe (gloo on CPU, nccl on CUDA), so the same script runs alone or under torchrun.
``fit`` then gives each rank its slice of every global batch (:func:`rank_slice`), averages the gradients
(:func:`average_gradients`), and the contrastive loss sees the whole global batch through
:func:`gather_with_grad`. The group is closed when the process exits (``destroy_process_group``, registered by
:func:`init_from_env`), and :func:`process_device` gives every command-line entry point the same device choice:
``cuda:<LOCAL_RANK>`` on a GPU machine. The layout follows open_clip_train's ``distributed.py``.
"""

from __future__ import annotations

import atexit
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
        The context; calling it again returns the same group without re-initialising. The group is destroyed when
        the process exits, so no entry point leaves it to the garbage collector (where NCCL may hang or warn).
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
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", init_method="env://")
    atexit.register(_close_process_group)
    return current()


def _close_process_group() -> None:
    """Destroy the default process group if it is still open (the script may have closed it itself)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def process_device() -> str:
    """This process's device: ``cuda:<LOCAL_RANK>`` when CUDA is available (torchrun numbers a node's ranks 0, 1,
    ... and each takes its own GPU), else ``cpu``. One choice for every entry point, run alone or under torchrun."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{local_rank()}"


def local_rank() -> int:
    """This process's rank on its machine (torchrun's ``LOCAL_RANK``; 0 for a lone process): its GPU's number."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def current() -> DistributedContext:
    """The context of an initialised process group, else rank 0 of 1."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext()
    return DistributedContext(dist.get_rank(), dist.get_world_size())


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


def _collective_device() -> str:
    """Where a collective's tensors must live: nccl moves only GPU tensors, gloo CPU ones."""
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def _gather_ints(values: Sequence[int]) -> list[list[int]]:
    """Every rank's ``values`` (as many on each rank), in rank order: one small all_gather for consistency checks."""
    local = torch.tensor(list(values), dtype=torch.int64, device=_collective_device())
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [part.tolist() for part in parts]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the summed gradient of its own rows (every rank's loss used them)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        rows = [rank_rows for (rank_rows,) in _gather_ints([tensor.shape[0]])]
        if len(set(rows)) > 1:
            raise RuntimeError(
                f"ranks hold different batch sizes {rows} (unreadable images were "
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
    """Replace each gradient by its mean over ranks (what DDP does during backward), one flat all-reduce.

    The flat all-reduce is only right when every rank holds gradients of the same parameters and sizes (a
    parameter unused by one rank's batch has no gradient there), else it fails or hangs; so two small all-gathers
    (the number of parameters, then each one's gradient size) check that first.

    Raises:
        RuntimeError: the ranks disagree; the message names the parameters (position in ``parameters``, shape).
    """
    context = current()
    if not context.is_distributed:
        return
    parameters = list(parameters)
    counts = [count for (count,) in _gather_ints([len(parameters)])]
    if len(set(counts)) > 1:
        raise RuntimeError(
            f"ranks pass different numbers of parameters to average_gradients ({counts}, by rank); every rank "
            "must train the same model with the same optimizer groups"
        )
    sizes_by_rank = _gather_ints([-1 if p.grad is None else p.grad.numel() for p in parameters])  # -1: no gradient
    differing = [i for i in range(len(parameters)) if len({sizes[i] for sizes in sizes_by_rank}) > 1]
    if differing:
        described = "; ".join(
            f"#{i} {tuple(parameters[i].shape)}: {['none' if sizes[i] < 0 else sizes[i] for sizes in sizes_by_rank]}"
            for i in differing[:5]
        )
        raise RuntimeError(
            f"ranks hold different gradients for {len(differing)} parameter(s) (position, shape: gradient size by "
            f"rank) {described}{' ...' if len(differing) > 5 else ''}; a parameter that some rank's batch does "
            "not use has no gradient there: use every parameter on every rank, or set the missing gradients to zero"
        )
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
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
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
