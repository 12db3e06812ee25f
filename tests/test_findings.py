"""The README's findings come from the committed full-profile records (``course_utils.findings``)."""

from __future__ import annotations

import json

import pytest

from course_utils import findings
from course_utils.paths import REPO_ROOT


def write_record(folder, stem: str, metrics: dict, profile: str = "full") -> None:
    record = {"notebook": stem, "parameters": {"profile": profile, "seed": 0}, "metrics": metrics}
    (folder / f"{stem}.json").write_text(json.dumps(record))


def test_bullets_render_the_records_numbers(tmp_path):
    write_record(tmp_path, "03_cross_modal_attention", {
        "dual/R@1": 0.2, "rerank/R@1": 0.25, "dual/R@10": 0.7, "rerank/R@10": 0.75, "seed002_rerank/R@1": 0.19,
        "latency_ms/dual": 3.0, "latency_ms/rerank": 12.5, "latency_ms/full_gallery_cross_encoder": 234.0})
    write_record(tmp_path, "05_conditional_embeddings", {"map/global_clip/overall": 0.381,
                                                         "map/crl_stage1/overall": 0.449})
    text = findings.render_findings(findings.read_records(tmp_path))
    assert "R@1 0.200 → 0.250" in text and "0.190" in text and "234 ms" in text
    assert "global CLIP 38.1, CRL stage 1 44.9" in text
    assert text.count("\n- ") == 2 and "seed 0" in text


def test_records_of_another_profile_are_refused(tmp_path):
    write_record(tmp_path, "05_conditional_embeddings", {"map/global_clip/overall": 0.3}, profile="ci")
    with pytest.raises(SystemExit, match="'ci' profile"):
        findings.read_records(tmp_path)


def test_check_fails_on_a_stale_readme_and_passes_after_regeneration(tmp_path):
    write_record(tmp_path, "05_conditional_embeddings", {"map/global_clip/overall": 0.5})
    readme = tmp_path / "README.md"
    readme.write_text(f"# course\n\n## Findings\n{findings.START}\n- typed by hand: 0.7\n{findings.END}\n\nmore\n")
    args = ["--records", str(tmp_path), "--readme", str(readme)]
    assert findings.main([*args, "--check"]) == 1
    assert findings.main(args) == 0
    assert findings.main([*args, "--check"]) == 0
    text = readme.read_text()
    assert "global CLIP 50.0" in text and "typed by hand" not in text and text.endswith("\n\nmore\n")


def test_the_readme_agrees_with_the_committed_full_records():
    if not list(findings.RECORDS.glob("[0-9][0-9]_*.json")):
        pytest.skip(f"no committed full-profile records in {findings.RECORDS.relative_to(REPO_ROOT)} yet "
                    "(make run, then make records and make findings)")
    assert findings.main(["--check"]) == 0
