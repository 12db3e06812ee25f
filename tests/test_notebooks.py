"""Notebook execution is a test too: every notebook runs in the ci profile through the papermill runner.

Executed copies, results and the report land in ``outputs/ci/`` (figures in ``outputs/ci/figures/``) so a test
run never rewrites the committed ``figures/``. The real-tier run of notebooks 01 and 02 on the
fashion-product-small sample proves the real loading path executes end to end (skipped without the sample).
"""

import json

import pytest

from course_utils import run
from course_utils.paths import REPO_ROOT

pytestmark = pytest.mark.notebooks


# The notebook runs share one cache of their own (warm on a second run), never the course's data/cache.
TEST_CACHE = REPO_ROOT / "outputs" / "test-cache"


def _run(monkeypatch, out, *args):
    monkeypatch.setenv("FASHION_COURSE_CACHE", str(TEST_CACHE))
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(out))
    monkeypatch.setenv("FASHION_COURSE_FIGURES", str(out / "figures"))
    assert run.main([*args, "--output-dir", str(out)]) == 0


CI_OUTPUTS = REPO_ROOT / "outputs" / "ci"


@pytest.fixture(scope="module")
def ci_run():
    """Every notebook run once in the ci profile; the tests below read its executed copies and records."""
    with pytest.MonkeyPatch.context() as patch:
        _run(patch, CI_OUTPUTS, "--profile", "ci")
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


def test_real_tier_runs_on_the_fashion_product_sample(monkeypatch, fashion_product_sample):
    out = REPO_ROOT / "outputs" / "real-tier"
    _run(monkeypatch, out, "--profile", "ci", "--only", "01,02", "--set", "dataset=fashion-product-small",
         "--set", f"data_root={fashion_product_sample}", "--set", "test_size=300",
         "--set", "train_size=640", "--set", "finetune_epochs=1", "--set", "eval_every=5")
    for stem in ("01_baseline_clip", "02_fine_tuning"):
        record = json.loads((out / "results" / f"{stem}.json").read_text())
        assert record["parameters"]["dataset"] == "fashion-product-small" and record["metrics"]


def read_records(folder) -> dict[str, dict]:
    """``{notebook number: metrics}`` of the records in ``folder``; a record run under several seeds (``--seeds``)
    gives its means over the seeds."""
    records = {path.stem[:2]: json.loads(path.read_text()) for path in sorted(folder.glob("[0-9][0-9]_*.json"))}
    return {number: {**r["metrics"], **r.get("seeds", {}).get("mean", {})} for number, r in records.items()}


def course_claims(m: dict[str, dict]) -> dict[str, bool]:
    """The comparisons the course's prose makes, evaluated on one set of records (``{claim: holds}``)."""
    return {
        "01: in-batch R@1 is more than 3x the full-gallery R@1 (both directions)":
            m["01"]["t2i_inbatch_R@1"] > 3 * m["01"]["t2i_full_R@1"]
            and m["01"]["i2t_inbatch_R@1"] > 3 * m["01"]["i2t_full_R@1"],
        "01: the zero-shot model is above chance on the full gallery":
            m["01"]["t2i_full_R@10"] > m["01"]["t2i_full_chance_R@10"],
        "02: full fine-tuning > zero-shot (text→image R@10)":
            m["02"]["full_finetune_t2i_R@10"] > m["02"]["zero_shot_t2i_R@10"],
        "03: re-ranked R@1 > dual encoder R@1": m["03"]["rerank/R@1"] > m["03"]["dual/R@1"],
        "04: fine-tuned > zero-shot > random init (text→image R@10)":
            m["04"]["finetuned_t2i_R@10"] > m["04"]["zero_shot_t2i_R@10"] > m["04"]["random_init_t2i_R@10"],
        "05: CRL (training-free and stage 1) > global CLIP, overall mAP":
            m["05"]["map/crl_projection/overall"] > m["05"]["map/global_clip/overall"]
            and m["05"]["map/crl_stage1/overall"] > m["05"]["map/global_clip/overall"],
        "06: best learned compositor >= sum + 5 points of R@10": m["06"]["best_minus_sum_R@10"] >= 0.05,
    }


def test_the_course_claims_hold_on_the_ci_records(ci_run):
    claims = course_claims(read_records(ci_run / "results"))
    assert all(claims.values()), f"claims that do not hold on ci: {[c for c, ok in claims.items() if not ok]}"


def test_the_course_claims_hold_on_the_committed_full_records():
    folder = REPO_ROOT / "results" / "full"
    if not list(folder.glob("[0-9][0-9]_*.json")):
        pytest.skip(f"no committed full-profile records in {folder} (make records writes them)")
    claims = course_claims(read_records(folder))
    assert all(claims.values()), f"claims that do not hold on full: {[c for c, ok in claims.items() if not ok]}"
