"""The worked solutions of the notebooks' exercises run on the ``ci`` profile and reach the outcome they claim.

Each ``notebooks/solutions/NN_*.py`` is imported from its path and its code solutions are executed against the
``ci`` experiment, sharing the notebook runs' cache (``outputs/test-cache``, see tests/test_notebooks.py) so the
pretrained and fine-tuned models are reused. Marked ``solutions``: ``make test`` runs them, plain ``pytest`` does
not. Run alone with ``pytest -m solutions tests/test_solutions.py``.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from course_utils.paths import REPO_ROOT

pytestmark = pytest.mark.solutions

SOLUTIONS = REPO_ROOT / "notebooks" / "solutions"
TEST_CACHE = REPO_ROOT / "outputs" / "test-cache"  # shared with tests/test_notebooks.py
CI_OUTPUTS = REPO_ROOT / "outputs" / "ci"  # where the ci notebook run writes (03's re-ranker)


def load_solution(stem: str):
    """Import ``notebooks/solutions/<stem>.py`` (file names start with a digit, so not as a package)."""
    path = SOLUTIONS / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"solution_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ci():
    """The ci experiment (cpu) and notebook 02's fine-tuned model, from the notebook runs' cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASHION_COURSE_CACHE", str(TEST_CACHE))
        patch.setenv("FASHION_COURSE_OUTPUTS", str(CI_OUTPUTS))
        patch.setenv("FASHION_COURSE_FIGURES", str(CI_OUTPUTS / "figures"))
        import course_utils as cu

        experiment = cu.tasks.load_experiment("synthetic", None, "tiny-fashion-clip", "embedded", "ci", 0, "cpu")
        tuned, _ = cu.tasks.retrieval.finetuned_bundle(experiment, progress=False)
        yield {"experiment": experiment, "tuned": tuned, "cu": cu}


def test_every_notebook_has_a_solution_file():
    notebooks = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("0[1-8]_*.ipynb"))
    assert notebooks and all((SOLUTIONS / f"{stem}.py").exists() for stem in notebooks), notebooks


def test_01_in_batch_recall_by_hand_and_the_two_readings(ci):
    cu, experiment = ci["cu"], ci["experiment"]
    solution = load_solution("01_baseline_clip")
    test = experiment.test
    images = cu.embed.encode_images(experiment.bundle, test, progress=False)
    texts = cu.embed.encode_texts(
        experiment.bundle, cu.embed.caption_texts(test, experiment.query_style), progress=False
    )
    mine = solution.my_in_batch_recall(texts, images, batch_size=32, seed=0)
    package = cu.metrics.in_batch_recall(texts, images, batch_size=32, seed=0)
    assert mine == pytest.approx(package, abs=1e-9)

    curve = solution.recall_curve(images, texts, [10, 100, len(test)])
    ratios = [recall / chance for recall, chance in curve.values()]
    assert ratios == sorted(ratios), f"model/chance should grow with the gallery: {curve}"

    readings = solution.seed002_readings()
    assert readings["test split, 8,819 items"]["times chance"] == pytest.approx(0.0020 * 8819 / 10)
    assert readings["whole dataset, 44,096 items"]["times chance"] == pytest.approx(0.0020 * 44_096 / 10)

    similarity = texts @ images.T
    colour = solution.attribute_recall(similarity, test, ["colour"])
    both = solution.attribute_recall(similarity, test, ["category", "colour"])
    assert all(colour[k] >= both[k] for k in both), (colour, both)

    recall, chance = solution.attribute_recall_without_own_item(similarity, test, ["category", "colour"])
    kinds = [(item.attributes["category"], item.attributes["colour"]) for item in test]
    hits = {k: 0 for k in recall}
    for i, row in enumerate(similarity):
        ranked = [j for j in torch.argsort(row, descending=True, stable=True).tolist() if j != i]
        for k in hits:
            hits[k] += any(kinds[j] == kinds[i] for j in ranked[:k])
    assert recall == pytest.approx({k: h / len(test) for k, h in hits.items()})  # by hand, own item skipped
    others = [kinds.count(kind) - 1 for kind in kinds]
    assert chance == {k: cu.metrics.mean_chance_recall(k, len(test) - 1, others) for k in recall}


def test_02_loss_temperature_batch_size_and_budgets(ci):
    experiment, tuned = ci["experiment"], ci["tuned"]
    solution = load_solution("02_fine_tuning")
    assert solution.uninformed_loss(64) == pytest.approx(math.log(64), abs=1e-5)

    measured = solution.loss_by_temperature(tuned, experiment.test, experiment.query_style)
    losses, floor = measured["losses"], measured["floor at scale 1"]
    assert losses[1.0] >= floor - 1e-6, "no model can beat the scale-1 floor"
    learned = next(v for k, v in losses.items() if str(k).startswith("learned"))
    assert learned < losses[1.0], measured

    runs = solution.batch_size_runs(experiment)
    assert runs[8]["steps"] == 8 * runs[64]["steps"]
    chance = 10 / len(experiment.test)
    assert all(run["R@10"] > chance for run in runs.values()), runs

    full = solution.optimizer_steps(len(experiment.train), finetune_epochs=3, head_epochs=10, backbone_epochs=3)
    assert full["(b) stage 2 (backbone)"] == full["(a) full fine-tuning"]
    assert full["(b) total"] > full["(a) full fine-tuning"], "with equal backbone epochs (b) trains more steps"
    ci_budget = solution.optimizer_steps(len(experiment.train), finetune_epochs=3, head_epochs=10, backbone_epochs=1)
    assert ci_budget["backbone epochs for equal backbone steps"] == 3


def test_03_ceiling_and_top_50(ci):
    experiment, tuned = ci["experiment"], ci["tuned"]
    solution = load_solution("03_cross_modal_attention")
    ceiling = solution.first_stage_ceiling(tuned, experiment.test, experiment.query_style)
    assert ceiling[1] <= ceiling[20] <= ceiling[50]

    reranker = CI_OUTPUTS / "models" / "reranker.pt"
    if not reranker.exists():  # the ci notebook run writes it; run notebook 03 alone when it has not run
        from course_utils import run

        assert run.main(["--profile", "ci", "--only", "03", "--output-dir", str(CI_OUTPUTS)]) == 0
    runs = solution.rerank_top_k(tuned, experiment.test, experiment.query_style, reranker)
    assert runs[20]["dual/R@1"] == runs[50]["dual/R@1"], "the first stage does not depend on K"
    for k, run in runs.items():  # re-ranking the top K can only reorder what the dual encoder found
        assert run["rerank/R@1"] <= ceiling[k] + 1e-9, (k, run, ceiling)


def notebook_03_record(folder, name: str, value) -> dict:
    """Notebook 03's ci record in ``folder`` with parameter ``name`` set to ``value``: the one a notebook test wrote
    there, or else from a run of notebook 03 alone (``--set name=value``)."""
    import json

    from course_utils import run

    path = folder / "results" / "03_cross_modal_attention.json"
    if not path.exists():
        setting = ["--set", f"{name}={value}", "--output-dir", str(folder)]
        assert run.main(["--profile", "ci", "--only", "03", *setting]) == 0
    record = json.loads(path.read_text())
    assert record["parameters"][name] == value and type(record["parameters"][name]) is type(value)
    return record


def test_03_tuned_towers_leave_the_first_stage_as_it_was(ci):
    solution = load_solution("03_cross_modal_attention")
    records = {
        switch: notebook_03_record(folder, "tune_encoders", switch)
        for switch, folder in ((False, CI_OUTPUTS), (True, REPO_ROOT / "outputs" / "ci-tuned-towers"))
    }
    table = solution.towers_tuned_or_frozen(records[False], records[True])
    assert table["dual/R@1"]["frozen"] == table["dual/R@1"]["tuned"]  # the towers tuned are a copy
    assert table["dual/R@10"]["frozen"] == table["dual/R@10"]["tuned"]
    # seed 002's comparison row reads the frozen tokens and trains at the notebook's itm_lr in both runs
    seed002 = [name for name in records[False]["metrics"] if name.startswith("seed002_rerank/")]
    assert seed002 and all(records[False]["metrics"][n] == records[True]["metrics"][n] for n in seed002)
    assert all(set(row) == {"frozen", "tuned"} for row in table.values())


def test_03_one_neighbour_makes_the_soft_vote_the_hard_guess(ci, tmp_path):
    solution = load_solution("03_cross_modal_attention")
    records = {  # the one-neighbour run is made here, each time (tmp_path): no notebook test writes it
        neighbours: notebook_03_record(folder, "label_neighbours", neighbours)
        for neighbours, folder in ((10, CI_OUTPUTS), (1, tmp_path / "one-neighbour"))
    }
    table = solution.label_votes_by_neighbours(records)
    assert table["soft vote"][1] == table["hard guesses"][1]  # a one-value vote scores as that label
    assert table["dual encoder"][1] == table["dual encoder"][10]  # the votes only re-rank its top K
    one = records[1]["metrics"]
    assert all(one[f"photo_label_soft_rerank/{m}"] == one[f"photo_label_rerank/{m}"] for m in ("R@5", "R@10"))
    assert one["photo_label_soft_rerank/dual_weight"] == one["photo_label_rerank/dual_weight"]


def test_03_a_grid_cut_short_changes_only_the_rerankers_that_picked_beyond_it(ci, tmp_path):
    solution = load_solution("03_cross_modal_attention")
    from course_utils import run

    long = run.parameter_defaults(run.NOTEBOOK_DIR / "03_cross_modal_attention.ipynb")["dual_weights"]
    short = [0.0, 0.3, 1.0, 3.0]
    assert long[: len(short)] == short and max(long) > max(short)  # the short grid starts the long one
    records = {  # the short-grid run is made here, each time (tmp_path): no notebook test writes it
        "long": notebook_03_record(CI_OUTPUTS, "dual_weights", long),
        "short": notebook_03_record(tmp_path / "short-grid", "dual_weights", short),
    }
    table = solution.picks_by_grid(records)
    assert {"rerank", "photo_label_rerank", "photo_label_soft_rerank"} <= set(table)
    beyond = {name for name, row in table.items() if row["long"][0] > max(short)}
    assert beyond, "on ci some re-ranker picks a weight beyond 3: the exercise has something to show"
    for name, row in table.items():
        assert row["short"][0] in short
        if name not in beyond:  # the same pick, so the same recalls
            assert row["short"] == row["long"], (name, row)


def test_04_random_inits_and_the_head_start(ci):
    experiment = ci["experiment"]
    solution = load_solution("04_random_init_ablation")
    random = solution.random_init_recall(experiment)
    assert abs(random["R@10"] - random["chance"]) <= 4 * random["standard error"], random

    effects = solution.normal_init_effects(experiment)
    assert effects["N(0, 0.02) init"]["softmax scale"] == pytest.approx(1.0, abs=0.1)
    assert effects["open_clip init"]["softmax scale"] == pytest.approx(1 / 0.07, rel=1e-3)
    assert effects["N(0, 0.02) init"]["spread"] < effects["open_clip init"]["spread"], effects
    # the written answer: close scores, yet far apart at float32's resolution, so almost none of them tie
    assert effects["N(0, 0.02) init"]["score spread"] > 100 * torch.finfo(torch.float32).eps, effects

    head_start = solution.steps_to_reach_zero_shot(experiment)
    assert head_start["pretrained final R@10"] > head_start["scratch final R@10"], head_start


def test_05_random_floor_ap_by_hand_and_an_added_condition(ci):
    cu, experiment, tuned = ci["cu"], ci["experiment"], ci["tuned"]
    solution = load_solution("05_conditional_embeddings")
    protocol = cu.data.attribute_retrieval_protocol(experiment.test, ["colour", "category"], seed=0)
    floor = solution.random_ranking_map(protocol, "colour")
    assert floor["random mAP"] == pytest.approx(floor["share relevant"], abs=0.03), floor
    conditions = ["category", "colour", "pattern", "fabric", "sleeve", "neckline", "length"]
    everything = cu.data.attribute_retrieval_protocol(experiment.test, conditions, seed=0)
    values = {c: len(set(everything[c].candidate_values)) for c in conditions}
    floors = {c: solution.random_ranking_map(everything, c, draws=2)["share relevant"] for c in conditions}
    fewest = {c for c in conditions if values[c] == min(values.values())}
    assert fewest == {"sleeve", "neckline", "length"}, values  # the written answer: 3 values each
    assert min(floors[c] for c in fewest) > max(floors[c] for c in set(conditions) - fewest), floors
    assert min(floors, key=floors.get) == "colour" == max(values, key=values.get), (floors, values)

    split = protocol["colour"]
    features = cu.embed.encode_images(tuned, experiment.test, progress=False)
    queries = features[[experiment.test.position(i) for i in split.query_ids]]
    candidates = features[[experiment.test.position(i) for i in split.candidate_ids]]
    scores, relevant = (queries @ candidates.T).numpy(), split.relevance()
    for q in range(3):
        assert solution.my_average_precision(scores[q], relevant[q]) == pytest.approx(
            cu.metrics.average_precision(scores[q], relevant[q]), abs=1e-9
        )

    two = solution.crl_stage1_map(tuned, experiment, ["colour", "pattern"])
    three = solution.crl_stage1_map(tuned, experiment, ["colour", "pattern", "category"])
    assert three["mAP"]["category"] > three["random"]["category"], three
    assert two["mAP"]["colour"] > two["random"]["colour"], two


def test_06_new_compositors_and_the_loss_scale(ci):
    experiment, tuned = ci["experiment"], ci["tuned"]
    solution = load_solution("06_composed_retrieval")
    data = solution.composed_features(experiment, tuned)
    table = solution.compositor_table(data, tuned.embed_dim)
    assert table["weighted sum (alpha=0.5)"] == pytest.approx(table["sum"], abs=1e-9)
    chance = solution.chance(data)
    assert table["gated sum (learned)"][10] > table["sum"][10], table
    sweep = solution.scale_sweep(data, tuned.embed_dim)
    assert all(recall[10] > chance[10] for recall in sweep.values()), sweep


def test_07_batch_search_rare_filter_approximate_ivf_and_latency_by_size(ci):
    cu, experiment, tuned = ci["cu"], ci["experiment"], ci["tuned"]
    solution = load_solution("07_retrieval_demo")
    retriever = cu.retriever.FashionRetriever(tuned, experiment.test, caption_style=experiment.query_style)
    queries = cu.embed.caption_texts(experiment.test, experiment.query_style)[:20]
    assert solution.batch_matches_single(retriever, queries)

    rare = solution.rare_filter_search(retriever, "striped shirt", 8)
    results, filters = rare["results"], rare["filters"]
    assert 0 < len(rare["matching ids"]) < 8, rare  # fewer items match than top_k asks for
    assert sorted(results["item_id"]) == sorted(rare["matching ids"]), rare  # all of them, nothing else
    assert all((results[name] == value).all() for name, value in filters.items()), rare
    assert results["score"].is_monotonic_decreasing, results
    ivf = cu.retriever.FashionRetriever(tuned, experiment.test, index="ivf", image_embeddings=retriever.embeddings)
    assert ivf.search_by_text("striped shirt", 8, **filters)["item_id"].tolist() == results["item_id"].tolist()

    table = solution.ivf_tradeoff(retriever, queries)
    exhaustive = table["nprobe"] >= table["nlist"]
    assert (table.loc[exhaustive, "share of exact top-k"] == 1.0).all(), table
    assert (table["share of exact top-k"] < 1.0).any(), table  # some setting makes IVF miss neighbours on ci
    for nlist, rows in table.groupby("nlist"):  # nested probed lists, each scored exactly: never worse
        shares = rows.sort_values("nprobe")["share of exact top-k"].tolist()
        assert shares == sorted(shares), (nlist, shares)

    import course_utils.demo  # noqa: F401  (makes cu.demo available)

    retriever.conditional_encoder = cu.demo.crl_conditional_encoder(tuned, "synthetic", experiment.test)
    grown = solution.copies_gallery(retriever, 1200)
    assert len(grown.catalogue) == len(grown.embeddings) == 1200 and grown.conditional_encoder is not None
    sizes = (1000, 10_000, 100_000)
    latency = solution.latency_by_gallery_size(retriever, "red striped shirt", "colour", sizes=sizes, repeats=3)
    assert latency["gallery size"].tolist() == list(sizes)
    assert (latency["conditional multiply-adds per row"] > latency["text multiply-adds per row"]).all(), latency
    assert (latency[["text ms", "conditional ms"]] > 0).all().all()


def test_08_gathered_losses_uneven_shards_filter_sweep_and_codes(ci, tmp_path):
    cu, experiment, tuned = ci["cu"], ci["experiment"], ci["tuned"]
    solution = load_solution("08_scaling_out")
    test = experiment.test
    images = cu.embed.encode_images(tuned, test, progress=False)
    texts = cu.embed.encode_texts(tuned, cu.embed.caption_texts(test, experiment.query_style), progress=False)
    scale = tuned.model.logit_scale.detach()
    alone = solution.ranks_losses(images[:64], texts[:64], scale, world_size=1)
    assert alone["ranks, gathered"] == pytest.approx(alone["global batch"], rel=1e-6)
    assert alone["ranks, own slice only"] == pytest.approx(alone["global batch"], rel=1e-6)
    two = solution.ranks_losses(images[:64], texts[:64], scale, world_size=2)
    assert two["ranks, gathered"] == pytest.approx(two["global batch"], rel=1e-5)
    assert two["ranks, own slice only"] < two["global batch"], two  # fewer negatives: an easier task

    said = solution.uneven_shards(tuned, test.subset(test.ids[:96]), tmp_path / "shards")
    assert "shards of ranks [1] (of 3) are missing" in said["rank 1 missing"], said
    assert "disagree on batch_size" in said["rank 1 at another batch size"], said

    attributes = [{name: item.attributes[name] for name in ("colour", "category")} for item in test]
    filters = [
        {},
        solution.filter_near_share(attributes, 0.1, names=("colour",)),
        solution.filter_near_share(attributes, 0.01),
    ]
    shares = [sum(all(a[n] == v for n, v in f.items()) for a in attributes) / len(attributes) for f in filters[1:]]
    assert shares[0] > shares[1] > 0, (filters, shares)
    sizes = (1000, 3000)
    sweep = solution.pushed_filter_sweep(
        images.numpy(), attributes, str(tmp_path / "copies.db"), filters, sizes=sizes, queries=5
    )
    assert len(sweep) == len(sizes) * len(filters) and (sweep["same top-k"] == 1.0).all(), sweep
    for n, rows in sweep.groupby("rows"):  # no filter keeps every copy; each filter keeps fewer
        assert rows["matching rows"].iloc[0] == n and (rows["matching rows"].iloc[1:] < n).all(), rows
    assert (sweep[["Milvus median ms", "exact median ms"]] > 0).all().all()

    rng = np.random.default_rng(0)
    source = images.numpy()
    copies = source[rng.integers(0, len(source), 3000)] + rng.normal(scale=0.02, size=(3000, source.shape[1]))
    copies = (copies / np.linalg.norm(copies, axis=1, keepdims=True)).astype(np.float32)
    table = solution.codes_vs_reranking(copies[50:], copies[:50])
    assert (table["bytes per vector"] == table["pq_m"]).all()
    for pq_m, rows in table.groupby("pq_m"):
        recalls = rows.sort_values("rerank")["recall@10"].tolist()
        assert recalls == sorted(recalls), (pq_m, recalls)  # nested candidates, exact re-scoring: never worse
