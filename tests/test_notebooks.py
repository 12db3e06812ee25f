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


def test_every_notebook_runs_in_the_ci_profile(monkeypatch):
    out = REPO_ROOT / "outputs" / "ci"
    _run(monkeypatch, out, "--profile", "ci")
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
