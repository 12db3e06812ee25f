"""The evaluation entry point: each task's record comes from the same task functions the notebooks call."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace

import pytest
import torch

from course_utils import evaluate
from course_utils.data import attribute_retrieval_protocol
from course_utils.data.records import CompositionTriplet
from course_utils.embed import encode_images, encode_texts
from course_utils.file_digests import content_digest
from course_utils.metrics import chance_recall
from course_utils.models.cross_modal import ImageTextMatcher
from course_utils.tasks import attributes as attribute_tasks
from course_utils.tasks import composed as composed_tasks
from course_utils.tasks import rerank
from course_utils.tasks.experiment import Experiment
from course_utils.tasks.retrieval import evaluate_retrieval
from tests.conftest import flip_a_tensor_byte


@pytest.fixture
def experiment(small_catalogue, tiny_bundle, isolated_cache) -> Experiment:
    test = small_catalogue.split("test")
    test = test.subset(test.ids[:60], name="test")
    return Experiment(small_catalogue, tiny_bundle, small_catalogue.split("train"), test, "description")


def test_retrieval_record_is_the_task_function_plus_chance(experiment):
    metrics, identity = evaluate.evaluate("retrieval", experiment, experiment.bundle, "synthetic")
    assert identity == experiment.bundle.identity
    expected = evaluate_retrieval(experiment.bundle, experiment.test, "description", (1, 5, 10))
    assert {k: metrics[k] for k in expected} == expected
    assert metrics["chance R@10"] == pytest.approx(chance_recall(10, 60))


def test_attributes_and_composed_records_are_fractions_per_condition_and_compositor(experiment):
    attributes, _ = evaluate.evaluate("attributes", experiment, experiment.bundle, "synthetic")
    assert "mAP/overall" in attributes and "mAP/colour" in attributes
    assert all(0.0 < value <= 1.0 for value in attributes.values())
    composed, _ = evaluate.evaluate("composed", experiment, experiment.bundle, "synthetic")
    for name in ("image only", "text only", "sum", "chance"):
        assert 0.0 <= composed[f"{name}/R@1"] <= composed[f"{name}/R@10"] <= composed[f"{name}/R@50"] <= 1.0
    # Each record equals the task functions run here on the test split's own features, each compositor's queries
    # written out by hand (image only, text only, their normalised sum).
    test, bundle = experiment.test, experiment.bundle
    features = encode_images(bundle, test, progress=False)
    conditions = attribute_tasks.DEFAULT_CONDITIONS.get("synthetic") or list(test.attribute_names)
    protocol = attribute_retrieval_protocol(test, conditions, seed=0)
    expected = attribute_tasks.evaluate_attribute_retrieval(lambda positions, _: features[positions], protocol, test)
    assert attributes == {f"mAP/{name}": value for name, value in expected.items()}

    _, triplets = composed_tasks.composed_triplets(experiment.train, test, "synthetic", 0)
    queries = composed_tasks.composed_queries(test, triplets, composed_tasks.DEFAULT_MATCH["synthetic"])
    texts = encode_texts(bundle, queries.texts, progress=False)
    references = features[queries.reference_rows]
    by_hand = {
        "image only": references,
        "text only": texts,
        "sum": references + texts,
    }
    for name, query in by_hand.items():
        recall = composed_tasks.composed_recall_at_k(
            torch.nn.functional.normalize(query, dim=-1), features, queries, (1, 10, 50)
        )
        assert {k: composed[f"{name}/R@{k}"] for k in (1, 10, 50)} == pytest.approx(recall, abs=1e-6), name
    assert composed["image only/R@10"] != composed["text only/R@10"]  # the compositors really differ on these queries
    chance = composed_tasks.chance_composed_recall(queries, (1, 10, 50))
    assert {k: composed[f"chance/R@{k}"] for k in (1, 10, 50)} == pytest.approx(chance)


def test_rerank_reads_the_saved_reranker_and_reports_both_stages(experiment, tmp_path):
    torch.manual_seed(0)
    matcher = ImageTextMatcher(128, 128, width=32, heads=4, layers=1, n_image_tokens=65).eval()
    path = rerank.save_reranker(tmp_path / "reranker.pt", matcher, experiment.bundle, dual_weight=1.0, k=5)
    metrics, identity = evaluate.evaluate("rerank", experiment, experiment.bundle, "synthetic", reranker=str(path))
    assert identity == experiment.bundle.identity
    dual = evaluate_retrieval(experiment.bundle, experiment.test, "description", (1, 5, 10))
    for k in (1, 5, 10):
        assert metrics[f"dual/R@{k}"] == pytest.approx(dual[f"text→image R@{k}"], abs=1e-3)
    # re-ranking reorders within the top 5 only: R@5 and R@10 cannot change
    assert metrics["rerank/R@5"] == metrics["dual/R@5"] and metrics["rerank/R@10"] == metrics["dual/R@10"]
    with pytest.raises(ValueError, match="is not a re-ranker saved by save_reranker"):
        (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
        rerank.load_reranker(tmp_path / "broken.pt")
    partial = {key: value for key, value in torch.load(path, weights_only=True).items() if key != "dual"}
    torch.save(partial, tmp_path / "partial.pt")  # an older or partial save: the matcher without its dual encoder
    with pytest.raises(ValueError, match=r"partial\.pt is not a re-ranker saved by save_reranker \(KeyError: 'dual'\)"):
        rerank.load_reranker(tmp_path / "partial.pt")
    flip_a_tensor_byte(path)  # unpickles all the same; before, the changed weights re-ranked without a word
    with pytest.raises(ValueError, match=r"reranker\.pt: its weights differ from the digest saved with them"):
        rerank.load_reranker(path)


def test_a_reranker_saved_with_tuned_towers_reads_their_tokens_and_keeps_them_under_its_digest(experiment, tmp_path):
    from course_utils.embed import caption_texts, encode_image_tokens, encode_text_tokens

    model = copy.deepcopy(experiment.bundle.model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
    towers = replace(experiment.bundle, model=model, identity=experiment.bundle.identity + "+itm-tuned")
    torch.manual_seed(0)
    matcher = ImageTextMatcher(128, 128, width=32, heads=4, layers=1, n_image_tokens=65).eval()
    path = rerank.save_reranker(tmp_path / "tuned.pt", matcher, experiment.bundle, 1.0, k=5, towers=towers)
    saved = rerank.load_reranker(path)
    assert saved.towers_identity == towers.identity
    rebuilt = saved.towers(experiment.bundle)
    assert rebuilt.identity == towers.identity and rebuilt.model is not experiment.bundle.model
    assert all(torch.equal(rebuilt.model.state_dict()[name], value) for name, value in model.state_dict().items())
    metrics, _ = evaluate.evaluate("rerank", experiment, experiment.bundle, "synthetic", reranker=str(path))
    test, captions = experiment.test, caption_texts(experiment.test, "description")
    images, queries = encode_image_tokens(experiment.bundle, test), encode_text_tokens(experiment.bundle, captions)
    tuned_tokens = encode_image_tokens(towers, test), encode_text_tokens(towers, captions)
    run = rerank.rerank_split(
        experiment.bundle, images, queries, {"tuned": (matcher, rerank.token_pair_logits(*tuned_tokens))}, 5
    )
    assert metrics["rerank/R@1"] == run.recall("tuned", 1.0, (1,))[1]
    untuned = rerank.load_reranker(rerank.save_reranker(tmp_path / "frozen.pt", matcher, experiment.bundle, 1.0, k=5))
    assert untuned.towers_state is None and untuned.towers(experiment.bundle) is experiment.bundle
    state = torch.load(path, weights_only=True)
    state["towers"]["logit_scale"] += 1.0  # a changed tower weight is caught like any other
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"tuned\.pt: its weights differ from the digest saved with them"):
        rerank.load_reranker(path)


def test_an_output_that_cannot_be_written_is_refused_before_anything_loads(monkeypatch, tmp_path, capsys):
    """It was said after the evaluation, which on a real gallery with real weights takes minutes."""
    monkeypatch.setattr(evaluate, "load_experiment", lambda *args, **kwargs: pytest.fail("loaded before the check"))
    (tmp_path / "a_file").write_text("")
    for output in (tmp_path, tmp_path / "a_file" / "retrieval.json"):
        with pytest.raises(SystemExit) as refused:
            evaluate.main(["--task", "retrieval", "--output", str(output)])
        assert refused.value.code == 2
        assert f"--output {output}: give a file name inside a folder (checked before anything runs" in (
            capsys.readouterr().err
        )


def test_main_prints_a_table_and_writes_one_json_record(experiment, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(evaluate, "load_experiment", lambda *args, **kwargs: experiment)
    output = tmp_path / "eval" / "retrieval.json"
    assert evaluate.main(["--task", "retrieval", "--output", str(output)]) == 0
    record = json.loads(output.read_text())
    assert record["task"] == "retrieval" and record["gallery_size"] == 60
    assert record["metrics"]["text→image R@10"] == pytest.approx(
        evaluate_retrieval(experiment.bundle, experiment.test, "description", (10,))["text→image R@10"]
    )
    assert "text→image R@10" in capsys.readouterr().out


def test_a_checkpoint_of_another_model_is_refused_by_name(experiment, tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save({"model": {"not_a_weight": torch.zeros(1)}}, wrong)
    with pytest.raises(ValueError, match=r"--checkpoint .*wrong.pt does not hold weights of"):
        evaluate.load_weights(experiment.bundle, wrong)
    with pytest.raises(FileNotFoundError, match="no such file"):
        evaluate.load_weights(experiment.bundle, tmp_path / "missing.pt")


def test_a_checkpoint_of_the_same_model_replaces_the_weights(experiment, tmp_path):
    state = {name: value + 1.0 for name, value in experiment.bundle.model.state_dict().items()}
    torch.save({"model": state}, tmp_path / "tuned.pt")  # the course's caches store {"model": state dict}
    loaded = evaluate.load_weights(experiment.bundle, tmp_path / "tuned.pt")
    assert loaded.model is not experiment.bundle.model
    assert all(torch.equal(loaded.model.state_dict()[name], value) for name, value in state.items())


def test_a_checkpoint_is_named_by_its_bytes_not_its_file_name(experiment, tmp_path):
    """Two files named model.pt with other weights were one identity in the records (``+model.pt``)."""
    identities = []
    for shift, folder in ((1.0, "run-a"), (2.0, "run-b")):
        state = {name: value + shift for name, value in experiment.bundle.model.state_dict().items()}
        (tmp_path / folder).mkdir()
        identities.append(
            evaluate.load_weights(experiment.bundle, _save_weights(state, tmp_path / folder / "model.pt")).identity
        )
    assert identities[0] != identities[1]
    assert identities[0] == f"{experiment.bundle.identity}+file-{content_digest(tmp_path / 'run-a' / 'model.pt')[:12]}"


def _save_weights(state: dict[str, torch.Tensor], path):
    torch.save({"model": state}, path)  # as the course's caches store them
    return path


@pytest.fixture
def tuned_reranker(experiment, tmp_path):
    """A re-ranker saved with a fine-tuned dual encoder (not the experiment's model), as notebook 03 saves it:
    its file, the tuned bundle and the tuned state dict (the experiment's weights plus seeded noise)."""
    generator = torch.Generator().manual_seed(1)
    state = {
        name: value + 0.01 * torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
        for name, value in experiment.bundle.model.state_dict().items()
    }
    tuned = evaluate.load_weights(experiment.bundle, _save_weights(state, tmp_path / "tuned.pt"))
    torch.manual_seed(0)
    matcher = ImageTextMatcher(128, 128, width=32, heads=4, layers=1, n_image_tokens=65).eval()
    path = rerank.save_reranker(tmp_path / "reranker.pt", matcher, tuned, dual_weight=1.0, k=5)
    return path, tuned, state


def test_rerank_records_the_saved_dual_encoder_it_evaluates(experiment, tuned_reranker, monkeypatch, capsys):
    path, tuned, _ = tuned_reranker
    monkeypatch.setattr(evaluate, "load_experiment", lambda *args, **kwargs: experiment)
    output = path.parent / "rerank.json"
    assert evaluate.main(["--task", "rerank", "--reranker", str(path), "--output", str(output)]) == 0
    record = json.loads(output.read_text())
    assert record["model_identity"] == tuned.identity != experiment.bundle.identity
    assert record["reranker"] == str(path) and record["checkpoint"] is None
    dual = evaluate_retrieval(tuned, experiment.test, "description", (1, 5, 10))
    assert record["metrics"]["dual/R@10"] == pytest.approx(dual["text→image R@10"], abs=1e-3)
    assert f"evaluated {tuned.identity}, the dual encoder saved with --reranker" in capsys.readouterr().out


def test_rerank_refuses_a_checkpoint_that_is_not_the_reranker_s_dual_encoder(
    experiment, tuned_reranker, monkeypatch, tmp_path
):
    path, tuned, _ = tuned_reranker
    other = _save_weights(experiment.bundle.model.state_dict(), tmp_path / "other.pt")  # the untuned weights
    monkeypatch.setattr(evaluate, "load_experiment", lambda *args, **kwargs: experiment)
    message = (
        f"--checkpoint {other} ({experiment.bundle.identity}+file-{content_digest(other)[:12]}) is not the dual "
        f"encoder that --reranker "
        f"{path} was trained on ({tuned.identity}); drop --checkpoint"
    )
    with pytest.raises(SystemExit, match=re.escape(f"cannot load --reranker {path}: {message}")):
        evaluate.main(["--task", "rerank", "--reranker", str(path), "--checkpoint", str(other)])


def test_rerank_accepts_a_checkpoint_holding_the_reranker_s_dual_encoder(experiment, tuned_reranker, tmp_path):
    path, tuned, state = tuned_reranker
    same = evaluate.load_weights(experiment.bundle, _save_weights(state, tmp_path / "same.pt"))
    dual = evaluate.reranker_dual_encoder(same, rerank.load_reranker(path), str(path), checkpoint="same.pt")
    assert dual.identity == tuned.identity
    assert all(torch.equal(dual.model.state_dict()[name], value) for name, value in state.items())


@pytest.mark.parametrize(("task", "items", "needed"), [("retrieval", 9, 10), ("rerank", 9, 10), ("composed", 50, 51)])
def test_a_test_split_smaller_than_the_largest_k_asks_for_a_larger_test_size(experiment, task, items, needed):
    small = replace(experiment, test=experiment.test.subset(experiment.test.ids[:items], name="test"))
    message = rf"needs a test split of at least {needed} items; this one has {items}: raise --test-size to {needed}"
    with pytest.raises(SystemExit, match=message):
        evaluate.evaluate(task, small, experiment.bundle, "synthetic", reranker="unused.pt")


def test_composed_counts_the_queries_a_small_test_split_leaves_out_and_refuses_none_left(experiment):
    metrics, _ = evaluate.evaluate("composed", experiment, experiment.bundle, "synthetic")  # 60 of 160 test items
    whole_split = len(experiment.catalogue.split("test").triplets)
    assert 0 < metrics["queries"] < whole_split
    assert metrics["queries left out (outside the test items kept)"] == whole_split - metrics["queries"]
    targets = {triplet.target_id for triplet in experiment.catalogue.split("test").triplets}
    no_targets = [item_id for item_id in experiment.catalogue.split("test").ids if item_id not in targets]
    no_triplets = replace(experiment, test=experiment.catalogue.subset(no_targets, name="test"))
    with pytest.raises(
        SystemExit, match=rf"none of the test split's {whole_split} composed queries .* raise --test-size"
    ):
        evaluate.evaluate("composed", no_triplets, experiment.bundle, "synthetic")


def test_composed_on_a_smaller_test_split_draws_as_notebook_06_and_counts_the_whole_splits_left_out(
    experiment, monkeypatch
):
    """deepfashion-multimodal draws its test swaps from the items it is given: the queries are the draw on the kept
    items, as notebook 06 makes them, and "left out" counts the whole split's queries outside the kept items (it
    subtracted one draw from another)."""

    def pairs_of_the_items_given(train, test, dataset, seed):  # a draw that depends on the items, as those swaps
        offset = len(test) // 4
        return [], [CompositionTriplet(a, "swap it", b) for a, b in zip(test.ids, test.ids[offset:])]

    monkeypatch.setattr(evaluate.composed, "composed_triplets", pairs_of_the_items_given)
    metrics, _ = evaluate.evaluate("composed", experiment, experiment.bundle, "synthetic")  # 60 of 160 test items
    _, kept_draw = pairs_of_the_items_given(None, experiment.test, "synthetic", 0)
    _, whole_draw = pairs_of_the_items_given(None, experiment.catalogue.split("test"), "synthetic", 0)
    kept = set(experiment.test.ids)
    outside = [t for t in whole_draw if t.reference_id not in kept or t.target_id not in kept]
    assert metrics["queries"] == len(kept_draw)
    assert metrics["queries left out (outside the test items kept)"] == len(outside)
    assert len(outside) != len(whole_draw) - len(kept_draw)  # what the old count gave


def test_composed_on_a_dataset_without_a_match_rule_says_where_to_add_one(experiment, monkeypatch):
    """A loader registered with ``register_catalogue`` but no ``DEFAULT_MATCH`` entry ended in a bare ``KeyError``."""
    monkeypatch.delitem(composed_tasks.DEFAULT_MATCH, "synthetic")
    with pytest.raises(SystemExit) as refused:
        evaluate.evaluate("composed", experiment, experiment.bundle, "synthetic")
    assert str(refused.value.code) == (
        "--task composed: dataset 'synthetic' has no composed-retrieval match rule; add one to "
        "course_utils.tasks.composed.DEFAULT_MATCH ('attributes', 'caption', 'item' or attribute names)"
    )


def test_attributes_on_a_test_split_too_small_for_a_condition_names_test_size(experiment):
    one = replace(experiment, test=experiment.test.subset(experiment.test.ids[:1], name="test"))
    with pytest.raises(
        SystemExit, match=r"--task attributes on 1 test items: condition .* only 1 items .*raise --test-size"
    ):
        evaluate.evaluate("attributes", one, experiment.bundle, "synthetic")


def test_attributes_on_a_test_split_that_leaves_a_condition_without_queries_names_it_and_test_size(experiment):
    """Every 'neckline' query of these 17 items has a value no candidate shares, so the protocol drops them all:
    that ended in the metric's "scores must be a non-empty ... matrix, got shape (0, 2)" traceback."""
    small = replace(experiment, test=experiment.test.subset(experiment.test.ids[:17], name="test"))
    protocol = attribute_retrieval_protocol(small.test, attribute_tasks.DEFAULT_CONDITIONS["synthetic"], seed=0)
    unqueried = [condition for condition, split in protocol.items() if not split.query_ids]
    assert unqueried == ["neckline"]  # what the test is about: a condition with items but no query left
    with pytest.raises(SystemExit) as refused:
        evaluate.evaluate("attributes", small, experiment.bundle, "synthetic")
    assert str(refused.value.code) == (
        "--task attributes on 17 test items: no query is left for condition(s) 'neckline' (no candidate shares a "
        "query's value): raise --test-size"
    )


def test_a_test_split_of_exactly_the_largest_k_is_enough_for_retrieval(experiment):
    ten = replace(experiment, test=experiment.test.subset(experiment.test.ids[:10], name="test"))
    metrics, _ = evaluate.evaluate("retrieval", ten, experiment.bundle, "synthetic")
    assert metrics["chance R@10"] == 1.0  # 10 of 10 items: a random ranking always finds the match


def _loads_nothing(*args, **kwargs):
    raise AssertionError("the dataset and model were loaded before the flags were checked")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--test-size", "0"], "argument --test-size: must be a whole number of at least 1, got '0'"),
        (["--seed", "-1"], "argument --seed: must be a whole number from 0 to 4294967295, got '-1'"),
        (
            ["--device", "cuda"],
            "argument --device: 'cuda': this machine has no usable CUDA GPU; use 'auto' (CUDA when available, else "
            "CPU), 'cpu', 'cuda' or 'cuda:N'",
        ),
    ],
)
def test_a_bad_flag_is_refused_by_name_before_anything_loads(argv, said, monkeypatch, capsys):
    """Before, each ended in a traceback of the loader's ValueError naming its Python parameter (``test_size``)."""
    monkeypatch.setattr(evaluate, "load_experiment", _loads_nothing)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine has no GPU, whatever runs the test
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--task", "retrieval", *argv])
    assert refused.value.code == 2
    assert f"error: {said}" in capsys.readouterr().err


def test_a_real_dataset_without_its_folder_names_the_data_root_flag(monkeypatch):
    monkeypatch.setattr(evaluate, "load_experiment", _loads_nothing)
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--task", "retrieval", "--dataset", "fashion-product-small"])
    assert str(refused.value.code) == (
        "cannot load the dataset and model: --dataset fashion-product-small is read from its folder: add "
        "--data-root <folder> (see README › Real data)"
    )


def test_a_missing_checkpoint_or_reranker_file_and_a_loader_error_are_one_line(experiment, monkeypatch, tmp_path):
    monkeypatch.setattr(evaluate, "load_experiment", lambda *args, **kwargs: experiment)
    missing = tmp_path / "nope.pt"
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--task", "retrieval", "--checkpoint", str(missing)])
    assert str(refused.value.code) == f"cannot load the dataset and model: --checkpoint {missing}: no such file"
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--task", "rerank", "--reranker", str(missing)])
    assert str(refused.value.code).startswith(f"cannot load --reranker {missing}: no re-ranker file at {missing}")

    def unknown_dataset(*args, **kwargs):
        raise ValueError("unknown dataset 'nonsense'; choose one of […]")

    monkeypatch.setattr(evaluate, "load_experiment", unknown_dataset)
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--task", "retrieval", "--dataset", "nonsense"])
    assert str(refused.value.code) == "cannot load the dataset and model: unknown dataset 'nonsense'; choose one of […]"
