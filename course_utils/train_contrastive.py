"""Contrastive fine-tuning of a CLIP from the command line, on one process or under torchrun (notebook 08).

The script never mentions ranks: :func:`course_utils.train.fit` joins the process group ``torchrun`` describes,
slices each global batch, averages gradients and lets rank 0 checkpoint. So the same command scales out::

    python -m course_utils.train_contrastive --size ci --split train --weights base.pt --steps 20 --out tuned.pt
    torchrun --nproc_per_node 2 -m course_utils.train_contrastive ...same options...
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint head-node:29500 \\
        -m course_utils.train_contrastive ...same options...        # 32 GPUs on 4 machines

Rank 0 writes the trained ``state_dict`` to ``--out`` (atomically; its folder is created, and a path that cannot be
written is refused before training) and a JSON summary beside it (``<out>.json``: processes, steps done in all and in
this run (after a resume), seconds and images per second of this run, per-step losses).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from . import distributed
from .cache import torch_save_atomic
from .checks import positive_number, whole_number
from .cli import (
    add_data_and_model_arguments,
    bundle_from_args,
    catalogue_from_args,
    check_output_file,
    exit_on_load_errors,
)
from .data.adapters import ImageTextDataset
from .json_files import write_json
from .seeding import MAX_SEED
from .train import TrainConfig, clamp_logit_scale, contrastive_batch_loss, fit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Contrastive CLIP fine-tuning with course_utils.train.fit.")
    add_data_and_model_arguments(parser)
    parser.add_argument("--caption-style", default=None, help="caption style to train on (default: first caption)")
    parser.add_argument("--steps", type=whole_number(1), default=20, help="optimizer steps")
    parser.add_argument(
        "--batch-size", type=whole_number(1), default=32, help="GLOBAL batch (split over the processes)"
    )
    parser.add_argument("--lr", type=positive_number, default=1e-5)
    parser.add_argument("--warmup-steps", type=whole_number(0), default=2)
    parser.add_argument(
        "--train-seed", type=whole_number(0, MAX_SEED), default=0, help="data order and initial RNG of fit"
    )
    parser.add_argument("--checkpoint-dir", default=None, help="resume from / write last.pt here")
    parser.add_argument("--checkpoint-every", type=whole_number(1), default=None)
    parser.add_argument(
        "--stop-after", type=whole_number(1), default=None, help="stop after this many steps (a killed run)"
    )
    parser.add_argument("--out", required=True, help="where rank 0 writes the trained state_dict")
    args = parser.parse_args(argv)
    out = check_output_file(parser, "--out", args.out)

    device = distributed.process_device()  # cuda:<LOCAL_RANK> under torchrun on GPUs, else cpu
    context = distributed.init_from_env(device.split(":")[0])
    if args.batch_size % context.world_size:  # said before every rank loads the model and the data
        parser.error(
            f"--batch-size {args.batch_size} cannot be split evenly over {context.world_size} processes; choose a "
            f"multiple of {context.world_size}"
        )
    with exit_on_load_errors("the training data and model"):
        bundle = bundle_from_args(args, device=device)
        dataset = ImageTextDataset(
            catalogue_from_args(args), bundle.preprocess, caption_style=args.caption_style, seed=args.train_seed
        )
    config = TrainConfig(
        max_steps=args.steps,
        epochs=10**6,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        checkpoint_every=args.checkpoint_every,
        seed=args.train_seed,
    )
    start = time.perf_counter()
    history = fit(
        bundle.model,
        dataset,
        contrastive_batch_loss(bundle.tokenizer),
        config,
        checkpoint_dir=args.checkpoint_dir,
        stop_after=args.stop_after,
        progress=False,
        after_step=clamp_logit_scale,
    )
    seconds = time.perf_counter() - start
    if context.is_main:
        steps_run = len(history.steps) - history.resumed_from_step  # it also holds the steps before a resume
        summary = {
            "processes": context.world_size,
            "steps": len(history.steps),
            "steps_this_run": steps_run,
            "seconds": seconds,
            "images_per_second": steps_run * args.batch_size / seconds if steps_run else None,
            "losses": [s["loss"] for s in history.steps],
            "config": asdict(config),
        }
        torch_save_atomic(bundle.model.state_dict(), out)
        write_json(Path(f"{out}.json"), summary)
        print(
            f"{context.world_size} process(es): {steps_run} steps in {seconds:.1f} s -> {out} "
            f"(step {len(history.steps)} of {args.steps})"
        )


if __name__ == "__main__":
    main()
