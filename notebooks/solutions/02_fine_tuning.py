"""Worked solutions to the exercises of notebook 02 (fine-tuning: the contrastive loss and two recipes).

Executed on the ``ci`` profile by ``tests/test_solutions.py`` (``pytest -m solutions``).

Exercise 1 (predict, then run). A model whose image and text features are all the same gives every caption the
same score, so each row of the softmax is uniform over B candidates: the loss is ln(B) = 4.16 for B = 64. That is
where an untrained model's curve starts, and why a batch of 4 (ln 4 = 1.39) "looks" like a lower loss.

Exercise 2 (code, temperature). With raw cosines (scale 1, what seed 002's loss computed) a logit can differ from
another by at most 2, so the loss can never go below ln(1 + (B - 1) e^-2): 2.25 for B = 64, however good the
model. The gradients stay small and nearly equal for all negatives. CLIP's learned scale (up to 100) sharpens the
softmax so the hardest negatives dominate. ``loss_by_temperature`` measures the loss of the fine-tuned model on one
test batch at several scales and returns that floor.

Exercise 3 (code, batch size). ``batch_size_runs`` fine-tunes the pretrained model for one epoch on the same 512
training pairs with batches of 8 and of 64. The small batch takes 8x more optimizer steps, but each step sees only
7 negatives per pair. Hold the schedule's shape fixed: ``FULL_FINETUNE`` warms up for 10 steps, more than the
8 steps of batch 64, which would never leave its warmup while batch 8 got warmup and the whole cosine decay -- the
comparison would mix batch size with schedule. So each run warms up over the same share of its own steps (a
quarter: 2 of 8, 16 of 64) and then decays. The peak learning rate is the same for both (no scaling rule), one more
choice to state. Compare the two R@10: on this catalogue, with one epoch, read the numbers before deciding which
wins; one seed and one budget are not enough to call a small difference real.

Exercise 4 (code, equal budgets). ``optimizer_steps`` counts the steps of each recipe. In the full profile both
recipes get 3 backbone epochs (so does the real profile), so stage 2 of (b) matches (a) step for step and stage 1
is *extra* optimisation (on cached embeddings): the budget favours (b). In the ci profile (b) gets 1 backbone
epoch against (a)'s 3. ``optimizer_steps`` also returns the ``backbone_epochs`` that give stage 2 as many backbone
steps as (a) (3 in every profile). Even then (b) gets stage 1's head steps on top: state them beside the backbone
steps, as the notebook's budget table does; they are far cheaper than backbone steps (cached embeddings), so "equal
budget" needs a unit -- backbone steps, all steps, or compute.

Exercise 5 (open). LiT ("Zero-Shot Transfer with Locked-image text Tuning", Zhai et al., CVPR 2022) freezes the
image tower and trains only the text tower, and finds this beats tuning both on its data. Seed 000's stage 1 is
the opposite extreme (both towers frozen, a head trained). What would LiT's result suggest for a fashion catalogue
whose images resemble the pretraining data but whose captions do not? (That is the drawings' case; in the real
profile the photo CLIP was pretrained on the very titles used as queries, so the question does not arise there.)
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

import course_utils as cu


def uninformed_loss(batch_size: int = 64) -> float:
    """Exercise 1: the loss when every image and every caption has the same feature (expected: ln B)."""
    features = torch.nn.functional.normalize(torch.ones(batch_size, 8), dim=-1)
    return float(cu.losses.clip_contrastive_loss(features, features, torch.tensor(math.log(100.0))))


def loss_by_temperature(bundle, catalogue, query_style, scales=(1.0, 1 / 0.07, 100.0), batch_size: int = 64) -> dict:
    """Exercise 2: contrastive loss of ``bundle`` on the first ``batch_size`` test pairs at each scale."""
    batch = catalogue.subset(catalogue.ids[:batch_size], name="batch")
    images = cu.embed.encode_images(bundle, batch, progress=False)
    texts = cu.embed.encode_texts(bundle, cu.embed.caption_texts(batch, query_style), progress=False)
    losses = {
        scale: float(cu.losses.clip_contrastive_loss(images, texts, torch.tensor(math.log(scale)))) for scale in scales
    }
    learned = float(bundle.model.logit_scale.detach().exp())
    losses[f"learned ({learned:.1f})"] = float(
        cu.losses.clip_contrastive_loss(images, texts, bundle.model.logit_scale.detach())
    )
    return {"losses": losses, "floor at scale 1": math.log(1 + (batch_size - 1) * math.exp(-2))}


def batch_size_runs(experiment, batch_sizes=(8, 64), train_pairs: int = 512) -> dict[int, dict]:
    """Exercise 3: one epoch of full fine-tuning on ``train_pairs`` pairs per batch size; steps and test R@10.

    Every run warms up over the same share of its own steps, so the runs differ in batch size, not in schedule.
    """
    train = experiment.train.subset(experiment.train.ids[:train_pairs], name="train")
    small = replace(experiment, train=train)
    warmup_share = 0.25  # of each run's steps: 2 of 8 at batch 64, 16 of 64 at batch 8 (512 pairs)
    runs = {}
    for batch_size in batch_sizes:
        config = replace(cu.tasks.retrieval.FULL_FINETUNE, epochs=1, batch_size=batch_size)
        config = replace(config, warmup_steps=round(warmup_share * config.total_steps(len(train))))
        tuned, history = cu.tasks.retrieval.finetuned_bundle(small, config, progress=False)
        recall = cu.tasks.retrieval.evaluate_retrieval(tuned, experiment.test, experiment.query_style, ks=(10,))
        runs[batch_size] = {"steps": len(history.steps), "R@10": recall["text→image R@10"]}
    return runs


def optimizer_steps(n_train: int, finetune_epochs: int, head_epochs: int, backbone_epochs: int) -> dict[str, int]:
    """Exercise 4: optimizer steps of (a) and of (b)'s two stages, and the backbone epochs of an equal budget."""
    full = replace(cu.tasks.retrieval.FULL_FINETUNE, epochs=finetune_epochs).total_steps(n_train)
    head = replace(cu.tasks.retrieval.HEAD_STAGE, epochs=head_epochs).total_steps(n_train)
    per_epoch = cu.tasks.retrieval.BACKBONE_STAGE.steps_per_epoch(n_train)
    backbone = replace(cu.tasks.retrieval.BACKBONE_STAGE, epochs=backbone_epochs).total_steps(n_train)
    return {
        "(a) full fine-tuning": full,
        "(b) stage 1 (head)": head,
        "(b) stage 2 (backbone)": backbone,
        "(b) total": head + backbone,
        "backbone epochs for equal backbone steps": round(full / per_epoch),
    }
