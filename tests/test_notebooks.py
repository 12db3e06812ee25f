"""Notebook execution is a test too: every notebook runs in the ci profile through the papermill runner.

Executed copies, results and the report land in ``outputs/ci/`` (figures in ``outputs/ci/figures/``) so a test
run never rewrites the committed ``figures/``. The real-ci profile's runs are in ``test_real_ci.py`` and the runs
with other parameters in ``test_notebook_parameters.py``; the claims and floors the real-ci runs are checked against
are here, with the checks of the committed records.
"""

import json
import re
from pathlib import Path

import pytest

from course_utils import findings, golden, run
from course_utils.paths import REPO_ROOT

pytestmark = pytest.mark.notebooks


# The notebook runs share one cache of their own (warm on a second run), never the course's data/cache.
TEST_CACHE = REPO_ROOT / "outputs" / "test-cache"


def run_on_the_test_cache(monkeypatch, out, *args):
    """``python -m course_utils.run *args --output-dir out`` on the notebook runs' cache; it must succeed."""
    monkeypatch.setenv("FASHION_COURSE_CACHE", str(TEST_CACHE))
    assert run.main([*args, "--output-dir", str(out)]) == 0


CI_OUTPUTS = REPO_ROOT / "outputs" / "ci"


@pytest.fixture(scope="module")
def ci_run():
    """Every notebook run once in the ci profile; the tests below read its executed copies and records."""
    with pytest.MonkeyPatch.context() as patch:
        run_on_the_test_cache(patch, CI_OUTPUTS, "--profile", "ci")
    return CI_OUTPUTS


def test_every_notebook_runs_in_the_ci_profile(ci_run):
    out = ci_run
    report = (out / "RESULTS.md").read_text()
    for notebook in run.discover():
        record = json.loads((out / "results" / f"{notebook.stem}.json").read_text())
        assert record["parameters"]["profile"] == "ci"
        assert record["metrics"], f"{notebook.stem} wrote no metrics"
        assert f"## {notebook.stem}" in report
        assert list((out / "figures" / notebook.stem).glob("*.png")) or notebook.stem.startswith("07"), notebook.stem


# A signed number that shows as zero with a minus: "-0.0" or "-0%" (a change that rounds to zero from below), not
# "-0.05" or "-0.5"
NEGATIVE_ZERO = re.compile(r"(?<![\w.])-0(?:\.0+)?(?![0-9.])")


def prose_with_negative_zeros(executed: Path) -> list[str]:
    """Each piece of rendered markdown in the executed notebooks of ``executed`` that shows a signed zero as
    ``-0.0`` or ``-0%``: their prose renders changes with ``course_utils.metrics.signed``, which writes ``+0.0``."""
    found = []
    for notebook in sorted(executed.glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            for output in cell.get("outputs", []):
                text = "".join(output.get("data", {}).get("text/markdown", ""))
                found += [
                    f"{notebook.name}: ...{text[max(0, m.start() - 60) : m.end()]}"
                    for m in NEGATIVE_ZERO.finditer(text)
                ]
    return found


def test_the_rendered_prose_shows_no_negative_zero(ci_run):
    assert not prose_with_negative_zeros(ci_run)


def test_03_with_tuned_towers_saves_a_reranker_the_evaluation_cli_scores_as_the_notebook_did(monkeypatch, tmp_path):
    """``tune_encoders=True``: the matcher trains with a copy of the towers; the saved re-ranker keeps that copy, and
    ``course_utils.evaluate --task rerank`` on it gives the notebook's re-ranked recalls on the same test split."""
    from course_utils import evaluate
    from course_utils.tasks import rerank

    out = REPO_ROOT / "outputs" / "ci-tuned-towers"
    run_on_the_test_cache(monkeypatch, out, "--profile", "ci", "--only", "03", "--set", "tune_encoders=True")
    notebook = json.loads((out / "results" / "03_cross_modal_attention.json").read_text())
    assert notebook["parameters"]["tune_encoders"] is True
    saved = out / "models" / "reranker.pt"
    assert rerank.load_reranker(saved).towers_state is not None
    cli_record = tmp_path / "rerank.json"
    cli = ["--task", "rerank", "--profile", "ci", "--reranker", str(saved), "--output", str(cli_record)]
    assert evaluate.main(cli) == 0
    scored = json.loads(cli_record.read_text())["metrics"]
    for k in (1, 5, 10):
        assert scored[f"rerank/R@{k}"] == pytest.approx(notebook["metrics"][f"rerank/R@{k}"], abs=1e-9)
        assert scored[f"dual/R@{k}"] == pytest.approx(notebook["metrics"][f"dual/R@{k}"], abs=1e-9)


def assert_caption_groups_make_up_the_gallery(baseline: dict) -> None:
    """Notebook 01 records exact-item R@10 on the test queries that are word for word a train caption and on the
    others; both groups are non-empty here, and together they are every query, so their recalls, weighted by their
    sizes, give the full-gallery R@10."""
    seen, n = baseline["t2i_train_caption_queries"], baseline["gallery_size"]
    assert 0 < seen < n
    mixed = (seen * baseline["t2i_train_caption_R@10"] + (n - seen) * baseline["t2i_not_train_caption_R@10"]) / n
    assert mixed == pytest.approx(baseline["t2i_full_R@10"], abs=1e-9)


def test_01_records_recall_on_the_queries_that_are_train_captions_and_on_the_others(ci_run):
    assert_caption_groups_make_up_the_gallery(read_records(ci_run / "results")["01"])


def test_06_records_the_kept_compositors_margins_over_the_sum_and_over_the_sum_fed_only_the_new_value(ci_run):
    """Notebook 06 keeps the learned compositor that scores best on val triplets; its record's margins are that
    compositor's test R@10 minus the sum's and minus the sum fed only the value the text asks for."""
    m = read_records(ci_run / "results")["06"]
    kept = max(findings.LEARNED_COMPOSITORS, key=lambda name: m[f"val/{name}/R@10"])
    assert m["picked_minus_sum_R@10"] == pytest.approx(m[f"{kept}/R@10"] - m["sum/R@10"], abs=1e-9)
    new_value_only = m["sum, new value only/R@10"]
    assert 0 < new_value_only <= 1 and new_value_only != m["sum/R@10"]
    assert m["picked_minus_sum_new_value_only_R@10"] == pytest.approx(m[f"{kept}/R@10"] - new_value_only, abs=1e-9)


def read_records(folder) -> dict[str, dict]:
    """``{notebook number: metrics}`` of the records in ``folder``; a record run under several seeds (``--seeds``)
    gives its means over the seeds."""
    records = {path.stem[:2]: json.loads(path.read_text()) for path in sorted(folder.glob("[0-9][0-9]_*.json"))}
    return {number: {**r["metrics"], **r.get("seeds", {}).get("mean", {})} for number, r in records.items()}


def claims_on_drawings_and_photos(m: dict[str, dict]) -> dict[str, bool]:
    """The comparisons that hold alike on the embedded course's records and on the real profiles'."""
    return {
        "03: the catalogue's labels re-rank better than the same labels guessed from the photos (R@1)": m["03"][
            "label_rerank/R@1"
        ]
        > m["03"]["photo_label_rerank/R@1"],
        "04: the pretrained model, zero-shot and fine-tuned, > random init (text→image R@10)": min(
            m["04"]["finetuned_t2i_R@10"], m["04"]["zero_shot_t2i_R@10"]
        )
        > m["04"]["random_init_t2i_R@10"],
        # the compositor kept is picked on val triplets since 2026-12-07; a record written before holds only the test
        # queries' own best, whose margin is at least the kept one's: on such a record the claim is checked more weakly
        "06: the learned compositor kept >= sum + 5 points of R@10": m["06"].get(
            "picked_minus_sum_R@10", m["06"]["best_minus_sum_R@10"]
        )
        >= 0.05,
    }


# On the ci run (500 test queries; the matcher trained 5 epochs on 1,200 pairs) the re-ranker's R@1 gain over the dual
# encoder is within noise: +0.020 before the drawings changed on 2026-12-05, 0.000 after (12 epochs: +0.020; one query
# is 0.002). It is a finding on the three-seed full records, where it is checked as a gain; on one ci run the claim
# is that re-ranking keeps the dual encoder's R@1.
RERANK_MAY_LOSE_R1_ON_CI = 0.02


def scaling_claims(scaling: dict) -> dict[str, bool]:
    """Notebook 08's claims, on its record's metrics."""
    # float32 rounding from summing in another order: measured 5e-5 to 7e-5 of what training moved the weights
    weights_close = scaling["weight_max_abs_diff"] < 1e-3 * scaling["weights_moved"]
    milvus_exact = scaling["milvus_topk_agreement"] == scaling["milvus_reopen_agreement"] == 1
    return {
        "08: N processes resuming a 1-process checkpoint end on its weights (within 1e-3 of the move)": weights_close,
        "08: the sharded embedding job's merged shards equal one process's bit for bit": scaling["embed_identical"]
        == 1,
        "08: Milvus (an exact FLAT index) gives exact search's top-k for every query, reopened too": milvus_exact,
    }


def course_claims(m: dict[str, dict], rerank_may_lose_r1: float = 0.0) -> dict[str, bool]:
    """The comparisons the course's prose makes, evaluated on one set of records (``{claim: holds}``); with
    ``rerank_may_lose_r1`` (one small run) re-ranking need only keep the dual encoder's R@1 to that tolerance."""
    rerank, dual = m["03"]["rerank/R@1"], m["03"]["dual/R@1"]
    if rerank_may_lose_r1:
        rerank_claim = f"03: re-ranking keeps the dual encoder's R@1 (at most {rerank_may_lose_r1} lower)"
        rerank_holds = rerank >= dual - rerank_may_lose_r1
    else:
        rerank_claim, rerank_holds = "03: re-ranked R@1 > dual encoder R@1", rerank > dual
    return {
        **claims_on_drawings_and_photos(m),
        "01: in-batch R@1 is more than 3x the full-gallery R@1 (both directions)": m["01"]["t2i_inbatch_R@1"]
        > 3 * m["01"]["t2i_full_R@1"]
        and m["01"]["i2t_inbatch_R@1"] > 3 * m["01"]["i2t_full_R@1"],
        "01: the zero-shot model is above chance on the full gallery": m["01"]["t2i_full_R@10"]
        > m["01"]["t2i_full_chance_R@10"],
        "02: full fine-tuning > zero-shot (text→image R@10)": m["02"]["full_finetune_t2i_R@10"]
        > m["02"]["zero_shot_t2i_R@10"],
        "04: fine-tuned > zero-shot (text→image R@10)": m["04"]["finetuned_t2i_R@10"] > m["04"]["zero_shot_t2i_R@10"],
        rerank_claim: rerank_holds,
        "05: CRL (training-free and stage 1) > global CLIP, overall mAP": m["05"]["map/crl_projection/overall"]
        > m["05"]["map/global_clip/overall"]
        and m["05"]["map/crl_stage1/overall"] > m["05"]["map/global_clip/overall"],
        **scaling_claims(m["08"]),
    }


# Floors of the real profiles, each well under what the profile measured: real-ci (the first 2,000 products, 6-epoch
# photo pretraining, 300 test items; measured on seed 0 with the resnet10t tower on 2026-12-04: R@10 0.58,
# attribute-match 0.71, from scratch 0.24; with resnet18 on 2026-12-02: 0.50, 0.68, 0.20) and real (22 epochs, 996
# test items; committed records in results/real/, README › Real photos).
REAL_CI_FLOORS = {"01 R@10": 0.35, "01 attribute-match R@10": 0.55, "04 from scratch R@10": 0.1}
REAL_FLOORS = {"01 R@10": 0.5, "01 attribute-match R@10": 0.7, "04 from scratch R@10": 0.1}
# On the real profile, full fine-tuning minus zero-shot R@10 over seeds 0 and 1 was +0.012 ± 0.009 in the records
# committed first and -0.002 ± 0.009 in those rerun on 2026-12-03, -0.002 ± 0.007 with seed 2 added (README ›
# Reproducibility): a difference within the seeds' spread, so the claim allows a loss of about twice that spread. With
# the resnet10t tower (2026-12-04) it is +0.015 ± 0.007, a gain under every seed; the claim stays the one both hold.
FINE_TUNING_MAY_LOSE_R10 = 0.02
KEEPS_ZERO_SHOT = f"02: full fine-tuning keeps zero-shot's text→image R@10 (at most {FINE_TUNING_MAY_LOSE_R10} lower)"


def real_photo_claims(m: dict[str, dict], floors: dict[str, float]) -> dict[str, bool]:
    """The lessons as they hold on real photos, with the profile's floors (README › Real photos says which of the
    embedded course's claims do not carry over and why)."""
    return {
        **claims_on_drawings_and_photos(m),
        "01: text→image R@10 at or above its floor, far above chance": m["01"]["t2i_full_R@10"]
        >= floors["01 R@10"]
        > 10 * m["01"]["t2i_full_chance_R@10"],
        "01: attribute-match R@10 at or above its floor": m["01"]["t2i_attribute_match_model_R@10"]
        >= floors["01 attribute-match R@10"],
        "01: in-batch R@1 > full-gallery R@1": m["01"]["t2i_inbatch_R@1"] > m["01"]["t2i_full_R@1"],
        # Fine-tuned on the pairs the model was pretrained on, it gains little or nothing (within the spread of the
        # seeds: README › Real photos); the claim is that fine-tuning keeps what pretraining learned.
        KEEPS_ZERO_SHOT: m["02"]["full_finetune_t2i_R@10"] >= m["02"]["zero_shot_t2i_R@10"] - FINE_TUNING_MAY_LOSE_R10,
        # The cross-attention re-ranker is absent on purpose: on real photos it does not raise R@1 measurably
        # (README › Real photos and benchmarks/bench_rerank.py give the numbers and say why)
        "03: re-ranking with the catalogue's labels raises R@1 by >= 20 % relative": m["03"][
            "label_rerank/R@1_relative_gain"
        ]
        >= 0.2,
        "04: trained from scratch at or above its floor": m["04"]["scratch_t2i_R@10"] >= floors["04 from scratch R@10"],
        "05: CRL stage 1 > global CLIP, overall mAP": m["05"]["map/crl_stage1/overall"]
        > m["05"]["map/global_clip/overall"],
    }


def test_the_course_claims_hold_on_the_ci_records(ci_run):
    claims = course_claims(read_records(ci_run / "results"), rerank_may_lose_r1=RERANK_MAY_LOSE_R1_ON_CI)
    assert all(claims.values()), f"claims that do not hold on ci: {[c for c, ok in claims.items() if not ok]}"


def assert_the_golden_numbers_hold(out: Path, profile: str) -> None:
    """Every metric of the run in ``out`` but the timings, and every parameter, equals the profile's golden numbers
    (``tests/golden/<profile>-metrics.json``): a change that moves a number fails here, not sessions later. Values are
    compared on the numerics the golden file was made on (processor, kernels, libraries, thread count); on others,
    notebooks, metric names and parameters, and the test is skipped with the numerics that differ."""
    kept = golden.read_golden(golden.golden_path(profile), profile)
    records = golden.records_by_notebook(out / "results", profile)
    found, other_numerics = golden.differences(kept, records), golden.numerics_differences(kept, records)
    remedy = (
        "if every change is meant, rewrite the golden numbers from this run with `make golden` and commit them on their"
        " own, saying what moved and why; a cache filled at another thread count (outputs/test-cache) also moves them"
    )
    assert not found, (
        f"{len(found)} changes from the golden {profile} numbers:\n" + "\n".join(found[:40]) + f"\n{remedy}"
    )
    if other_numerics:
        pytest.skip(f"values compared only where the numerics are the golden file's, not: {'; '.join(other_numerics)}")


def test_the_ci_numbers_are_the_golden_ones(ci_run):
    assert_the_golden_numbers_hold(ci_run, "ci")


def test_the_real_photo_lessons_hold_on_the_committed_real_records():
    folder = REPO_ROOT / "results" / "real"
    if not list(folder.glob("[0-9][0-9]_*.json")):
        pytest.skip(f"no committed real-profile records in {folder} (make records-real writes them)")
    claims = real_photo_claims(read_records(folder), REAL_FLOORS)
    assert all(claims.values()), f"claims that do not hold on real: {[c for c, ok in claims.items() if not ok]}"


def test_the_course_claims_hold_on_the_committed_full_records():
    folder = REPO_ROOT / "results" / "full"
    if not list(folder.glob("[0-9][0-9]_*.json")):
        pytest.skip(f"no committed full-profile records in {folder} (make records writes them)")
    claims = course_claims(read_records(folder))
    assert all(claims.values()), f"claims that do not hold on full: {[c for c, ok in claims.items() if not ok]}"
