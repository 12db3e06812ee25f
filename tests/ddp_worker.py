"""Run by tests/test_distributed.py, alone or under torchrun: train the tiny CLIP of test_train.py with ``fit``.

The script never mentions ranks: ``fit`` finds them in the environment torchrun sets. Rank 0 saves the weights, or
with ``--gradients`` the averaged gradients of one global batch's contrastive loss (no optimizer step).
"""

from __future__ import annotations

import argparse

import torch
from test_train import preprocess, tiny_catalogue, tiny_clip, tokenize  # tests/ is on sys.path

from course_utils import distributed
from course_utils.data.adapters import ImageTextDataset, collate_skipping_unreadable
from course_utils.train import TrainConfig, clamp_logit_scale, contrastive_batch_loss, fit

CATALOGUE_SIZE = 48
GLOBAL_BATCH = [5, 41, 17, 2, 30, 11, 46, 23]  # dataset indices of the one batch whose gradients are compared


def train_config(steps: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, epochs=100, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=5, seed=1)


def tiny_dataset() -> ImageTextDataset:
    """(image, web caption) pairs of the tiny catalogue, images in float64 like the model."""
    return ImageTextDataset(
        tiny_catalogue(CATALOGUE_SIZE), lambda image: preprocess(image).double(), caption_style="web"
    )


def train(steps: int, checkpoint_dir: str | None = None, stop_after: int | None = None) -> torch.nn.Module:
    """The tiny CLIP (float64, so float rounding cannot hide a real difference) after ``steps`` optimizer steps."""
    model = tiny_clip(seed=0).double()
    fit(
        model,
        tiny_dataset(),
        contrastive_batch_loss(tokenize),
        train_config(steps),
        checkpoint_dir=checkpoint_dir,
        stop_after=stop_after,
        progress=False,
        after_step=clamp_logit_scale,
    )
    return model


def contrastive_gradients() -> dict[str, torch.Tensor]:
    """Each parameter's gradient of the contrastive loss of ``GLOBAL_BATCH``, computed as one step of ``fit``:
    this rank's slice, ``contrastive_batch_loss`` (features gathered with gradients), backward, gradients averaged
    over ranks. A lone process gets the plain gradient of the whole batch's ``clip_contrastive_loss``."""
    model = tiny_clip(seed=0).double()
    context = distributed.init_from_env("cpu")
    distributed.broadcast_model(model)
    model.train()
    dataset = tiny_dataset()
    batch = collate_skipping_unreadable([dataset[i] for i in distributed.rank_slice(GLOBAL_BATCH, context)])
    assert not batch.pop("skipped")
    contrastive_batch_loss(tokenize)(model, batch).backward()
    distributed.average_gradients(list(model.parameters()))
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--gradients", action="store_true", help="save one batch's averaged gradients, not train")
    parser.add_argument("--out", required=True, help="where rank 0 writes the trained state_dict (or gradients)")
    args = parser.parse_args()
    if args.gradients:
        saved = contrastive_gradients()
    else:
        saved = train(args.steps, args.checkpoint_dir, args.stop_after).state_dict()
    if distributed.current().is_main:
        torch.save(saved, args.out)


if __name__ == "__main__":
    main()
