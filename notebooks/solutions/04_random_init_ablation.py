"""Worked solutions to the exercises of notebook 04 (the random-initialisation ablation).

Executed on the ``ci`` profile by ``tests/test_solutions.py`` (``pytest -m solutions``). The code answers run on
the drawings: they load ``tiny-fashion-clip`` and use notebook 02's ``eval_every=9`` of that profile, and the
written answers describe what the drawings give; where the real profile's photos differ, the answer says so.

Exercise 1 (predict, then run). A randomly initialised CLIP maps captions and images to unrelated directions, so
its ranking is random: Recall@10 should be 10 / gallery size up to sampling noise, which for q queries is about
sqrt(p (1 - p) / q). ``random_init_recall`` measures a fresh open_clip initialisation (another seed than the
notebook's) and returns the chance level and that standard error.

Exercise 2 (code). ``normal_init_effects`` measures the softmax scale, the spread of the image embeddings around
their mean and the spread of one query's scores over the gallery (standard deviation, averaged over queries), for
both initialisations. Seed 002's N(0, 0.02) re-initialisation draws CLIP's log-temperature near 0, so the softmax
scale becomes about exp(0) = 1 instead of open_clip's 1 / 0.07 = 14.3. The scale cannot change a ranking at all: it
multiplies every score of a query by the same positive number, which keeps their order. It matters for training (how
sharp the contrastive softmax is, hence how large the gradients are), not for retrieval. The spreads are what
differ: normalisation gains near 0 (LayerNorm in the tiny CLIP's towers) squeeze every embedding towards the same
point, so the N(0, 0.02) image spread comes out below open_clip's and its scores lie close together. On the drawings
almost none of them tie: compare the N(0, 0.02) score spread with ``torch.finfo(torch.float32).eps``, the float32
resolution near a cosine of 1 — it is many times larger, so exact ties are rare (the notebook prints the share of
one query's neighbouring scores that are exactly equal, a small share that can be above zero), and the rest are
distinct, only close together, ordered by differences that the random weights set without regard to the caption; the
few ties are ordered by the metric's tie convention, which is chance too. That is what puts the ranking at chance,
as it does for open_clip's initialisation with its wider spreads and usual scale: random weights, not ties and not
the temperature. On the real profile's photos the answer differs: the photo CLIP's convolutional image tower
normalises with BatchNorm, whose re-drawn gains squeeze the image embeddings to within a few float32 eps of one
point (the notebook prints the spread in eps and the share of tied scores), so one query's scores tie and the
metric's tie convention gives chance (the committed real run's N(0, 0.02) row equals chance to float precision).

Exercise 3 (code, budget). ``steps_to_reach_zero_shot`` reads the two recall curves the notebook recorded and
finds the first evaluation at which the from-scratch arm reaches the pretrained model's zero-shot Recall@10
(``None`` if it never does within the budget): that is the head start pretraining buys, counted in steps.

Exercise 4 (think). Fine-tune the pretrained model and the random one on the same in-domain captions (the notebook
does), *and* evaluate the pretrained model after fine-tuning on web-style captions only: if it still beats the
from-scratch arm, pretraining helps beyond the caption style; the gap between the two fine-tuned pretrained
models is what in-domain captions add.
On the real profile's photos the question shifts: the photo CLIP was pretrained from random initialisation on the
same train photos and their titles, so both arms saw in-domain captions and the comparison measures the pretraining
recipe and budget (more steps, a higher learning rate, augmentation, attribute positives), not outside data; to
measure outside data there, start the pretrained arm from weights trained on other photos.

Exercise 5 (open). He, Girshick and Dollár ("Rethinking ImageNet Pre-training", ICCV 2019) found that detectors
trained from scratch catch up with ImageNet-pretrained ones given enough iterations. To test it here, train the
from-scratch arm for several times the budget with the same recipe (``finetune_epochs`` x 2, x 4, x 8) and read
whether its final R@10 reaches the pretrained -> fine-tuned arm's; give the pretrained arm the same longer budget
too (it may still improve, and equal budgets are the fair comparison), and repeat over seeds, since one seed
cannot tell a small gap from noise. More training pairs (``train_size``, a larger catalogue) matter as much as
steps: from scratch the model learns everything from these pairs.

Cost on 2 CPU cores = seconds per optimizer step x steps. The steps of one budget are the record's
``training_steps`` (``results/full/04_random_init_ablation.json`` holds the full profile's), so a budget m times
longer takes m x ``training_steps`` steps per arm. Seconds per step: notebook 08's record
(``results/full/08_scaling_out.json``) measures the same tiny CLIP trained contrastively on these 2 cores,
``train_images_per_s_1proc`` images per second, so one step of notebook 02's recipe
(``cu.tasks.retrieval.FULL_FINETUNE.batch_size`` pairs) takes about that batch size divided by
``train_images_per_s_1proc`` seconds. Or measure it here: README › Profiles, outputs and runtimes gives notebook
04's runtime fresh (the from-scratch arm is trained) and cached (it is read back); their difference divided by
``training_steps`` is the seconds per step, the recall evaluations every ``eval_every`` steps included. Multiply,
and count both arms if both get the longer budget; a larger catalogue also makes every evaluation slower.
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
    """Exercise 2: softmax scale, image-embedding and score spreads, open_clip init vs seed 002's N(0, 0.02)."""
    cu.seeding.seed_everything(seed)
    random_bundle = cu.models.load_clip("tiny-fashion-clip", pretrained=None, device="cpu")
    normal_model = copy.deepcopy(random_bundle.model)
    cu.models.heads.normal_init_(normal_model, std=0.02, seed=seed)
    normal_bundle = replace(random_bundle, model=normal_model.eval(), identity=random_bundle.identity + "+normal")
    queries = cu.embed.caption_texts(experiment.test, experiment.query_style)
    effects = {}
    for name, bundle in (("open_clip init", random_bundle), ("N(0, 0.02) init", normal_bundle)):
        images = cu.embed.encode_images(bundle, experiment.test, progress=False, use_cache=False)
        texts = cu.embed.encode_texts(bundle, queries, progress=False, use_cache=False)
        effects[name] = {
            "softmax scale": float(bundle.model.logit_scale.detach().exp()),
            "spread": float((images - images.mean(0)).norm(dim=1).mean()),
            "score spread": float((texts @ images.T).std(dim=1).mean()),
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
