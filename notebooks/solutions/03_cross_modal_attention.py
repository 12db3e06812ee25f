"""Worked solutions to the exercises of notebook 03 (a cross-attention re-ranker).

Executed on the ``ci`` profile by ``tests/test_solutions.py`` (``pytest -m solutions``); they use the re-ranker
that notebook 03 saves under ``cu.paths.outputs_dir()`` (``models/reranker.pt``: ``outputs/`` unless
``FASHION_COURSE_OUTPUTS`` names another folder; the notebook prints the path).

Exercise 1 (predict, then run). A re-ranker of the top K only reorders what the first stage found, so no
re-ranked Recall@1 can exceed the dual encoder's Recall@K. ``first_stage_ceiling`` measures that ceiling for
K = 20 and K = 50: widening K raises the ceiling, at the price of K cross-encoder passes per query.

Exercise 2 (code, top-50 instead of top-20). ``rerank_top_k`` re-ranks the top 20 and the top 50 with the saved
matcher and times both. The cost grows with K (one matcher pass per candidate); the gain is bounded by exercise
1's ceiling and depends on whether the matcher ranks the extra, weaker candidates below the true item. Read both
numbers from the run before concluding.

Exercise 3 (think). The OFF grid shows cosines (in [-1, 1]); the ON grid shows the re-ranker's score, the matcher's
logit plus ``dual_weight`` x the dual logit (``logit_scale`` x cosine, up to 100 x the cosine). The two scales are
not comparable, so the figure labels them; compare ranks, not scores, across the two rows. A wider or deeper
matcher (``itm_width``, ``itm_layers``) costs more per step; whether it learns more within ``itm_epochs`` is
an experiment to run, not to assume.

Exercise 4 (think). On the drawings the captions describe attributes only, so items with identical attributes
are indistinguishable from the text: the oracle must pick one of them at random. To go beyond it the data would
need captions that tell those items apart (brand, print details, exact shade) — no model can recover what the
query does not say. On the photos (``real`` profile) the queries are shop titles, which do name the brand and
the product line: nearly every test title is unique, and an oracle that ranks the items with the same title first
sits far above the attribute oracle (the notebook computes both). The attribute oracle is no
ceiling there: it cannot separate items that share every label although their titles differ, and it asks labels
that hardly any title states (season, year) to agree. What limits a model on the photos is rather how much of
the title's words the pixels show: a brand is often a small logo, or not visible at all.

Exercise 5 (open). ALBEF ("Align before Fuse", Li et al., NeurIPS 2021) mines hard negatives for its ITM head from
the in-batch contrastive similarities, sampling them in proportion to their softmax similarity rather than always
taking the hardest; BLIP (Li et al., ICML 2022) keeps that scheme. On the drawings the captions describe attributes
only, and the attribute oracle row (below 1) shows that some items share every attribute with another one. Such an
item fits the caption exactly as well as the caption's own image does, and a dual encoder that reads the caption
well scores it about as high as that image: the hardest negative is likely to be one of them. Labelled 0, it is in
effect a false negative: the matcher is told to separate two pairs the text cannot tell apart, a contradiction it
can only meet by learning noise or by flattening its scores towards the constant guess. Sampling spreads the draws
over many near misses, so the few look-alikes are drawn only now and then and real near misses outweigh their
contradictory labels. The notebook does the same in a simpler way: ``HardNegativePairs`` draws uniformly from the
top ``mining_k`` instead of taking the first, and keeps a share ``itm_random_share`` of random negatives. With
labels at hand one can go further and drop the negatives whose attributes all equal the positive's (the test split's
``same_attributes`` matrix of the notebook, built on the train split), which removes these false negatives instead
of diluting them (``mine_hard_negatives`` leaves out only the query's own item, so an item with the very same
caption can be drawn too). On the photos an identical title among a caption's mined negatives is uncommon, but
many items are the same kind of product (same article type and colour) and differ mainly in the brand, which a
small photo barely shows: as hardest negatives they are nearly as contradictory, and sampling helps for the same
reason.

Exercise 6 (think). It needs a label on every gallery item and queries that name one. New or user-uploaded photos,
or a marketplace whose sellers tag sparsely or wrongly, give it nothing or the wrong thing to compare; a query about
what the labels do not cover (a print, a neckline shape, "like this one" with an image) gives it nothing to read.
Guessing the labels from the photos instead (the notebook's "labels from photos" rows, hard guesses and soft vote)
can recover only what the image tower already sees: compare those rows' gains with the catalogue labels' gain.
Together with the cross-encoder: add its log-probability as one more term of the final score (matcher logit +
``dual_weight`` x dual logit + a weight x label agreement, both weights picked on val), or let it pre-filter the
candidates only when the query names a label with high probability, and let the cross-encoder order the rest.

Exercise 7 (predict, then run). ``towers_tuned_or_frozen`` sets the two runs' records side by side. The first stage
cannot change: it is the same dual encoder (the towers tuned are a copy), so its recalls are equal in both records,
and re-ranking the top K still cannot go beyond its R@K. The re-ranked recalls can move either way: the copy's
tokens can adapt to what the matcher needs, but on a few hundred pairs they can also overfit. The training time
grows by a large factor: each step runs both towers forward and backward on every image and caption of the batch's
pairs, where the frozen matcher reads tokens computed once. One run is one seed, so whatever difference it shows
is no finding yet (README's rule: the same sign under every seed, beyond their spread); on real photos
``benchmarks/bench_rerank.py`` measured it under two seeds (its sentence on tuned towers): read there whether the
gain is beyond the seeds' spread, and how far it stays from a re-ranker worth its cost.

Exercise 8 (predict, then run). With one neighbour each vote puts all its share on one value, so the soft vote is the
hard guess: ``label_agreement`` scores a one-value vote exactly as that label, and the two rows give the same recalls
to the last digit (and val picks the same weight). ``label_votes_by_neighbours`` sets the records side by side; the
dual encoder's row is the same in all of them (the votes only re-rank its top K). With more voters a hard guess
becomes the majority of more, and farther, photos: it tends to drift towards the commonest values, so a query that
names a rarer one can lose its item's label. The soft vote keeps the minority values with their shares, so that item
keeps part of its score, and more voters smooth the shares rather than overrule them: more neighbours can help the
soft vote while they hurt the hard guesses. Whether they do here, and by more than one seed's noise, is the runs' to
say: compare both rows with the dual encoder's, and rerun under ``seed=1, 2`` before calling it.

Exercise 9 (predict, then run). ``pick_dual_weight`` takes the first weight with the best val R@1, and the short grid
is the start of the long one: a re-ranker whose pick was 3 or less keeps it, so its recalls are the same to the last
digit. Only a re-ranker that picked 10, 30 or 100 must take another weight, one val found worse, and its test recall
can then move either way, though it tends to fall. ``picks_by_grid`` sets the picks and R@1 of the two records side by
side. The short grid treats the re-rankers unequally: one whose best weight lies inside it is judged at its best, one
whose best weight lies beyond it at a worse one. If that is the hard guesses and not the soft vote, the soft vote's
lead over them is partly the grid's doing; the comparison is fair only when no pick sits at the grid's edge, which is
why the notebook's grid reaches far past the picks.
"""

from __future__ import annotations

import dataclasses
import time

import torch

import course_utils as cu


def first_stage_ceiling(dual, catalogue, query_style, ks=(1, 20, 50)) -> dict[int, float]:
    """Exercise 1: the dual encoder's full-gallery text→image Recall@K (the ceiling of a top-K re-ranker)."""
    images = cu.embed.encode_images(dual, catalogue, progress=False)
    texts = cu.embed.encode_texts(dual, cu.embed.caption_texts(catalogue, query_style), progress=False)
    return cu.metrics.recall_at_k(texts @ images.T, torch.arange(len(catalogue)), ks)


def rerank_top_k(dual, catalogue, query_style, reranker_path, candidates=(20, 50)) -> dict[int, dict]:
    """Exercise 2: re-ranked recall and seconds for each number of candidates K."""
    saved = cu.tasks.rerank.load_reranker(reranker_path)
    runs = {}
    for k in candidates:
        start = time.perf_counter()
        recall = cu.tasks.rerank.evaluate_reranker(dual, catalogue, query_style, dataclasses.replace(saved, k=k))
        runs[k] = {**recall, "seconds": time.perf_counter() - start}
    return runs


def towers_tuned_or_frozen(frozen: dict, tuned: dict) -> dict[str, dict[str, float]]:
    """Exercise 7: notebook 03's records with frozen and with tuned towers side by side (``{metric: {"frozen": …,
    "tuned": …}}``): the first stage, the re-ranked recalls and the matcher's training seconds."""
    names = ("dual/R@1", "dual/R@10", "rerank/R@1", "rerank/R@10", "train_seconds/itm")
    return {name: {"frozen": frozen["metrics"][name], "tuned": tuned["metrics"][name]} for name in names}


def label_votes_by_neighbours(records: dict[int, dict]) -> dict[str, dict[int, float]]:
    """Exercise 8: R@1 of the dual encoder and of the two labels-from-photos re-rankers in notebook 03's records, by
    their ``label_neighbours`` (``{row: {neighbours: R@1}}``)."""
    rows = {
        "dual encoder": "dual/R@1",
        "hard guesses": "photo_label_rerank/R@1",
        "soft vote": "photo_label_soft_rerank/R@1",
    }
    return {row: {k: records[k]["metrics"][name] for k in sorted(records)} for row, name in rows.items()}


def picks_by_grid(records: dict[str, dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """Exercise 9: each re-ranker's picked dual weight and its test R@1 in notebook 03's records, by grid
    (``{re-ranker: {grid: (weight, R@1)}}``; ``records``: grid name -> record)."""
    first = next(iter(records.values()))["metrics"]
    rerankers = [name.removesuffix("/dual_weight") for name in first if name.endswith("/dual_weight")]
    return {
        reranker: {
            grid: (record["metrics"][f"{reranker}/dual_weight"], record["metrics"][f"{reranker}/R@1"])
            for grid, record in records.items()
        }
        for reranker in rerankers
    }
