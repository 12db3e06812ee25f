"""Worked solutions to the exercises of notebook 05 (conditional embeddings, ASEN's protocol).

Executed on the ``ci`` profile by ``tests/test_solutions.py`` (``pytest -m solutions``). The answers are the
drawings': the exercises name the drawings' conditions (``colour``, ``pattern``, ``category``) and
``crl_stage1_map`` loads the drawings' descriptor words (``load_descriptors("synthetic")``). On a real catalogue
translate the conditions as the notebook's exercises cell says and load that catalogue's descriptors.

Exercise 1 (predict, then run). A random ranking puts relevant candidates anywhere, so its average precision is
about the share of relevant candidates, and that share is the chance that a candidate has the query's value:
averaged over queries, about the sum over the condition's values of their squared shares. That sum is at least one
over the number of values (reached when every value is equally common) and grows when a few values dominate. So the
conditions with the fewest values have the highest floors: on the drawings ``sleeve``, ``neckline`` and ``length``,
with 3 values each, at a third or a little above; ``fabric`` (4 values, cotton the most common) comes next, and
``colour``, with the most values, has the lowest floor. Which of the three 3-valued conditions is highest is set by
how evenly its values are shared among its queries and candidates, so it can change with the split; the ``random mAP
%`` column of the notebook's protocol table (beside each condition's ``values``) gives the order for the run at
hand. ``random_ranking_map`` scores random rankings of one condition and compares their mAP with the share of
relevant candidates.

Exercise 2 (code, the ASEN mAP by hand). ``my_average_precision``: sort the candidates by score, take the
precision at the rank of each relevant candidate, average over the relevant ones. It equals
``cu.metrics.average_precision`` on a real query of the protocol.

Exercise 3 (code, add a condition). ``crl_stage1_map`` trains CRL's stage 1 (one MLP per criterion on frozen
features) for a list of conditions. Train it on ``colour`` and ``pattern``, then add ``category``: one more basis,
one more head, triplets drawn over three conditions. The added condition's mAP should clear its random floor;
compare the colour mAP of both runs to see whether sharing the triplet budget with a third condition costs the
others anything.

Exercise 4 (think). With the heads and the text basis frozen, stage 2 can only move image features within what
the heads already read; a 3-layer tower on 64-pixel renders has few features to add (fabric and neckline are
barely visible at that resolution), so the triplet loss has little left to lower. The real profile's resnet10t sees
small product photos (80 x 60 pixels) for one short stage-2 epoch; the same reasoning holds there: the frozen heads
were fitted to its current features, and a short epoch leaves little time to learn new ones.

Exercise 5 (open). ASEN (Ma et al., "Fine-Grained Fashion Similarity Learning by Attribute-Specific Embedding
Network", AAAI 2020) steers a spatial and a channel attention with the condition and trains its ImageNet-pretrained
backbone end to end. An ablation separates two causes only if it changes one and holds the other, so the question is
a 2 x 2 design: {condition-guided attention, no attention} x {backbone trained, backbone frozen}. ASEN's own
ablations (the network without its spatial or without its channel attention) and its baselines (a triplet network
with one general embedding, CSN's masks over a shared embedding) all train the backbone as ASEN does: they fill the
"trained" column only. Their differences measure what the attention (and the condition) adds *on a trained
backbone*; none of them measures what training the backbone adds, so no ablation in that paper separates the two
gains cleanly. The missing column is ASEN with its backbone frozen, and that is what this notebook supplies: row (e)
is the attention on frozen CLIP patch tokens, and its gap to row (a) (global CLIP from the same frozen encoder) is
what a trained condition-guided attention adds without any backbone training. The backbone's gain is then the step
from (e) to an ASEN-style head whose tower is also trained, the experiment stage 2 runs for CRL ((c) to (d): heads
frozen, tower trained). To close the question in this course, train the image tower under the ASEN-style head as
stage 2 does and compare with row (e) on the same seeds; the two papers' numbers cannot be combined, since
backbones, datasets and budgets differ.
"""

from __future__ import annotations

import numpy as np
import torch

import course_utils as cu
import course_utils.data.descriptors  # noqa: F401  (makes cu.data.descriptors available)


def random_ranking_map(protocol, condition: str, draws: int = 20, seed: int = 0) -> dict[str, float]:
    """Exercise 1: mAP of random rankings of ``condition``'s candidates vs the share of relevant candidates."""
    relevant = protocol[condition].relevance()  # (queries, candidates) bool
    rng = np.random.default_rng(seed)
    maps = [cu.metrics.average_precisions(rng.random(relevant.shape), relevant).mean() for _ in range(draws)]
    return {"random mAP": float(np.mean(maps)), "share relevant": float(relevant.mean())}


def my_average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Exercise 2: AP of one ranking: mean over relevant candidates of the precision at their rank."""
    order = np.argsort(-scores, kind="stable")
    hits = relevant[order].astype(float)
    precision_at_rank = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at_rank * hits).sum() / hits.sum())


def crl_stage1_map(bundle, experiment, conditions: list[str], triplets: int = 4000, seed: int = 0) -> dict:
    """Exercise 3: CRL stage 1 trained on ``conditions``; mAP per condition and each condition's random floor."""
    words = cu.data.descriptors.load_descriptors("synthetic")
    templates = cu.data.descriptors.load_prompt_templates("synthetic")
    train, test = experiment.train, experiment.test
    train_features = cu.embed.encode_images(bundle, train, progress=False)
    test_features = cu.embed.encode_images(bundle, test, progress=False)
    bases = cu.tasks.attributes.build_criterion_bases(bundle, {c: words[c] for c in conditions}, templates)
    torch.manual_seed(seed)
    heads = cu.models.conditional.CriterionHeads(len(conditions), bases.bases.shape[1], 128)
    crl = cu.models.conditional.CRL(bases.bases, heads, image_tower=None)
    config = cu.train.TrainConfig(epochs=1, batch_size=128, lr=1e-3, weight_decay=1e-4, warmup_steps=10, seed=seed)
    drawn = cu.tasks.attributes.sample_condition_triplets(train, conditions, triplets, seed=seed)
    cu.tasks.attributes.train_crl_stage(crl, 1, drawn, config, features=train_features, progress=False)
    protocol = cu.data.attribute_retrieval_protocol(test, conditions, seed=seed)
    maps = cu.tasks.attributes.evaluate_attribute_retrieval(
        lambda positions, c: cu.tasks.attributes.embed_under_condition(crl, test_features[positions], bases.index(c)),
        protocol,
        test,
    )
    floors = {c: float(protocol[c].relevance().mean(axis=1).mean()) for c in conditions}
    return {"mAP": maps, "random": floors}
