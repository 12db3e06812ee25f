"""Run by tests/test_distributed.py, alone or under torchrun: train the tiny CLIP of test_train.py with ``fit``.

The script never mentions ranks: ``fit`` finds them in the environment torchrun sets. Rank 0 saves the weights.
"""

from __future__ import annotations

import argparse

import torch
from test_train import preprocess, tiny_catalogue, tiny_clip, tokenize  # tests/ is on sys.path

from course_utils import distributed
from course_utils.data.adapters import ImageTextDataset
from course_utils.train import TrainConfig, clamp_logit_scale, contrastive_batch_loss, fit

CATALOGUE_SIZE = 48


def train_config(steps: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, epochs=100, batch_size=8, lr=1e-3, warmup_steps=2, checkpoint_every=5, seed=1)


def train(steps: int, checkpoint_dir: str | None = None, stop_after: int | None = None) -> torch.nn.Module:
    """The tiny CLIP (float64, so float rounding cannot hide a real difference) after ``steps`` optimizer steps."""
    model = tiny_clip(seed=0).double()
    dataset = ImageTextDataset(
        tiny_catalogue(CATALOGUE_SIZE), lambda image: preprocess(image).double(), caption_style="web"
    )
    fit(
        model,
        dataset,
        contrastive_batch_loss(tokenize),
        train_config(steps),
        checkpoint_dir=checkpoint_dir,
        stop_after=stop_after,
        progress=False,
        after_step=clamp_logit_scale,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--out", required=True, help="where rank 0 writes the trained state_dict")
    args = parser.parse_args()
    model = train(args.steps, args.checkpoint_dir, args.stop_after)
    if distributed.current().is_main:
        torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
