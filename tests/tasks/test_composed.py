"""The composed-retrieval protocol: triplets, match groups, reference exclusion, chunking and chance levels."""

import math

import pytest
import torch

from course_utils.data import Catalogue, CompositionTriplet, Item, load_catalogue
from course_utils.models.compositors import make_compositor
from course_utils.tasks.composed import (
    DEFAULT_MATCH,
    TripletFeatureDataset,
    caption_swap_triplets,
    chance_composed_recall,
    composed_batch_loss,
    composed_queries,
    composed_recall_at_k,
    composed_triplets,
    default_match,
    match_groups,
    top_k_excluding,
    validation_queries,
)


def _item(item_id: str, caption: str = "", split: str = "test", **attributes) -> Item:
    return Item(item_id, (caption or item_id,), ("title",), attributes, split)


@pytest.fixture(scope="module")
def synthetic():
    return load_catalogue("synthetic", size={"pretrain": 0, "train": 80, "val": 0, "test": 80}, seed=0, use_cache=False)


def test_synthetic_targets_differ_exactly_as_changed_says(synthetic):
    for split in ("train", "test"):
        part = synthetic.split(split)
        assert len(part.triplets) > 20
        for triplet in part.triplets:
            reference, target = part.by_id(triplet.reference_id), part.by_id(triplet.target_id)
            assert triplet.changed and reference.item_id != target.item_id
            for name, (old, new) in triplet.changed.items():
                assert (reference.attributes[name], target.attributes[name]) == (old, new) and old != new
            unchanged = set(reference.attributes) - set(triplet.changed)
            assert set(target.attributes) == set(reference.attributes)
            assert all(reference.attributes[a] == target.attributes[a] for a in unchanged)


def test_synthetic_reference_never_matches_its_target(synthetic):
    test = synthetic.split("test")
    queries = composed_queries(test, test.triplets, "attributes")
    assert queries.dropped == 0 and len(queries) == len(test.triplets)
    relevant = queries.relevance()
    rows = torch.arange(len(queries))
    assert relevant[rows, queries.target_rows].all()
    assert not relevant[rows, queries.reference_rows].any()
    for i, triplet in enumerate(queries.triplets):  # relevant == same attributes as the target
        target = test.by_id(triplet.target_id)
        expected = [dict(item.attributes) == dict(target.attributes) for item in test]
        assert relevant[i].tolist() == expected


def test_match_groups():
    catalogue = Catalogue("toy", [_item("a", "red dress", colour="red"), _item("b", "red dress", colour="red"),
                                  _item("c", "blue dress", colour="blue")])  # fmt: skip
    assert match_groups(catalogue, "caption").tolist() == [0, 0, 1]
    assert match_groups(catalogue, "item").tolist() == [0, 1, 2]
    assert match_groups(catalogue, ("colour",)).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="unknown match rule"):
        match_groups(catalogue, "colour")


def _toy_protocol():
    # gallery rows 0..4; query 0: reference 0 -> target 1 (row 2 has the same caption as the target)
    gallery = Catalogue("toy", [_item("r", "red dress"), _item("t", "blue dress"), _item("t2", "blue dress"),
                                _item("x", "green dress"), _item("y", "black dress")])  # fmt: skip
    triplets = [CompositionTriplet("r", "replace red with blue", "t"), CompositionTriplet("x", "make it red", "r"),
                CompositionTriplet("r", "gone", "missing")]  # fmt: skip
    return gallery, composed_queries(gallery, triplets, "caption")


def test_the_reference_image_is_excluded_from_the_ranking():
    gallery, queries = _toy_protocol()
    assert queries.dropped == 1 and queries.texts == ["replace red with blue", "make it red"]
    eye = torch.eye(5)
    # query 0 scores: reference 0.9 (would be rank 1), y 0.8, t2 0.5, t 0.4, x 0.1
    # query 1 scores: reference x 0.9, r 0.3 (its target), others 0.6, 0.5, 0.1
    scores = torch.tensor([[0.9, 0.4, 0.5, 0.1, 0.8], [0.3, 0.6, 0.5, 0.9, 0.1]])
    query_features = scores  # gallery features = identity, so similarity == scores
    recall = composed_recall_at_k(query_features, eye, queries, ks=(1, 2, 3, 4))
    # query 0 without its reference: y, t2 (hit at 2); query 1 without its reference: t, t2, r (hit at 3)
    assert recall == {1: 0.0, 2: 0.5, 3: 1.0, 4: 1.0}
    top = top_k_excluding(query_features, eye, queries.reference_rows, k=4)
    assert top.tolist() == [[4, 2, 1, 3], [1, 2, 0, 4]]


def test_recall_does_not_depend_on_chunking():
    gallery, queries = _toy_protocol()
    features = torch.nn.functional.normalize(torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    query_features = features[queries.reference_rows] + 0.1
    whole = composed_recall_at_k(query_features, features, queries, ks=(1, 2, 4))
    assert composed_recall_at_k(query_features, features, queries, ks=(1, 2, 4), chunk_size=1) == whole


def test_no_composed_queries_is_refused_plainly():
    """A protocol whose triplets all fall outside the gallery has no queries (was: ZeroDivisionError)."""
    gallery, _ = _toy_protocol()
    none_left = composed_queries(gallery, [CompositionTriplet("r", "gone", "missing")], "caption")
    assert len(none_left) == 0 and none_left.dropped == 1
    with pytest.raises(ValueError, match="no composed queries"):
        composed_recall_at_k(torch.empty(0, 5), torch.eye(5), none_left, ks=(1,))


def test_chance_level_counts_matching_items_in_a_gallery_without_the_reference():
    _, queries = _toy_protocol()
    # g - 1 = 4 candidates; query 0 has 2 matching items, query 1 has 1
    expected_r1 = (2 / 4 + 1 / 4) / 2
    expected_r2 = ((1 - math.comb(2, 2) / math.comb(4, 2)) + 2 / 4) / 2
    assert queries.relevant_counts().tolist() == [2, 1]
    chance = chance_composed_recall(queries, ks=(1, 2))
    assert chance[1] == pytest.approx(expected_r1) and chance[2] == pytest.approx(expected_r2)


def test_triplet_feature_dataset_serves_reference_text_and_target():
    gallery, queries = _toy_protocol()
    images, texts = torch.arange(15.0).reshape(5, 3), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    sample = TripletFeatureDataset(images, texts, queries)[1]  # x --"make it red"--> r
    assert torch.equal(sample["image"], images[3]) and torch.equal(sample["target"], images[0])
    assert torch.equal(sample["text"], texts[1])
    assert int(sample["target_group"]) == int(queries.groups[0]) and int(sample["reference_group"]) == 2


def test_caption_swap_triplets_differ_in_one_word():
    items = [_item("1", "red floral dress"), _item("2", "blue floral dress"), _item("3", "red striped dress"),
             _item("4", "red floral skirt top"), _item("5", "green coat")]  # fmt: skip
    triplets = caption_swap_triplets(items, seed=0, per_reference=3)
    assert triplets == caption_swap_triplets(items, seed=0, per_reference=3)
    by_id = {item.item_id: item for item in items}
    assert {t.reference_id for t in triplets} == {"1", "2", "3"}
    for t in triplets:
        source, target = by_id[t.reference_id].captions[0].split(), by_id[t.target_id].captions[0].split()
        differing = [(a, b) for a, b in zip(source, target) if a != b]
        assert len(source) == len(target) and differing == [t.changed["word"]]
        assert t.modification == f"replace {differing[0][0]} with {differing[0][1]}"


def test_fashion_product_training_triplets_are_colour_swaps_on_the_train_split():
    train = Catalogue("fp/train", [
        _item(str(i), split="train", articleType="Tshirts", gender="Men", baseColour=colour)
        for i, colour in enumerate(["Red", "Blue", "Red", "Black"])
    ])  # fmt: skip
    test = Catalogue("fp/test", [_item("9", articleType="Tshirts", gender="Men", baseColour="Red")])
    train_triplets, test_triplets = composed_triplets(train, test, "fashion-product-small", seed=0)
    assert len(train_triplets) == 4 and test_triplets == []
    for t in train_triplets:
        old, new = t.changed["baseColour"]
        assert train.by_id(t.reference_id).attributes["baseColour"] == old != new
        assert train.by_id(t.target_id).attributes["baseColour"] == new


def test_deepfashion_triplets_swap_the_tops_pattern_within_gender_and_category_on_each_split():
    """DeepFashion-MultiModal ships no triplets and no colours: both splits get pattern swaps, and a target
    matches when gender, category and the new pattern agree."""

    def photo(item_id, split, pattern, category="Tees_Tanks"):
        return _item(item_id, split=split, gender="women", category=category, upper_pattern=pattern)

    train = Catalogue(
        "df/train",
        [photo("a", "train", "striped"), photo("b", "train", "floral"), photo("c", "train", "floral", "Dresses")],
    )
    test = Catalogue("df/test", [photo("d", "test", "graphic"), photo("e", "test", "pure color")])
    train_triplets, test_triplets = composed_triplets(train, test, "deepfashion-multimodal", seed=0)
    assert {(t.reference_id, t.target_id) for t in train_triplets} == {("a", "b"), ("b", "a")}  # never the dress
    assert {(t.reference_id, t.target_id) for t in test_triplets} == {("d", "e"), ("e", "d")}
    assert all(t.modification.startswith("replace ") for t in train_triplets + test_triplets)
    assert DEFAULT_MATCH["deepfashion-multimodal"] == ("gender", "category", "upper_pattern")


def test_validation_queries_are_the_val_splits_by_the_training_rule_or_none():
    """Notebook 06 picks the compositor to keep on them: colour swaps among the val items, ranked among those items;
    None when there is nothing to pick on (no val split, no triplet there, or too few items to rank 10 others)."""

    def shirt(item_id, split, colour):
        return _item(item_id, split=split, articleType="Tshirts", gender="Men", baseColour=colour)

    colours = ["Red", "Blue", "Black", "White"] * 3
    items = [shirt(f"v{i}", "val", colour) for i, colour in enumerate(colours)] + [shirt("t", "train", "Red")]
    match = default_match("fashion-product-small")
    queries = validation_queries(Catalogue("fp", items), "fashion-product-small", seed=0, match=match)
    assert queries.gallery.ids == [f"v{i}" for i in range(12)] and len(queries) == 12  # one swap per reference
    for t in queries.triplets:
        old, new = t.changed["baseColour"]
        assert queries.gallery.by_id(t.reference_id).attributes["baseColour"] == old != new
    assert validation_queries(Catalogue("fp", items), "fashion-product-small", seed=0, match=match, k=12) is None
    assert validation_queries(Catalogue("fp", items[-1:]), "fashion-product-small", match=match) is None  # no val
    one_colour = [shirt(f"v{i}", "val", "Red") for i in range(12)]
    assert validation_queries(Catalogue("fp", one_colour), "fashion-product-small", match=match) is None


def test_synthetic_validation_queries_are_the_catalogues_own_val_triplets():
    catalogue = load_catalogue(
        "synthetic", size={"pretrain": 0, "train": 20, "val": 60, "test": 20}, seed=0, use_cache=False
    )
    queries = validation_queries(catalogue, "synthetic", seed=0)
    assert queries.triplets == catalogue.split("val").triplets and len(queries) > 10
    assert {catalogue.by_id(i).split for i in queries.gallery.ids} == {"val"}


def _unit_rows(seed: int, rows: int = 5, dim: int = 8) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _classification_by_hand(queries, targets, scale, groups) -> float:
    """Mean over i of -log softmax at target i, among target i and the targets of other groups."""
    terms = []
    for i, query in enumerate(queries.tolist()):
        logits = [scale * sum(a * b for a, b in zip(query, target)) for target in targets.tolist()]
        kept = [logit for j, logit in enumerate(logits) if j == i or groups[j] != groups[i]]
        terms.append(math.log(sum(math.exp(logit) for logit in kept)) - logits[i])
    return sum(terms) / len(terms)


def _soft_triplet_by_hand(queries, targets, groups) -> float:
    """Mean of log(1 + exp(|q_i - t_i|^2 - |q_i - t_j|^2)) over the pairs (i, j) of different groups."""
    distance = [[sum((a - b) ** 2 for a, b in zip(q, t)) for t in targets.tolist()] for q in queries.tolist()]
    terms = [
        math.log1p(math.exp(distance[i][i] - distance[i][j]))
        for i in range(len(groups))
        for j in range(len(groups))
        if groups[i] != groups[j]
    ]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("loss, symmetry", [("classification", 0.0), ("soft_triplet", 1.0)])
def test_batch_loss_trains_the_compositor(loss, symmetry):
    name = "ComplexRotation (ComposeAE)" if symmetry else "TIRG"
    model = make_compositor(name, 8, hidden=16, dropout=0.0, seed=0)
    # the target and reference groups differ, so the symmetry term must use the reference's
    groups = {"target_group": torch.tensor([0, 0, 1, 2, 3]), "reference_group": torch.tensor([0, 1, 1, 2, 3])}
    batch = {"image": _unit_rows(0), "text": _unit_rows(1), "target": _unit_rows(2), **groups}
    value = composed_batch_loss(loss, scale=10.0, symmetry_weight=symmetry)(model, batch)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        queries = model(batch["image"], batch["text"])
        if loss == "classification":
            expected = _classification_by_hand(queries, batch["target"], 10.0, batch["target_group"].tolist())
        else:
            back = model(batch["target"], batch["text"], conjugate=True)
            expected = _soft_triplet_by_hand(queries, batch["target"], batch["target_group"].tolist())
            expected += symmetry * _soft_triplet_by_hand(back, batch["image"], batch["reference_group"].tolist())
    assert value.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="loss must be"):
        composed_batch_loss("hinge")


def test_default_match_reads_the_rule_and_names_where_to_add_a_missing_one():
    """Notebook 06 and ``evaluate --task composed`` read the rule through it: a dataset registered without one got a
    bare ``KeyError``."""
    assert default_match("fashion200k") == DEFAULT_MATCH["fashion200k"] == "caption"
    with pytest.raises(ValueError, match=r"dataset 'my-shop' has no composed-retrieval match rule; add one to "):
        default_match("my-shop")
