"""Worked solutions to the exercises of notebook 04 (the random-initialisation ablation).

Executed on the ``ci`` profile by ``tests/test_solutions.py`` (``pytest -m solutions``).

Exercise 1 (predict, then run). A randomly initialised CLIP maps captions and images to unrelated directions, so
its ranking is random: Recall@10 should be 10 / gallery size up to sampling noise, which for q queries is about
sqrt(p (1 - p) / q). ``random_init_recall`` measures a fresh open_clip initialisation (another seed than the
notebook's) and returns the chance level and that standard error.

Exercise 2 (code). Seed 002's N(0, 0.02) re-initialisation also draws CLIP's log-temperature near 0, so the
softmax scale becomes exp(0) = 1 instead of 1 / 0.07 = 14.3, and LayerNorm gains near 0 squeeze every embedding
towards the same direction. ``normal_init_effects`` measures both against open_clip's initialisation.

Exercise 3 (code, budget). ``steps_to_reach_zero_shot`` reads the two recall curves the notebook recorded and
finds the first evaluation at which the from-scratch arm reaches the pretrained model's zero-shot Recall@10
(``None`` if it never does within the budget): that is the head start pretraining buys, counted in steps.

Exercise 4 (think). Fine-tune the pretrained model and the random one on the same in-domain captions (the notebook
does), *and* evaluate the pretrained model after fine-tuning on web-style captions only: if it still beats the
from-scratch arm, pretraining helps beyond the caption style; the gap between the two fine-tuned pretrained
models is what in-domain captions add.

Exercise 5 (open). He, Girshick and Dollár ("Rethinking ImageNet Pre-training", ICCV 2019) found that detectors
trained from scratch catch up with ImageNet-pretrained ones given enough iterations. Under which budget does our
from-scratch arm catch up, and what would you change to test it (more epochs, more data, a larger gallery)?
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pandas as pd

import course_utils as cu


def random_init_recall(experiment, seed: int = 1) -> dict[str, float]:
    """Exercise 1: full-gallery text→image R@10 of an open_clip random initialisation, with chance and its s.e."""
    cu.seeding.seed_everything(seed)
    bundle = cu.models.load_clip("tiny-fashion-clip", pretrained=None, device="cpu")
    recall = cu.tasks.retrieval.evaluate_retrieval(bundle, experiment.test, experiment.query_style, ks=(10,))
    n = len(experiment.test)
    chance = cu.metrics.chance_recall(10, n)
    return {"R@10": recall["text→image R@10"], "chance": chance, "standard error": math.sqrt(chance * (1 - chance) / n)}


def normal_init_effects(experiment, seed: int = 0) -> dict[str, dict[str, float]]:
    """Exercise 2: softmax scale and spread of the image embeddings, open_clip init vs seed 002's N(0, 0.02)."""
    cu.seeding.seed_everything(seed)
    random_bundle = cu.models.load_clip("tiny-fashion-clip", pretrained=None, device="cpu")
    normal_model = copy.deepcopy(random_bundle.model)
    cu.models.heads.normal_init_(normal_model, std=0.02, seed=seed)
    normal_bundle = replace(random_bundle, model=normal_model.eval(), identity=random_bundle.identity + "+normal")
    effects = {}
    for name, bundle in (("open_clip init", random_bundle), ("N(0, 0.02) init", normal_bundle)):
        images = cu.embed.encode_images(bundle, experiment.test, progress=False, use_cache=False)
        effects[name] = {
            "softmax scale": float(bundle.model.logit_scale.detach().exp()),
            "spread": float((images - images.mean(0)).norm(dim=1).mean()),
        }
    return effects


def steps_to_reach_zero_shot(experiment, finetune_epochs: int = 3, eval_every: int = 9) -> dict:
    """Exercise 3: first evaluated step at which training from scratch reaches the zero-shot model's R@10."""
    config = replace(cu.tasks.retrieval.FULL_FINETUNE, epochs=finetune_epochs, eval_every=eval_every)
    cu.seeding.seed_everything(0)  # the notebook's seed: its cached from-scratch run is reused
    random_bundle = cu.models.load_clip("tiny-fashion-clip", pretrained=None, device="cpu")
    curves = {}
    for name, start in (("pretrained", experiment.bundle), ("scratch", random_bundle)):
        evaluate = cu.tasks.retrieval.recall_evaluator(start, experiment.test, experiment.query_style)
        _, history = cu.tasks.retrieval.finetuned_bundle(
            replace(experiment, bundle=start), config, evaluate=evaluate, progress=False
        )
        curves[name] = pd.DataFrame([{"step": 0, **evaluate(start.model)}, *history.evals])
    zero_shot = float(curves["pretrained"]["R@10"].iloc[0])
    reached = curves["scratch"][curves["scratch"]["R@10"] >= zero_shot]
    return {
        "zero-shot R@10": zero_shot,
        "scratch final R@10": float(curves["scratch"]["R@10"].iloc[-1]),
        "pretrained final R@10": float(curves["pretrained"]["R@10"].iloc[-1]),
        "step reached": int(reached["step"].iloc[0]) if len(reached) else None,
    }
