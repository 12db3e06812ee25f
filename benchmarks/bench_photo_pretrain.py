"""Pretraining the course CLIP on real product photos: training minutes and held-out retrieval (issue 14).

Trains one recipe of ``course_utils.tasks.photo_pretrain`` from random initialisation on the ``train`` split of a
Kaggle-layout *Fashion Product Images* folder, then ranks a held-out gallery (items outside ``train``, which
training never sees) with the product titles as queries. Prints the conditions (threads, load average), the
training minutes and one row per evaluation: text->image R@1/5/10 of the exact item, R@10 where any item of identical
title counts, attribute-match R@10 (same articleType and baseColour) and the chance level of each.

    python benchmarks/bench_photo_pretrain.py [--data-root DIR] [--model photo-clip-resnet18] [--epochs 30]
        [--batch-size 256] [--lr 2e-3] [--image-size H W] [--attribute-weight 1.0] [--eval-every-epochs 5] [--threads 2]

Goals (issue 14, 1,000-item held-out gallery, 2 cores): exact R@10 >= 0.50 and attribute-match R@10 >= 0.85
within 15 minutes of training. Nothing is asserted: the script prints numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import asdict

import torch

from course_utils.data.fashion_product import load_fashion_product_small
from course_utils.paths import shared_data_dir
from course_utils.tasks import photo_pretrain as photo
from course_utils.train import TrainConfig

COLUMNS = ("exact R@1", "exact R@5", "exact R@10", "same-title R@10", "attribute-match R@10", "chance exact R@10",
           "chance same-title R@10", "chance attribute-match R@10")


class TimedEvaluations:
    """``evaluate`` callback of the training run: evaluates, prints a row, and keeps evaluation time out of the
    training minutes."""

    def __init__(self, gallery, every_epochs: int, epochs: int):
        self.gallery, self.every_epochs, self.epochs = gallery, every_epochs, epochs
        self.start = time.perf_counter()
        self.evaluation_seconds, self.evaluations = 0.0, 0
        print("| epoch | training min | " + " | ".join(COLUMNS) + " |")
        print("|---" * (len(COLUMNS) + 2) + "|")

    def training_minutes(self) -> float:
        return (time.perf_counter() - self.start - self.evaluation_seconds) / 60

    def __call__(self, bundle) -> dict:
        minutes, began = self.training_minutes(), time.perf_counter()
        record = photo.evaluate_photo_retrieval(bundle, self.gallery)
        self.evaluations += 1
        epoch = min(self.evaluations * self.every_epochs, self.epochs) if self.every_epochs else self.epochs
        cells = " | ".join(f"{record[c]:.3f}" for c in COLUMNS)
        print(f"| {epoch} | {minutes:.2f} | {cells} |", flush=True)
        self.evaluation_seconds += time.perf_counter() - began
        return {"training_minutes": minutes, **record}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default=str(shared_data_dir() / "fashion-product-small"),
                        help="Kaggle-layout folder (styles.csv + images/<id>.jpg)")
    parser.add_argument("--model", default=photo.PHOTO_RECIPE.model, help="course model config (models/model_configs)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: config's)")
    default = photo.PHOTO_RECIPE.train
    parser.add_argument("--epochs", type=int, default=default.epochs)
    parser.add_argument("--batch-size", type=int, default=default.batch_size)
    parser.add_argument("--lr", type=float, default=default.lr)
    parser.add_argument("--weight-decay", type=float, default=default.weight_decay)
    parser.add_argument("--warmup-steps", type=int, default=default.warmup_steps)
    parser.add_argument("--description-rate", type=float, default=photo.PHOTO_RECIPE.description_rate)
    parser.add_argument("--crop-scale", type=float, default=photo.PHOTO_RECIPE.crop_scale)
    parser.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    parser.add_argument("--attribute-weight", type=float, default=photo.PHOTO_RECIPE.attribute_weight,
                        help="weight of the loss whose positives share article type and colour")
    parser.add_argument("--plain-clip", action="store_true", help="plain CLIP loss instead of the multi-positive loss")
    parser.add_argument("--gallery", type=int, default=1000, help="held-out gallery size")
    parser.add_argument("--limit", type=int, help="read only this many rows of styles.csv (a quick smoke run)")
    parser.add_argument("--eval-every-epochs", type=int, default=0, help="also evaluate during training (0: at the end)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    catalogue = load_fashion_product_small(args.data_root, seed=args.seed, limit=args.limit, triplets=False)
    train, gallery = catalogue.split("train"), photo.held_out_gallery(catalogue, args.gallery, seed=args.seed)
    steps_per_epoch = TrainConfig(batch_size=args.batch_size).steps_per_epoch(len(train))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                         warmup_steps=args.warmup_steps, seed=args.seed,
                         eval_every=args.eval_every_epochs * steps_per_epoch or None)
    recipe = photo.PhotoRecipe(model=args.model, image_size=tuple(args.image_size) if args.image_size else None,
                               train=config, description_rate=args.description_rate, crop_scale=args.crop_scale,
                               flip=not args.no_flip, multi_positive=not args.plain_clip,
                               attribute_weight=args.attribute_weight)
    print(f"# {platform.node()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch threads "
          f"{torch.get_num_threads()}, load average before {os.getloadavg()[0]:.2f}")
    print(f"# data {args.data_root}: {len(train)} training items, held-out gallery {len(gallery)} (outside train)")
    print(f"# recipe {asdict(recipe)}")
    evaluations = TimedEvaluations(gallery, args.eval_every_epochs, args.epochs)
    bundle = photo.pretrained_photo_clip(catalogue, recipe, use_cache=False, progress=False, evaluate=evaluations)
    print(f"# training minutes {evaluations.training_minutes():.2f} (evaluations excluded), "
          f"{len(bundle.history)} steps, final loss {bundle.history[-1]['loss']:.3f}, "
          f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
