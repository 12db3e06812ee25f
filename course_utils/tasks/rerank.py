"""Task: re-ranking the dual encoder's top-K with a cross-encoder (notebook 03).

The modules are in ``course_utils.models.cross_modal`` and the token features in ``course_utils.embed``; this task
holds the recipe and its evaluation:

* training data and loss: :func:`mine_hard_negatives`, :class:`HardNegativePairs`, :func:`itm_batch_loss`, and
  the pair scorers :func:`token_pair_logits`, :func:`pooled_pair_logits`, :func:`live_pair_logits`; training the
  matcher with a copy of the towers, :func:`fit_with_tuned_towers`; on frozen features, once per cache key,
  :func:`fit_on_frozen_features`;
* re-ranking: :func:`top_k_candidates`, :func:`score_candidates`, :func:`rerank`, :func:`reranked_similarity`;
* a re-ranker with the catalogue's labels: :func:`fit_caption_labels`, :func:`label_agreement`, and the same labels
  as the photos suggest them, :func:`neighbour_label_shares` (the neighbours' vote) and :func:`strongest_labels`
  (its hard guess);
* evaluation: :func:`rerank_split` / :class:`RerankedSplit` (Recall@K after re-ranking), :func:`pick_dual_weight`
  (from a grid of weights that :func:`is_weight_grid` accepts);
* deployment: :func:`cross_encoder_reranker`, the hook ``FashionRetriever.reranker`` calls;
* a trained re-ranker on disk: :func:`save_reranker`, :func:`load_reranker`, :func:`evaluate_reranker` (what
  ``python -m course_utils.evaluate --task rerank`` runs).

Long on purpose: it is one task, read top to bottom in notebook 03's order.
"""

from __future__ import annotations

import copy
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..cache import (
    artifact_path,
    cached_artifact,
    content_sha256,
    has_intact_contents,
    torch_save_atomic,
    with_content_digest,
)
from ..checks import is_whole_number
from ..data.records import Catalogue
from ..embed import ImageTokens, TextTokens, caption_texts, encode_image_tokens, encode_text_tokens, trim_padding
from ..errors import error_summary
from ..metrics import recall_at_k
from ..models.clip_loader import ClipBundle
from ..models.cross_modal import ImageTextMatcher, MatcherWithEncoders
from ..models.tokens import text_token_features
from ..train import TrainConfig, TrainHistory, fit, recipe_key

if TYPE_CHECKING:  # scikit-learn is imported where it is used (only notebook 03's label re-rankers need it)
    from sklearn.pipeline import Pipeline

# (model, image rows (m,), text rows (m,)) -> (m,) match logits.
PairLogits = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


# --- training: hard negatives and the ITM loss --------------------------------------------------------------------


def mine_hard_negatives(similarity: torch.Tensor, k: int, exclude_positive: bool = True, seed: int = 0) -> torch.Tensor:
    """The ``k`` highest-scoring gallery items of every query other than its own: the negatives ITM learns from.

    Query ``i``'s positive is gallery item ``i`` (paired data); only that item is left out, so another item whose
    caption is word for word query ``i``'s can be among the negatives, labelled 0 although the text cannot tell it
    apart (notebook 03's exercise 5 discusses these false negatives). Exact score ties are broken by a random
    permutation drawn from ``seed``, so the result is deterministic.

    Args:
        similarity: ``(n, g)`` first-stage scores (e.g. the dual encoder's cosine similarities), ``g >= n``.
        k: negatives per query, ``k <= g - 1`` when excluding the positive.
        exclude_positive: never return the query's own item (True for training; False returns the plain top-k).
        seed: tie-breaking seed.

    Returns:
        ``(n, k) int64`` gallery columns, highest score first.
    """
    sim = torch.as_tensor(similarity, dtype=torch.float64).clone()
    n, g = sim.shape
    limit = g - 1 if exclude_positive else g
    if not 1 <= k <= limit:
        raise ValueError(f"k must be in [1, {limit}] for a gallery of {g}, got {k}")
    if exclude_positive:
        if g < n:
            raise ValueError(f"query i's positive is gallery item i, so the gallery needs >= {n} items, got {g}")
        sim[torch.arange(n), torch.arange(n)] = -torch.inf
    permutation = torch.randperm(g, generator=torch.Generator().manual_seed(seed))
    # sort by score descending, then by a random key: a stable sort of the permuted columns does exactly that
    order = torch.sort(sim[:, permutation], dim=1, descending=True, stable=True).indices[:, :k]
    return permutation[order]


class HardNegativePairs(Dataset):
    """Index triples for ITM training: a positive pair and one negative image and one negative caption for it.

    Item ``i`` yields ``{"index": i, "negative_image": j, "negative_text": t}``: image ``j`` is drawn from the
    hard negative images of caption ``i``, caption ``t`` from the hard negative captions of image ``i`` — a new
    draw per (seed, epoch, item), deterministic. A matcher trained from scratch on hard negatives only stayed at
    the constant guess in side runs made while writing notebook 03 (its training section reports them but does
    not reproduce them), so a curriculum can start with random negatives.

    Args:
        image_negatives: ``(n, k)`` hard negative images per caption (from :func:`mine_hard_negatives`).
        text_negatives: ``(n, k)`` hard negative captions per image.
        seed: sampling seed.
        easy_epochs: during the first ``easy_epochs`` epochs every negative is a uniformly random other item.
        random_share: afterwards, the probability (from 0 to 1) that a negative is random instead of hard.
    """

    def __init__(
        self,
        image_negatives: torch.Tensor,
        text_negatives: torch.Tensor,
        seed: int = 0,
        easy_epochs: int = 0,
        random_share: float = 0.0,
    ):
        if image_negatives.shape[0] != text_negatives.shape[0]:
            raise ValueError(f"negatives of {image_negatives.shape[0]} captions but {text_negatives.shape[0]} images")
        if not is_whole_number(easy_epochs, minimum=0):
            raise ValueError(
                f"easy_epochs must be a whole number >= 0 (epochs of random negatives before the hard ones), "
                f"got {easy_epochs!r}"
            )
        if isinstance(random_share, bool) or not isinstance(random_share, numbers.Real) or not 0 <= random_share <= 1:
            raise ValueError(
                f"random_share must be a share from 0 to 1 (a fraction, not a percent: 0.25 for 25%), "
                f"got {random_share!r}"
            )
        self.image_negatives, self.text_negatives, self.seed = image_negatives, text_negatives, seed
        self.easy_epochs, self.random_share = easy_epochs, random_share
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.image_negatives.shape[0]

    def _draw(self, rng: np.random.Generator, index: int, hard: torch.Tensor) -> int:
        if self.epoch < self.easy_epochs or rng.random() < self.random_share:
            other = int(rng.integers(len(self) - 1))
            return other + (other >= index)  # any item but the positive
        return int(hard[index, rng.integers(hard.shape[1])])

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return {
            "index": index,
            "negative_image": self._draw(rng, index, self.image_negatives),
            "negative_text": self._draw(rng, index, self.text_negatives),
        }


def itm_batch_loss(pair_logits: PairLogits) -> Callable[[nn.Module, dict], torch.Tensor]:
    """The ITM loss for :func:`course_utils.train.fit`: binary cross-entropy on 1 positive + 2 hard negatives.

    Each item of a :class:`HardNegativePairs` batch gives three pairs: (image i, caption i) labelled 1,
    (hard negative image, caption i) labelled 0 and (image i, hard negative caption) labelled 0.

    Args:
        pair_logits: ``(model, image_index (m,), text_index (m,)) -> (m,)`` logits, e.g. :func:`token_pair_logits`.
    """

    def batch_loss(model: nn.Module, batch: dict) -> torch.Tensor:
        positive, negative_image, negative_text = batch["index"], batch["negative_image"], batch["negative_text"]
        image_index = torch.cat([positive, negative_image, positive])
        text_index = torch.cat([positive, positive, negative_text])
        labels = torch.cat([torch.ones(len(positive)), torch.zeros(2 * len(positive))])
        logits = pair_logits(model, image_index, text_index)
        return F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device))

    return batch_loss


def token_pair_logits(images: ImageTokens, texts: TextTokens) -> PairLogits:
    """Pair scorer of an :class:`ImageTextMatcher` on cached (frozen-encoder) token features."""

    def pair_logits(model: nn.Module, image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        return model(
            images.tokens[image_index].to(device),
            texts.tokens[text_index].to(device),
            texts.padding[text_index].to(device),
        )

    return pair_logits


def pooled_pair_logits(images: ImageTokens, texts: TextTokens) -> PairLogits:
    """Pair scorer of a :class:`Seed002CrossModal` on cached pooled embeddings."""

    def pair_logits(model: nn.Module, image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        return model(images.pooled[image_index].to(device), texts.pooled[text_index].to(device))

    return pair_logits


def live_pair_logits(images: torch.Tensor, token_ids: torch.Tensor) -> PairLogits:
    """Pair scorer of a :class:`MatcherWithEncoders`: encodes the (unique) images and captions of each batch.

    Args:
        images: ``(n, 3, H, W)`` preprocessed images of the split.
        token_ids: ``(n, L)`` its tokenized captions.
    """

    def pair_logits(model: nn.Module, image_index: torch.Tensor, text_index: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        unique_images, image_row = torch.unique(image_index, return_inverse=True)
        unique_texts, text_row = torch.unique(text_index, return_inverse=True)
        return model(images[unique_images].to(device), token_ids[unique_texts].to(device), image_row, text_row)

    return pair_logits


def fit_with_tuned_towers(
    matcher: ImageTextMatcher,
    pairs: HardNegativePairs,
    dual: ClipBundle,
    items: Catalogue,
    captions: Sequence[str],
    config: TrainConfig,
    progress: bool = True,
) -> tuple[TrainHistory, ClipBundle]:
    """Train ``matcher`` together with a copy of ``dual``'s CLIP towers, which encode each batch's photos and
    captions live (notebook 03's ``tune_encoders=True``): the towers at a tenth of ``config.lr``, the matcher at
    ``config.lr``. ``config`` itself is left as it is.

    Args:
        matcher: the matcher to train (its parameters are the heads).
        pairs: the hard-negative pairs over ``items`` (row ``i``: item ``i`` and caption ``i``).
        dual: the dual encoder whose towers are copied; it is not changed.
        items: the split the pairs index; captions: their captions, in the same order.
        config: the matcher's training configuration (its ``seed`` names the copy).

    Returns:
        The training history and the tuned copy as a bundle (``dual`` with the copy's weights), whose tokens the
        matcher reads.
    """
    model = MatcherWithEncoders(copy.deepcopy(dual.model), matcher)
    images = torch.stack([dual.preprocess(item.image) for item in items])
    pair_logits = live_pair_logits(images, dual.tokenizer(list(captions)))
    towers_config = replace(config, lr=config.lr / 10, head_lr=config.lr)
    heads = list(matcher.parameters())
    history = fit(model, pairs, itm_batch_loss(pair_logits), towers_config, head_parameters=heads, progress=progress)
    tuned = replace(dual, model=model.clip.eval(), identity=f"{dual.identity}+itm-tuned-seed{config.seed}")
    return history, tuned


@dataclass
class TrainingRun:
    """One training of a re-ranker: its history and seconds, and whether this call trained (False: history and
    seconds are those of the run that trained, loaded from the cache with the weights). :func:`fit_on_frozen_features`
    hands one back; notebook 03 wraps its training with tuned towers in one too."""

    history: TrainHistory
    seconds: float
    trained_here: bool


def fit_on_frozen_features(
    model: nn.Module,
    pairs: HardNegativePairs,
    pair_scorer: Callable[[ImageTokens, TextTokens], PairLogits],
    images: ImageTokens,
    texts: TextTokens,
    config: TrainConfig,
    use_cache: bool = True,
    progress: bool = True,
) -> TrainingRun:
    """``fit(model, pairs, itm_batch_loss(pair_scorer(images, texts)), config)``, trained once and then loaded.

    The weights it ends with, its history and its seconds are cached under a key hashed from all the training
    reads: the model's class, ``config`` (its constructor arguments) and initial weights, the features, the
    negatives and how ``pairs`` draws them, and the recipe. A rerun of notebook 03 that changes only what is
    evaluated (``label_neighbours``, ``dual_weights``, ``rerank_k``) therefore loads the same weights instead of
    training them again; a damaged file is rebuilt like every cached artefact.

    Args:
        model: an :class:`ImageTextMatcher` or a :class:`Seed002CrossModal`, as constructed (seeded).
        pairs: the hard-negative pairs over the split that ``images`` and ``texts`` encode.
        pair_scorer: :func:`token_pair_logits` or :func:`pooled_pair_logits`.
        images, texts: the frozen dual encoder's features of that split.
        config: the training recipe.
        use_cache: False trains without reading or writing the cache.
        progress: show fit's progress bar.
    """
    device = next(model.parameters()).device
    parts = {
        "model": [type(model).__name__, model.config, content_sha256(model.state_dict())],
        "features": [pair_scorer.__name__, content_sha256([vars(images), vars(texts)])],
        "negatives": content_sha256([pairs.image_negatives, pairs.text_negatives]),
        "draws": [pairs.seed, pairs.easy_epochs, pairs.random_share],
        "train": recipe_key(config, device),
    }
    path = artifact_path("reranker-fit", parts, prefix=type(model).__name__)
    initial = copy.deepcopy(model.state_dict())
    trained_here = False

    def train() -> dict:
        nonlocal trained_here
        model.load_state_dict(initial)  # from the initial weights, even after a rejected cache file
        start = time.perf_counter()
        history = fit(model, pairs, itm_batch_loss(pair_scorer(images, texts)), config, progress=progress)
        trained_here = True
        return {"model": model.state_dict(), "history": asdict(history), "seconds": time.perf_counter() - start}

    def check(state: dict) -> None:  # a file that loads must also hold a history and its seconds
        model.load_state_dict(state["model"])
        if not isinstance(state["history"], dict) or not isinstance(state["seconds"], float):
            raise ValueError("no training history or seconds beside the weights")

    state = cached_artifact(path, train, use_cache, validate=check)
    model.load_state_dict(state["model"])
    return TrainingRun(TrainHistory(**state["history"]), state["seconds"], trained_here)


# --- re-ranking the dual encoder's top-K --------------------------------------------------------------------------


def top_k_candidates(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first stage: each query's ``k`` best gallery columns by dual-encoder score.

    Returns:
        ``(q, k) int64`` candidate columns and their ``(q, k)`` scores, best first.
    """
    scores, positions = torch.as_tensor(similarity).topk(k, dim=1)
    return positions, scores


@torch.inference_mode()
def score_candidates(
    model: nn.Module, pair_logits: PairLogits, candidate_positions: torch.Tensor, batch_size: int = 2048
) -> torch.Tensor:
    """Cross-encoder scores of each query (row) with each of its candidate gallery items.

    Args:
        model: the ITM model, in eval mode.
        pair_logits: scorer whose image rows are the gallery and text rows the queries.
        candidate_positions: ``(q, k)`` gallery columns per query.
        batch_size: pairs per forward pass.

    Returns:
        ``(q, k) float32`` logits on the CPU.
    """
    q, k = candidate_positions.shape
    image_index = candidate_positions.reshape(-1).cpu()
    text_index = torch.arange(q).repeat_interleave(k)
    chunks = [
        pair_logits(model, image_index[s : s + batch_size], text_index[s : s + batch_size]).float().cpu()
        for s in range(0, q * k, batch_size)
    ]
    return torch.cat(chunks).reshape(q, k)


def rerank(candidate_positions: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Reorder each query's candidates by the re-ranker's scores (descending; ties keep the first-stage order).

    Args:
        candidate_positions: ``(q, k)`` gallery columns in first-stage order.
        scores: ``(q, k)`` re-ranker scores of those candidates.

    Returns:
        ``(q, k)`` the same columns, best re-ranker score first.
    """
    order = torch.sort(torch.as_tensor(scores), dim=1, descending=True, stable=True).indices
    return torch.gather(torch.as_tensor(candidate_positions), 1, order)


def reranked_similarity(
    similarity: torch.Tensor, candidate_positions: torch.Tensor, scores: torch.Tensor
) -> torch.Tensor:
    """A full ``(q, g)`` score matrix whose ranking is "re-ranked top-K first, then the rest in dual order".

    Lets :func:`course_utils.metrics.recall_at_k` score a re-ranker: the candidates' scores are shifted above
    every non-candidate of their row (order and ties among them preserved); the others keep their first-stage score.

    Args:
        similarity: ``(q, g)`` first-stage scores.
        candidate_positions: ``(q, k)`` columns of the candidates.
        scores: ``(q, k)`` re-ranker scores.

    Returns:
        ``(q, g) float64``.
    """
    final = torch.as_tensor(similarity, dtype=torch.float64).clone()
    scores = torch.as_tensor(scores, dtype=torch.float64)
    shifted = scores - scores.min(dim=1, keepdim=True).values + final.max(dim=1, keepdim=True).values + 1.0
    final.scatter_(1, torch.as_tensor(candidate_positions), shifted)
    return final


# --- re-ranking with the catalogue's labels -----------------------------------------------------------------------


def fit_caption_labels(captions: Sequence[str], attributes: Sequence[dict[str, str]]) -> dict[str, Pipeline]:
    """Per attribute, a classifier from a caption's words to its item's label: bag of words and word pairs, then a
    logistic regression (scikit-learn), fitted on the ``train`` split's captions and labels.

    Attributes with a single value in training (nothing to tell apart) get no classifier.

    Args:
        captions: one caption per training item (the query style the re-ranker will see).
        attributes: that item's labels, e.g. ``{"articleType": "Tshirts", "baseColour": "Black"}``.

    Returns:
        attribute name -> fitted pipeline (``predict_proba`` over its ``classes_``).
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if len(captions) != len(attributes):
        raise ValueError(f"{len(captions)} captions but {len(attributes)} attribute dicts")
    models = {}
    for name in sorted({key for labels in attributes for key in labels}):
        texts, values = zip(*[(text, labels[name]) for text, labels in zip(captions, attributes) if name in labels])
        if len(set(values)) > 1:
            classifier = LogisticRegression(C=10.0, max_iter=3000)
            models[name] = make_pipeline(CountVectorizer(ngram_range=(1, 2)), classifier).fit(texts, values)
    return models


def label_agreement(
    models: dict[str, Pipeline],
    queries: Sequence[str],
    gallery_labels: Sequence[dict[str, str | dict[str, float]]],
    floor: float = 1e-3,
) -> torch.Tensor:
    """``(q, g) float64``: how well each gallery item's labels fit each query's words — the sum over attributes of
    ``log P(the query names gallery item j's label)``, with P from :func:`fit_caption_labels`.

    A gallery label is either one value (the catalogue's, or a hard guess) or the shares of several values (a vote,
    :func:`neighbour_label_shares`); then P is the chance that the query names the label the shares draw,
    ``sum over values v of P(the query names v) x share(v)``. An item without a label for an attribute is scored as
    one whose label is unknown: its shares are the mean of the labelled gallery items' (the catalogue's mix of
    values), so it scores neither as a match nor as a mismatch (a term of 0 = log 1 would rank it above every
    labelled item). A label the classifier never saw gets ``log(floor)``, as does a probability below ``floor``; an
    attribute no gallery item carries adds no term.
    """
    agreement = torch.zeros(len(queries), len(gallery_labels), dtype=torch.float64)
    for name, model in models.items():
        query_p = torch.from_numpy(model.predict_proba(list(queries)))  # (q, classes) float64
        column = {value: c for c, value in enumerate(model.classes_)}
        shares = torch.zeros(len(gallery_labels), len(column), dtype=torch.float64)  # (g, classes)
        labelled = torch.tensor([name in labels for labels in gallery_labels], dtype=torch.bool)
        if not labelled.any():
            continue
        for j, labels in enumerate(gallery_labels):
            vote = labels.get(name, {})
            for value, share in (vote if isinstance(vote, dict) else {vote: 1.0}).items():
                if value in column:  # a value the classifier never saw adds nothing: P = 0, floored
                    shares[j, column[value]] += share
        shares[~labelled] = shares[labelled].mean(dim=0)  # an unknown label: the catalogue's mix of values
        agreement += (query_p @ shares.T).clamp(min=floor).log()
    return agreement


def neighbour_label_shares(
    train_embeddings: torch.Tensor, train_attributes: Sequence[dict[str, str]], embeddings: torch.Tensor, k: int = 10
) -> list[dict[str, dict[str, float]]]:
    """Each item's labels as its photo suggests them: per attribute, the vote of the ``k`` training items whose image
    embeddings are nearest (cosine), each vote weighted by 1 / distance (scikit-learn's ``KNeighborsClassifier``).

    The result has the form of a catalogue's labels with each value replaced by the vote's shares, so
    :func:`label_agreement` reads it in their place (a re-ranker with labels predicted from pixels instead of taken
    from the metadata); :func:`strongest_labels` turns it into one hard guess per attribute.

    Args:
        train_embeddings: ``(n, d)`` image embeddings of the training items.
        train_attributes: their labels; an item without a label for an attribute does not vote on it.
        embeddings: ``(m, d)`` image embeddings of the items to label.
        k: neighbours per vote (fewer when fewer training items carry the attribute).

    Returns:
        ``m`` dicts, attribute name -> {value: its share of the vote} (the values with a share above 0, in the
        classifier's order of values), for every attribute of the training labels.
    """
    if len(train_embeddings) != len(train_attributes):
        raise ValueError(f"{len(train_embeddings)} training embeddings but {len(train_attributes)} attribute dicts")
    from sklearn.neighbors import KNeighborsClassifier

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    votes = [{} for _ in range(len(embeddings))]
    for name in sorted({key for labels in train_attributes for key in labels}):
        rows = [i for i, labels in enumerate(train_attributes) if name in labels]
        vote = KNeighborsClassifier(min(k, len(rows)), weights="distance", metric="cosine")
        vote.fit(train_embeddings[rows].numpy(), [train_attributes[i][name] for i in rows])
        for item_votes, shares in zip(votes, vote.predict_proba(embeddings.numpy())):
            item_votes[name] = {str(value): float(share) for value, share in zip(vote.classes_, shares) if share > 0}
    return votes


def strongest_labels(votes: Sequence[dict[str, dict[str, float]]]) -> list[dict[str, str]]:
    """One hard guess per attribute: the value with the largest share of the vote (the first in the vote's order
    on a tie, as ``KNeighborsClassifier.predict``)."""
    return [{name: max(shares, key=shares.get) for name, shares in item.items()} for item in votes]


# --- evaluation ---------------------------------------------------------------------------------------------------


@dataclass
class RerankedSplit:
    """One split's first stage and its re-rankers' scores: what Recall@K after re-ranking is computed from.

    Query ``i`` is the caption of gallery item ``i`` (paired data).

    Attributes:
        similarity: ``(q, g)`` the dual encoder's cosine similarities.
        candidates: ``(q, k)`` each query's top-k gallery columns by cosine, best first.
        dual_logits: ``(q, k)`` the dual encoder's logits (``logit_scale x cosine``) of those candidates.
        scores: re-ranker name -> its ``(q, k)`` logits of the candidates.
    """

    similarity: torch.Tensor
    candidates: torch.Tensor
    dual_logits: torch.Tensor
    scores: dict[str, torch.Tensor]

    def final_similarity(self, name: str, dual_weight: float) -> torch.Tensor:
        """``(q, g)`` scores after re-ranking the top-k by ``name``'s logit + ``dual_weight`` x the dual logit."""
        return reranked_similarity(self.similarity, self.candidates, self.scores[name] + dual_weight * self.dual_logits)

    def recall(self, name: str, dual_weight: float, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
        """Full-gallery Recall@K after re-ranking (see :meth:`final_similarity`)."""
        targets = torch.arange(self.similarity.shape[0])
        return recall_at_k(self.final_similarity(name, dual_weight), targets, ks)


def rerank_split(
    bundle, images: ImageTokens, queries: TextTokens, rerankers: dict[str, tuple[nn.Module, PairLogits]], k: int
) -> RerankedSplit:
    """The dual encoder's top-``k`` of every query and each re-ranker's logits for them.

    Args:
        bundle: the dual encoder (its ``logit_scale`` turns cosines into logits).
        images: the split's image token features (their ``pooled`` rows are the gallery).
        queries: the split's caption token features (their ``pooled`` rows are the queries).
        rerankers: name -> (model in eval mode, pair scorer whose image rows are the gallery, text rows the queries).
        k: candidates per query.
    """
    similarity = queries.pooled @ images.pooled.T
    candidates, dual_scores = top_k_candidates(similarity, k)
    scores = {name: score_candidates(model, scorer, candidates) for name, (model, scorer) in rerankers.items()}
    return RerankedSplit(similarity, candidates, bundle.model.logit_scale.exp().item() * dual_scores, scores)


def is_weight_grid(weights: object) -> bool:
    """True for a non-empty list, tuple or 1-D numpy array of numbers (not bools): weights :func:`pick_dual_weight`
    can pick from.

    Notebook 03 checks its ``dual_weights`` parameter with it in its set-up, before the re-rankers train.
    """
    if isinstance(weights, np.ndarray):  # picked from as before the check existed
        weights = weights.tolist() if weights.ndim == 1 else None
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or not weights:
        return False
    return all(isinstance(w, numbers.Real) and not isinstance(w, bool) for w in weights)


def pick_dual_weight(run: RerankedSplit, name: str, weights: Sequence[float]) -> float:
    """The weight of the dual logit that gives re-ranker ``name`` the best R@1 on ``run`` (the first on ties).

    Pick it on a validation split and report on test.

    Raises:
        ValueError: ``weights`` is not a non-empty list of numbers (:func:`is_weight_grid`).
    """
    if not is_weight_grid(weights):
        raise ValueError(f"weights must be a non-empty list of numbers to pick the dual weight from, got {weights!r}")
    recall_at_1 = [run.recall(name, weight, ks=(1,))[1] for weight in weights]
    return weights[recall_at_1.index(max(recall_at_1))]


# --- deployment: the FashionRetriever hook --------------------------------------------------------------------------


def cross_encoder_reranker(
    bundle,
    gallery: ImageTokens,
    model: nn.Module,
    dual_weight: float = 0.0,
    pair_scorer: Callable[[ImageTokens, TextTokens], PairLogits] = token_pair_logits,
    towers=None,
) -> Callable[[Sequence[str], torch.Tensor, torch.Tensor], torch.Tensor]:
    """A re-ranker for ``FashionRetriever.reranker``: text search as deployed, dual encoder then cross-encoder.

    The gallery's image tokens are computed offline; a query costs one text-tower pass for its tokens and one
    cross-encoder pair per candidate.

    Args:
        bundle: the retriever's dual encoder (its ``logit_scale`` turns the first stage's cosines into logits).
        gallery: token features of the retriever's gallery (:func:`course_utils.embed.encode_image_tokens`) by
            ``towers``.
        model: the re-ranker (``ImageTextMatcher`` or ``Seed002CrossModal``), in eval mode.
        dual_weight: final score = re-ranker logit + ``dual_weight`` x the dual encoder's logit; 0 uses the
            re-ranker alone.
        pair_scorer: :func:`token_pair_logits` (token-level matcher) or :func:`pooled_pair_logits` (seed 002).
        towers: the CLIP whose towers give the matcher its tokens, the query's here and the gallery's in ``gallery``:
            the copy trained with the matcher (notebook 03's ``tune_encoders=True``); None: ``bundle``'s own.

    Returns:
        ``rerank(texts, candidates (q, k) gallery rows, cosines (q, k)) -> (q, k)`` final scores.
    """
    scale = bundle.model.logit_scale.exp().item()
    towers = towers or bundle

    @torch.inference_mode()
    def score_texts(texts: Sequence[str], candidates: torch.Tensor, cosines: torch.Tensor) -> torch.Tensor:
        states, padding, pooled = text_token_features(towers.model, towers.tokenizer(list(texts)).to(towers.device))
        states, padding = trim_padding(states.float().cpu(), padding.cpu())
        queries = TextTokens(states, padding, pooled.float().cpu())
        scores = score_candidates(model, pair_scorer(gallery, queries), candidates)
        return scores + dual_weight * scale * cosines.float()

    return score_texts


# --- a trained re-ranker on disk (notebook 03 writes it, ``python -m course_utils.evaluate --task rerank`` reads it)


def save_reranker(
    path: str | Path, matcher: ImageTextMatcher, dual_bundle, dual_weight: float, k: int, towers=None
) -> Path:
    """Save a matcher with what re-ranking needs.

    The file holds the matcher's config and weights, the dual encoder's weights (its top-``k`` are the candidates,
    and its tokens feed the matcher unless ``towers`` is given) and the dual weight picked on validation. ``towers``:
    the copy of the CLIP trained with the matcher (notebook 03's ``tune_encoders=True``), whose weights are saved too
    and whose tokens the matcher reads.
    """
    path = Path(path)
    state = {
        "matcher_config": matcher.config,
        "matcher": matcher.state_dict(),
        "dual_identity": dual_bundle.identity,
        "dual": dual_bundle.model.state_dict(),
        "dual_weight": float(dual_weight),
        "k": int(k),
        **({"towers_identity": towers.identity, "towers": towers.model.state_dict()} if towers is not None else {}),
    }
    torch_save_atomic(with_content_digest(state), path)
    return path


@dataclass
class SavedReranker:
    """What :func:`load_reranker` returns."""

    matcher: ImageTextMatcher
    dual_state: dict
    dual_identity: str
    dual_weight: float
    k: int
    towers_state: dict | None = None  # the tuned copy's weights, whose tokens the matcher reads; None: the dual's
    towers_identity: str | None = None

    def towers(self, dual_bundle):
        """The CLIP whose tokens the matcher reads: ``dual_bundle`` itself, or a copy of it with the tuned towers'
        weights."""
        if self.towers_state is None:
            return dual_bundle
        model = copy.deepcopy(dual_bundle.model)
        model.load_state_dict(self.towers_state)
        return replace(dual_bundle, model=model.eval(), identity=self.towers_identity)


def load_reranker(path: str | Path) -> SavedReranker:
    """Read a file written by :func:`save_reranker` (the matcher in eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no re-ranker file at {path}; notebook 03 writes one (outputs/models/)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        matcher = ImageTextMatcher(**state["matcher_config"])
        matcher.load_state_dict(state["matcher"])
        saved = SavedReranker(
            matcher.eval(),
            state["dual"],
            state["dual_identity"],
            state["dual_weight"],
            state["k"],
            state.get("towers"),
            state.get("towers_identity"),
        )
    except Exception as err:  # truncated file, another kind of checkpoint, a config that does not fit, a key missing
        raise ValueError(
            f"{path} is not a re-ranker saved by save_reranker ({error_summary(err)}); "
            "rerun notebook 03 to write it again"
        ) from None
    if not has_intact_contents(state):  # a changed byte among the weights unpickles all the same
        raise ValueError(
            f"{path}: its weights differ from the digest saved with them (a byte changed on a damaged disk or copy); "
            "rerun notebook 03 to write it again"
        )
    return saved


def evaluate_reranker(
    dual_bundle, gallery: Catalogue, query_style: str | None, reranker: SavedReranker, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Full-gallery text→image recall of the dual encoder alone and re-ranked: ``{"dual/R@K", "rerank/R@K"}``.

    Query ``i`` is item ``i``'s caption; the dual encoder is ``dual_bundle`` (the one saved with the re-ranker), and
    the matcher reads the tokens of the towers it was trained with (:meth:`SavedReranker.towers`).
    """
    captions = caption_texts(gallery, query_style)
    images = encode_image_tokens(dual_bundle, gallery, progress=False)
    queries = encode_text_tokens(dual_bundle, captions, progress=False)
    towers = reranker.towers(dual_bundle)
    matcher_tokens = (images, queries)
    if towers is not dual_bundle:
        matcher_tokens = (
            encode_image_tokens(towers, gallery, progress=False),
            encode_text_tokens(towers, captions, progress=False),
        )
    k = min(reranker.k, len(gallery))
    run = rerank_split(
        dual_bundle, images, queries, {"rerank": (reranker.matcher, token_pair_logits(*matcher_tokens))}, k
    )
    dual = recall_at_k(run.similarity, torch.arange(len(gallery)), ks)
    return {
        **{f"dual/R@{key}": value for key, value in dual.items()},
        **{f"rerank/R@{key}": value for key, value in run.recall("rerank", reranker.dual_weight, ks).items()},
    }
