"""The training engine shared by every notebook that trains something (02, 03, 04, 05, 06).

``fit`` runs any model with any per-batch loss: AdamW with separate learning rates for the backbone and new
heads, warmup + cosine schedule, gradient accumulation, mixed precision and gradient checkpointing on CUDA,
checkpoints every N steps with **exact resume** (model, optimizer, scheduler, RNG, step, data order), tqdm
progress, and a loss/metric history for plotting.

Under ``torchrun --nproc_per_node N`` the same call trains on N processes (notebook 08): every rank draws the same
global batches, takes its contiguous slice, gradients are averaged over ranks, and rank 0 alone evaluates, logs
and checkpoints. A checkpoint does not depend on the number of processes, so a run can resume on a different one.
"""

from __future__ import annotations

import logging
import math
import numbers
import pickle
import random
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from . import distributed
from .cache import has_intact_contents, torch_save_atomic, with_content_digest
from .checks import is_whole_number
from .data.adapters import collate_skipping_unreadable
from .errors import error_summary
from .losses import clip_contrastive_loss, clip_contrastive_loss_local

LOG = logging.getLogger(__name__)
# How a training run reports the samples it left out (a count, one per unreadable item and epoch).
UNREADABLE_LEFT_OUT = (
    "%d sample(s) left out of training: their image could not be read (an unreadable item counts once per epoch; "
    "the catalogue's drop_unreadable_images() names the items and counts them in its report)"
)

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps its temperature so logits stay <= 100


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (all plain values, saved with the metrics)."""

    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs when smaller)
    batch_size: int = 64
    lr: float = 1e-4  # backbone learning rate
    head_lr: float | None = None  # learning rate of the new heads (None: same as lr)
    weight_decay: float = 0.1
    warmup_steps: int = 0
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0
    mixed_precision: bool = True  # bf16 autocast, CUDA only
    grad_checkpointing: bool = False  # CUDA only
    checkpoint_every: int | None = None  # optimizer steps between checkpoints
    eval_every: int | None = None  # optimizer steps between evaluations
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse, naming the field, a value that would fail late inside :func:`fit` (a negative ``lr`` in torch's
        AdamW, ``epochs=0`` as an empty history the notebook then reads) or train silently wrong.

        ``max_steps=0`` stays allowed: zero steps, on purpose (``test_max_steps_zero_is_zero_steps_not_no_limit``).
        """
        counts = {  # field: (smallest allowed, whether None is allowed, what None means)
            "epochs": (1, False, ""),
            "batch_size": (1, False, ""),
            "grad_accum": (1, False, ""),
            "warmup_steps": (0, False, ""),
            "max_steps": (0, True, "no limit"),
            "checkpoint_every": (1, True, "no checkpoints"),
            "eval_every": (1, True, "evaluate at the end only"),
            "num_workers": (0, False, ""),
        }
        for name, (minimum, none_allowed, none_means) in counts.items():
            value = getattr(self, name)
            if (value is None and none_allowed) or is_whole_number(value, minimum=minimum):
                continue
            alternative = f" (or None: {none_means})" if none_allowed else ""
            raise ValueError(f"TrainConfig {name} must be a whole number >= {minimum}{alternative}, got {value!r}")
        rates = {  # field: (whether 0 is allowed, whether None is allowed, what None means)
            "lr": (False, False, ""),
            "head_lr": (False, True, "the heads train at lr"),
            "weight_decay": (True, False, ""),
            "max_grad_norm": (False, True, "no gradient clipping"),
        }
        for name, (zero_allowed, none_allowed, none_means) in rates.items():
            value = getattr(self, name)
            if value is None and none_allowed:
                continue
            number = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if number and (value > 0 or (zero_allowed and value == 0)):
                continue
            bound = ">= 0" if zero_allowed else "> 0"
            alternative = f" (or None: {none_means})" if none_allowed else ""
            raise ValueError(f"TrainConfig {name} must be a finite number {bound}{alternative}, got {value!r}")

    def steps_per_epoch(self, n_samples: int) -> int:
        return max(1, n_samples // self.batch_size // self.grad_accum)

    def total_steps(self, n_samples: int) -> int:
        steps = self.epochs * self.steps_per_epoch(n_samples)
        return min(steps, self.max_steps) if self.max_steps is not None else steps


def autocasts(config: TrainConfig, device: str | torch.device) -> bool:
    """Whether :func:`fit` computes in bfloat16 autocast on ``device``: ``config.mixed_precision`` takes effect on
    CUDA only; elsewhere every step runs in float32."""
    return config.mixed_precision and torch.device(device).type == "cuda"


def recipe_key(config: TrainConfig, device: str | torch.device) -> dict:
    """``config`` as part of a cache key for a model trained with it on ``device``.

    ``mixed_precision`` alone does not say in which precision the model was trained (a GPU trains in bfloat16, a CPU
    in float32 with the same flag), so where it takes effect the key gains ``"autocast": "bfloat16"``: a cache shared
    by a GPU machine and a CPU machine then keeps the two models apart. Elsewhere the key is ``config``'s fields
    alone, as before this entry existed, so models cached on CPUs still hit.
    """
    fields = asdict(config)
    if autocasts(config, device):
        fields["autocast"] = "bfloat16"
    return fields


@dataclass
class TrainHistory:
    """What happened: one record per optimizer step, one per evaluation, and skipped items."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    skipped_items: int = 0
    resumed_from_step: int = 0  # where the call of fit that returned this history started (0: no checkpoint)

    def step_frame(self):
        import pandas as pd

        return pd.DataFrame(self.steps)


class WarmupCosine:
    """Learning-rate factor: linear warmup to 1, then cosine decay to 0 at ``total`` steps."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, max(total, 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# --- optimisation -----------------------------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, config: TrainConfig, head_parameters: Iterable = ()) -> torch.optim.AdamW:
    """AdamW with four groups: (backbone | heads) x (decay | no decay for biases, norms and scales)."""
    head_ids = {id(p) for p in head_parameters}
    groups: dict[tuple[bool, bool], list] = {(h, d): [] for h in (False, True) for d in (False, True)}
    for param in model.parameters():
        if param.requires_grad:
            groups[(id(param) in head_ids, param.ndim >= 2)].append(param)
    head_lr = config.head_lr if config.head_lr is not None else config.lr
    param_groups = [
        {
            "params": params,
            "lr": head_lr if is_head else config.lr,
            "weight_decay": config.weight_decay if decay else 0.0,
        }
        for (is_head, decay), params in groups.items()
        if params
    ]
    if not param_groups:
        raise ValueError("nothing to train: every parameter is frozen")
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.98), eps=1e-6)


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(
    path: Path,
    model,
    optimizer,
    scheduler,
    step: int,
    history: TrainHistory,
    config: TrainConfig,
    context: distributed.DistributedContext,
) -> None:
    """Rank 0 writes ``path`` (the other ranks hold the same weights) while the others wait for it."""
    if context.is_main:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": _rng_state(),
            "history": asdict(history),
            "config": asdict(config),
        }
        torch_save_atomic(with_content_digest(state), path)  # the digest: a changed byte in a tensor is caught
    distributed.barrier()


# What unpickles numpy's RNG state (an array) besides tensors: the only globals a checkpoint of fit needs.
_CHECKPOINT_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _read_checkpoint(path: Path) -> dict | None:
    """The training state saved in ``path``, or ``None`` when the file cannot be read (a damaged checkpoint is
    named in one log line and removed, and training starts again from step 0 instead of failing on every run).

    The state is read onto the CPU whatever device trains: ``torch.set_rng_state`` and
    ``torch.cuda.set_rng_state_all`` take CPU byte tensors only, and ``load_state_dict`` moves the weights and the
    optimizer's moments onto the model's device itself.

    The file is read with ``weights_only=True`` (tensors, plain Python values and numpy's RNG state), so a file in
    the checkpoint folder that holds other pickled objects never runs their code: it is refused, named and kept.
    """
    try:
        with torch.serialization.safe_globals(_CHECKPOINT_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not has_intact_contents(state):  # a changed byte in a tensor unpickles all the same
            raise ValueError("its contents differ from the digest saved with them")
        return state
    except Exception as err:
        if isinstance(err, pickle.UnpicklingError) and zipfile.is_zipfile(path):  # whole, but not weights only
            raise ValueError(
                f"checkpoint {path} holds pickled objects other than tensors and numpy's RNG state, so it was not "
                "written by course_utils.train.fit and is not loaded (loading it would run their code); move it "
                "out of the checkpoint folder, or delete it, to train from step 0"
            ) from None
        LOG.warning(
            "checkpoint %s was damaged (%s); removed it, training restarts from step 0",
            path,
            error_summary(err),
        )
        path.unlink(missing_ok=True)
        return None


# TrainConfig fields a resume may change: how often to checkpoint and evaluate, how many processes load the data and
# whether activations are recomputed leave every optimizer step the same. Every other field shapes the run.
FREE_ON_RESUME = frozenset({"checkpoint_every", "eval_every", "num_workers", "grad_checkpointing"})
CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "step", "rng", "history", "config"})


def _restore_checkpoint(path: Path, state: dict, config: TrainConfig, model, optimizer, scheduler) -> None:
    """Load the weights, optimizer and schedule of ``state`` (read from ``path``) into this run.

    Refuses, naming ``path``, a file that is not a checkpoint of :func:`fit`, one written with another configuration
    (the saved schedule would silently replace this run's total steps and learning rates) and one of another model.
    """
    missing = CHECKPOINT_KEYS - state.keys() if isinstance(state, dict) else CHECKPOINT_KEYS
    if missing:
        raise ValueError(
            f"checkpoint {path} is not a training checkpoint of course_utils.train.fit (it lacks "
            f"{', '.join(sorted(missing))}); move it out of the checkpoint folder, or delete it, to train from step 0"
        )
    differing = [
        f"{name} {state['config'].get(name)!r} there, {value!r} now"
        for name, value in asdict(config).items()
        if name not in FREE_ON_RESUME and state["config"].get(name) != value
    ]
    if differing:
        raise ValueError(
            f"checkpoint {path} was written with another training configuration ({'; '.join(differing)}); "
            f"resume with the configuration that wrote it, or delete {path} to train this one from step 0"
        )
    try:
        model.load_state_dict(state["model"])  # every rank reads the same file
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(
            f"checkpoint {path} holds the training state of another model ({error_summary(err)}); point checkpoint_dir "
            f"at this model's run, or delete {path} to train this one from step 0"
        ) from err


def _rng_restored_after_start(loader: DataLoader, rng: dict) -> Iterator[dict]:
    """The batches of ``loader``, with the RNG set to ``rng`` once the loader has started.

    Starting a loader draws its base seed from the global torch RNG. The uninterrupted run drew it at the start of
    the epoch, before the state a mid-epoch checkpoint saved; restoring that state only after this draw keeps the
    resumed run's dropout and augmentation draws those of the uninterrupted run. (Draws made inside worker
    processes, ``num_workers > 0``, are seeded from that base seed and are not reproduced mid-epoch.)
    """
    batches = iter(loader)
    _set_rng_state(rng)
    yield from batches


def _check_one_step_fits(n_samples: int, config: TrainConfig, context: distributed.DistributedContext) -> None:
    """Refuse, naming the numbers, a dataset smaller than one optimizer step when that step cannot be trained.

    A dataset smaller than ``batch_size`` trains one short batch per epoch (:func:`_epoch_batches`). Accumulating
    micro-batches, that step's later micro-batches would be short or empty (an empty one reads as "every image
    unreadable", and the step's loss is scaled for micro-batches that are not there); on several processes the short
    batch would not split evenly, and the error would blame ``batch_size``, which does.
    """
    one_step = config.batch_size * config.grad_accum
    if n_samples < one_step and (config.grad_accum > 1 or context.is_distributed):
        raise ValueError(
            f"the dataset holds {n_samples} items, fewer than one optimizer step's {one_step} (batch_size "
            f"{config.batch_size} x grad_accum {config.grad_accum}); lower batch_size or grad_accum, or train on "
            "more items"
        )


def _epoch_batches(n_samples: int, config: TrainConfig, epoch: int) -> list[list[int]]:
    """The micro-batches of one epoch: a permutation seeded by (seed, epoch), last partial batch dropped; a dataset
    smaller than one batch is that one batch (:func:`_check_one_step_fits` says when this cannot be trained)."""
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(n_samples, generator=generator).tolist()
    n_batches = config.steps_per_epoch(n_samples) * config.grad_accum
    return [order[i * config.batch_size : (i + 1) * config.batch_size] for i in range(n_batches)]


def fit(
    model: torch.nn.Module,
    dataset: Dataset,
    batch_loss: Callable[[torch.nn.Module, dict], torch.Tensor],
    config: TrainConfig,
    head_parameters: Iterable = (),
    evaluate: Callable[[], dict] | None = None,
    checkpoint_dir: str | Path | None = None,
    stop_after: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    after_step: Callable[[torch.nn.Module], None] | None = None,
) -> TrainHistory:
    """Train ``model`` on ``dataset`` by minimising ``batch_loss(model, batch)``.

    Under torchrun each rank gets ``batch_size / world_size`` items of every global batch; evaluation, logging and
    checkpoints happen on rank 0 (the other ranks' histories hold no evaluations).

    Args:
        model: any module; only parameters with ``requires_grad`` are trained.
        dataset: returns dicts (see ``course_utils.data.adapters``); may define ``set_epoch``. Items whose image
            is unreadable are left out of their batch and counted in ``skipped_items``. A micro-batch of unreadable
            images only is left out of its step, which averages over the micro-batches that had images; a step
            with none makes no optimizer or scheduler step and has no record in ``steps`` (the step count, and with
            it the data order, evaluations and checkpoints, still moves on). Several ranks need a catalogue
            without unreadable images (``Catalogue.drop_unreadable_images``).
        batch_loss: computes the scalar loss of one collated batch.
        config: hyper-parameters.
        head_parameters: parameters trained at ``config.head_lr`` (new heads); the rest use ``config.lr``.
        evaluate: called every ``config.eval_every`` steps and once at the end (not again when a finished
            checkpoint is reloaded); returns metrics to record.
        checkpoint_dir: where ``last.pt`` is written every ``config.checkpoint_every`` steps; when it exists,
            training resumes from it exactly (same data order, RNG and optimizer state). A damaged ``last.pt`` is
            logged, removed and training restarts from step 0; one written with another configuration (any field
            but those in ``FREE_ON_RESUME``) or for another model raises ``ValueError`` naming it.
        stop_after: stop (after checkpointing) once this many optimizer steps are done — simulates a killed run.
        device: defaults to the model's device.
        progress: show a tqdm bar.
        after_step: called after each optimizer step (e.g. to clamp CLIP's temperature).

    Returns:
        The history (per-step loss and learning rate, evaluations, skipped item count).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    use_cuda, mixed_precision = device.type == "cuda", autocasts(config, device)
    context = distributed.init_from_env(device.type)  # rank 0 of 1 unless launched by torchrun
    _check_one_step_fits(len(dataset), config, context)
    distributed.broadcast_model(model)
    if config.grad_checkpointing and use_cuda and hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    total_steps = config.total_steps(len(dataset))
    optimizer = make_optimizer(model, config, head_parameters)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(config.warmup_steps, total_steps))
    history, step = TrainHistory(), 0
    checkpoint = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    torch.manual_seed(config.seed)
    state = _read_checkpoint(checkpoint) if checkpoint and checkpoint.exists() else None
    if state is not None:
        _restore_checkpoint(checkpoint, state, config, model, optimizer, scheduler)
        step, history = state["step"], TrainHistory(**state["history"])
        history.resumed_from_step = step
        _set_rng_state(state["rng"])  # at an epoch boundary the next loader draws its seed from it, as uninterrupted

    steps_per_epoch = config.steps_per_epoch(len(dataset))
    bar = tqdm(
        total=total_steps, initial=step, desc="training", disable=not (progress and context.is_main), leave=False
    )
    model.train()
    while step < total_steps and (stop_after is None or step < stop_after):
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        batches = _epoch_batches(len(dataset), config, epoch)[done_in_epoch * config.grad_accum :]
        if context.is_distributed:
            batches = [distributed.rank_slice(batch, context) for batch in batches]
        loader = DataLoader(
            dataset, batch_sampler=batches, collate_fn=collate_skipping_unreadable, num_workers=config.num_workers
        )
        if done_in_epoch:  # only on the epoch a checkpoint resumes mid-way
            loader = _rng_restored_after_start(loader, state["rng"])
        optimizer.zero_grad(set_to_none=True)
        micro, running, skipped, trained = 0, 0.0, 0, 0  # trained: micro-batches of this step with images
        for batch in loader:
            skipped += len(batch.pop("skipped"))
            if batch:
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=mixed_precision):
                    loss = batch_loss(model, batch) / config.grad_accum
                loss.backward()
                running += loss.item()
                trained += 1
            elif context.is_distributed:  # the other ranks would wait for this one in batch_loss's all-gather
                raise RuntimeError(
                    f"every image of this rank's micro-batch (rank {context.rank}, step {step + 1}) is unreadable; "
                    "call catalogue.drop_unreadable_images() before training on several ranks"
                )
            micro += 1
            if micro % config.grad_accum:
                continue
            if trained:  # else every image of this step was unreadable: no gradient, so no update and no record
                params = [p for g in optimizer.param_groups for p in g["params"]]
                if trained < config.grad_accum:  # a micro-batch was all unreadable: average over those with images
                    running *= config.grad_accum / trained
                    for param in params:
                        if param.grad is not None:
                            param.grad.mul_(config.grad_accum / trained)
                if context.is_distributed:
                    distributed.average_gradients(params)
                    total_loss, skipped = distributed.sum_over_ranks([running, skipped])
                    running = total_loss / context.world_size
                if config.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if after_step is not None:
                    after_step(model)
                history.steps.append(
                    {"step": step + 1, "epoch": epoch, "loss": running, "lr": scheduler.get_last_lr()[0]}
                )
                scheduler.step()
            history.skipped_items += int(skipped)
            step, running, skipped, trained = step + 1, 0.0, 0, 0
            bar.update(1)
            if history.steps:
                bar.set_postfix(loss=f"{history.steps[-1]['loss']:.3f}")
            if (
                evaluate
                and context.is_main
                and config.eval_every
                and step % config.eval_every == 0
                and step < total_steps
            ):
                history.evals.append({"step": step, **_evaluate(model, evaluate)})
            if step >= total_steps or (stop_after is not None and step >= stop_after):
                break  # the last checkpoint is written once, below, after the final evaluation
            if checkpoint and config.checkpoint_every and step % config.checkpoint_every == 0:
                _save_checkpoint(checkpoint, model, optimizer, scheduler, step, history, config, context)
    bar.close()
    final_evaluated = bool(history.evals) and history.evals[-1]["step"] == step  # a finished checkpoint reloaded
    if step >= total_steps and evaluate and context.is_main and not final_evaluated:
        history.evals.append({"step": step, **_evaluate(model, evaluate)})
    if checkpoint:
        _save_checkpoint(checkpoint, model, optimizer, scheduler, step, history, config, context)
    if history.skipped_items and context.is_main:
        LOG.warning(UNREADABLE_LEFT_OUT, history.skipped_items)
    model.eval()
    return history


def _evaluate(model: torch.nn.Module, evaluate: Callable[[], dict]) -> dict:
    """Run ``evaluate`` in eval mode without touching the training RNG (a run with evaluations trains the same
    weights)."""
    rng = _rng_state()  # e.g. each DataLoader draws a base seed from the global torch RNG
    model.eval()
    with torch.inference_mode():
        metrics = evaluate()
    model.train()
    _set_rng_state(rng)
    return metrics


# --- CLIP contrastive training ---------------------------------------------------------------------------------


def contrastive_batch_loss(
    tokenizer: Callable[[list[str]], torch.Tensor],
) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """The per-batch loss of CLIP fine-tuning: encode both modalities, then :func:`clip_contrastive_loss`.

    On several ranks the features of every rank are gathered (with gradients), so each image is contrasted with
    the captions of the whole global batch, exactly as in one process (:func:`clip_contrastive_loss_local`).
    """

    def batch_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        device = model.logit_scale.device
        image_features = F.normalize(model.encode_image(batch["image"].to(device)), dim=-1)
        text_features = F.normalize(model.encode_text(tokenizer(batch["text"]).to(device)), dim=-1)
        context = distributed.current()
        if not context.is_distributed:
            return clip_contrastive_loss(image_features, text_features, model.logit_scale)
        all_images, all_texts = (
            distributed.gather_with_grad(image_features),
            distributed.gather_with_grad(text_features),
        )
        return clip_contrastive_loss_local(
            image_features,
            text_features,
            all_images,
            all_texts,
            model.logit_scale,
            offset=context.rank * image_features.shape[0],
        )

    return batch_loss


def clamp_logit_scale(model: torch.nn.Module) -> None:
    """Keep CLIP's temperature in range after each step (``after_step`` hook of :func:`fit`)."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
