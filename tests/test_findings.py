"""The README's findings come from the committed full-profile records (``course_utils.findings``)."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from course_utils import findings
from course_utils.paths import REPO_ROOT
from course_utils.results import is_timing_metric, same_metric_value
from tests.conftest import load_benchmark


def write_record(folder, stem: str, metrics: dict, profile: str = "full") -> None:
    record = {"notebook": stem, "parameters": {"profile": profile, "seed": 0}, "metrics": metrics}
    (folder / f"{stem}.json").write_text(json.dumps(record))


def test_bullets_render_the_records_numbers(tmp_path):
    write_record(
        tmp_path,
        "03_cross_modal_attention",
        {
            "dual/R@1": 0.2,
            "rerank/R@1": 0.25,
            "rerank/R@1_relative_gain": 0.25,
            "dual/R@10": 0.7,
            "rerank/R@10": 0.75,
            "seed002_rerank/R@1": 0.19,
            "latency_ms/dual": 3.0,
            "latency_ms/rerank": 12.5,
            "latency_ms/full_gallery_cross_encoder": 234.0,
        },
    )
    write_record(
        tmp_path, "05_conditional_embeddings", {"map/global_clip/overall": 0.381, "map/crl_stage1/overall": 0.449}
    )
    text = findings.render_findings(findings.read_records(tmp_path))
    assert "R@1 0.200 → 0.250" in text and "+25 % relative" in text and "0.190" in text and "234 ms" in text
    assert "global CLIP 38.1, CRL stage 1 44.9" in text
    assert text.count("\n- ") == 2 and "seed 0" in text


RERANK_03 = {
    "dual/R@1": 0.2,
    "rerank/R@1": 0.18,
    "rerank/R@1_relative_gain": -0.1,
    "dual/R@10": 0.7,
    "rerank/R@10": 0.69,
    "seed002_rerank/R@1": 0.19,
    "latency_ms/dual": 3.0,
    "latency_ms/rerank": 12.5,
    "latency_ms/full_gallery_cross_encoder": 234.0,
}


def test_the_03_bullet_names_the_label_re_rankers_only_when_the_record_has_them(tmp_path):
    write_record(tmp_path, "03_cross_modal_attention", RERANK_03)
    assert "catalogue's labels" not in findings.render_findings(findings.read_records(tmp_path))
    write_record(
        tmp_path,
        "03_cross_modal_attention",
        {**RERANK_03, "label_rerank/R@1": 0.45, "label_rerank/R@1_relative_gain": 1.25},
    )
    text = findings.render_findings(findings.read_records(tmp_path))
    assert "catalogue's labels" in text and "R@1 0.450 (+0.250, one seed" in text and "+125 % relative" in text
    assert "guessed from the photos" not in text
    write_record(
        tmp_path,
        "03_cross_modal_attention",
        {
            **RERANK_03,
            "label_rerank/R@1": 0.45,
            "label_rerank/R@1_relative_gain": 1.25,
            "photo_label_rerank/R@1": 0.21,
            "photo_label_rerank/R@1_relative_gain": 0.05,
        },
    )
    text = findings.render_findings(findings.read_records(tmp_path))
    assert "guessed from the photos" in text and "R@1 0.210 (+0.010, one seed" in text and "+5 % relative" in text
    assert "kept soft" not in text
    with_photo_labels = json.loads((tmp_path / "03_cross_modal_attention.json").read_text())["metrics"]
    soft = {"photo_label_soft_rerank/R@1": 0.23, "photo_label_soft_rerank/R@1_relative_gain": 0.15}
    write_record(tmp_path, "03_cross_modal_attention", {**with_photo_labels, **soft})
    text = findings.render_findings(findings.read_records(tmp_path))
    assert "kept soft" in text and "R@1 0.230 (+0.030, one seed" in text and "+15 % relative" in text
    assert "against the hard guesses: +0.020, one seed" in text


BASELINE_01 = {
    "gallery_size": 1000,
    "t2i_full_R@1": 0.05,
    "t2i_full_R@10": 0.34,
    "t2i_full_chance_R@1": 0.001,
    "t2i_full_chance_R@10": 0.01,
    "t2i_inbatch_R@1": 0.51,
    "t2i_inbatch_chance_R@1": 0.031,
    "t2i_attribute_match_model_R@10": 0.72,
    "t2i_exact_model_R@10": 0.34,
}


def test_the_01_bullet_names_the_queries_seen_in_train_only_when_the_record_has_them(tmp_path):
    write_record(tmp_path, "01_baseline_clip", BASELINE_01)
    assert "train caption" not in findings.render_findings(findings.read_records(tmp_path))
    seen = {"t2i_train_caption_queries": 132, "t2i_train_caption_R@10": 0.812, "t2i_not_train_caption_R@10": 0.632}
    write_record(tmp_path, "01_baseline_clip", BASELINE_01 | seen)
    assert (
        "132 of the test queries are word for word a train caption: exact-item R@10 0.812 on those, 0.632 on the "
        "others." in findings.render_findings(findings.read_records(tmp_path))
    )


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


@pytest.mark.parametrize("profile", sorted(findings.SECTIONS))
def test_the_readme_agrees_with_the_committed_records(profile):
    records = findings.SECTIONS[profile][0]
    if not list(records.glob("[0-9][0-9]_*.json")):
        pytest.skip(
            f"no committed {profile}-profile records in {records.relative_to(REPO_ROOT)} yet "
            f"(make run{'-real' * (profile == 'real')}, then make records{'-real' * (profile == 'real')} "
            "and make findings)"
        )
    assert findings.main(["--profile", profile, "--check"]) == 0


def seeded_record(stem: str, values: dict[str, list[float]]) -> dict:
    """A record as ``run --seeds 0,1,2`` leaves it: the first seed's metrics plus the seeds section."""
    mean = {name: sum(v) / len(v) for name, v in values.items()}
    std = {name: (sum((x - mean[name]) ** 2 for x in v) / (len(v) - 1)) ** 0.5 for name, v in values.items()}
    return {
        "notebook": stem,
        "parameters": {"profile": "full", "seed": 0},
        "metrics": {name: v[0] for name, v in values.items()},
        "seeds": {"seeds": [0, 1, 2], "values": values, "mean": mean, "std": std, "not_aggregated": []},
    }


def test_seeded_records_render_mean_and_std_and_a_verdict_per_comparison(tmp_path):
    record = seeded_record(
        "05_conditional_embeddings",
        {
            "map/global_clip/overall": [0.38, 0.40, 0.39],
            "map/crl_stage1/overall": [0.45, 0.46, 0.44],  # higher under every seed, by far more than the spread
            "map/crl_stage2/overall": [0.46, 0.45, 0.45],  # stage 2 vs stage 1: +1, -1, +1 points: not a finding
        },
    )
    (tmp_path / "05_conditional_embeddings.json").write_text(json.dumps(record))
    text = findings.render_findings(findings.read_records(tmp_path))
    assert "global CLIP 39.0 ± 1.0, CRL stage 1 45.0 ± 1.0" in text and "seeds 0, 1, 2" in text
    assert (
        "CRL stage 1 minus global CLIP: +6.0 ± 1.0, higher under all 3 seeds by more than the spread: a finding"
    ) in text
    assert "stage 2 minus stage 1: +0.3 ± 1.2, higher under 2 of 3 seeds: not a finding" in text


def test_a_mean_change_that_rounds_to_zero_reads_plus_zero_and_relative_gains_keep_their_spread(tmp_path):
    stage1, stage2 = [0.45, 0.46, 0.44], [0.4505, 0.4595, 0.4398]  # +0.05, -0.05, -0.02 points: mean -0.007
    record = seeded_record(
        "05_conditional_embeddings", {"map/crl_stage1/overall": stage1, "map/crl_stage2/overall": stage2}
    )
    (tmp_path / "05_conditional_embeddings.json").write_text(json.dumps(record))
    seeded_03 = {name: [value, value + 0.01, value + 0.02] for name, value in RERANK_03.items()}
    (tmp_path / "03_cross_modal_attention.json").write_text(
        json.dumps(seeded_record("03_cross_modal_attention", seeded_03))
    )
    text = findings.render_findings(findings.read_records(tmp_path))
    assert "stage 2 minus stage 1: +0.0 ± 0.1, higher under 1 of 3 seeds: not a finding" in text
    assert "-9 ± 1 % relative" in text  # the relative gain: -0.10, -0.09, -0.08 over the seeds


def test_a_one_seed_relative_gain_that_rounds_to_zero_reads_plus_zero(tmp_path):
    # one seed: the gains are plain numbers, not Spreads; -0.3 % and -0.4 % must not read "-0 %"
    write_record(
        tmp_path,
        "03_cross_modal_attention",
        {
            **RERANK_03,
            "rerank/R@1_relative_gain": -0.003,
            "label_rerank/R@1": 0.45,
            "label_rerank/R@1_relative_gain": -0.004,
        },
    )
    text = findings.render_findings(findings.read_records(tmp_path))
    assert text.count("+0 % relative") == 2 and "-0 %" not in text


def test_the_header_names_the_records_run_under_the_first_seed_only(tmp_path):
    (tmp_path / "03_cross_modal_attention.json").write_text(
        json.dumps(
            seeded_record(
                "03_cross_modal_attention",
                {name: [value, value + 0.01, value + 0.02] for name, value in RERANK_03.items()},
            )
        )
    )
    for stem in ("05_conditional_embeddings", "09_not_yet_written"):  # 05 has a bullet, 09 none (not named)
        write_record(tmp_path, stem, {"map/global_clip/overall": 0.5})
    header = findings.render_findings(findings.read_records(tmp_path)).split("\n")[0]
    assert "seeds 0, 1, 2; mean ± standard deviation over the seeds (05 under the first seed only)" in header


def test_a_constant_metric_stays_a_plain_number_and_a_one_seed_record_says_so():
    record = seeded_record("06_composed_retrieval", {"n_queries": [500, 500, 500], "sum/R@10": [0.2, 0.3, 0.25]})
    numbers = findings.numbers(record)
    assert f"{numbers['n_queries']}" == "500" and f"{100 * numbers['sum/R@10']:+.1f}" == "+25.0 ± 5.0"
    assert f"{findings.Spread(-0.004, 0.08):+.2f}" == "+0.00 ± 0.08"  # a mean that rounds to zero shows no minus
    one_seed = {"parameters": {"seed": 0}, "metrics": {"a": 0.5, "b": 0.4}}
    assert findings.compare(one_seed, "a", "b") == "+0.100, one seed: not yet checked against the spread over seeds"


# Notebook 06's loss ablation, (higher, lower) as its bullet compares them: each compositor with the classification
# loss (ComposeAE's; TIRG's main recipe) over it with the soft triplet loss (seed 004's; ComplexRotation's main recipe)
COMPLEX_ROTATIONS_LOSS_OVER_SOFT_TRIPLET = (
    "ablation/ComplexRotation (ComposeAE) + classification/R@10",
    "ablation/ComplexRotation (ComposeAE) + soft_triplet (main recipe)/R@10",
)
TIRGS_LOSS_OVER_SOFT_TRIPLET = (
    "ablation/TIRG + classification (main recipe)/R@10",
    "ablation/TIRG + soft_triplet/R@10",
)
LOSS_SWAPS = {  # R@10 under three seeds
    COMPLEX_ROTATIONS_LOSS_OVER_SOFT_TRIPLET[0]: [0.5, 0.55, 0.5],
    COMPLEX_ROTATIONS_LOSS_OVER_SOFT_TRIPLET[1]: [0.44, 0.48, 0.43],
    TIRGS_LOSS_OVER_SOFT_TRIPLET[0]: [0.5, 0.5, 0.5],
    TIRGS_LOSS_OVER_SOFT_TRIPLET[1]: [0.49, 0.51, 0.48],
}


def seeded_06_values(best_minus_sum: list[float]) -> dict[str, list]:
    """The three-seed values a 06 bullet needs, whatever the record's date: queries, the sum, the leak, the loss
    ablation and the test queries' own best minus the sum (``best_minus_sum``)."""
    leak = "target caption (seed 004's test; leaks the answer)/R@10"
    values = {"n_queries": [500] * 3, "sum/R@10": [0.2] * 3, leak: [0.8] * 3, **LOSS_SWAPS}
    return {**values, "best_minus_sum_R@10": best_minus_sum}


def test_06_states_the_margin_of_the_compositor_picked_on_val_and_of_the_tests_own_best():
    """Since 2026-12-07 notebook 06 keeps the learned compositor that scores best on val triplets; a record written
    before holds only the margin of the test queries' own best, and the bullet says the pick was made there."""
    before = seeded_06_values([0.1, 0.12, 0.11])
    since = {**before, "picked_minus_sum_R@10": [0.1, -0.02, 0.11], "n_val_queries": [180, 190, 200]}
    old, new = (seeded_record("06_composed_retrieval", values) for values in (before, since))
    assert "the best picked on these test queries under each seed" in findings._06(old)
    assert "predate the pick on val triplets" in findings._06(old) and "kept" not in findings._06(old)
    text = findings._06(new)
    assert "the learned compositor kept (picked on the val triplets, 190 ± 10 queries) minus sum: +6.3 ± 7.2" in text
    assert "the test queries' own best minus sum, which a pick on them would report: +11.0 ± 1.0" in text
    verdicts = findings.verdicts({"06": new})
    assert {pair: verdicts[pair] for pair in verdicts if not pair[0].startswith("ablation/")} == {
        ("picked_minus_sum_R@10", None): False,
        ("best_minus_sum_R@10", None): True,
    }


def test_06_states_what_swapping_each_compositors_loss_does_over_the_seeds():
    """Notebook 06 trains ComplexRotation with seed 004's soft triplet loss and TIRG with the classification loss, and
    each with the other loss in its ablation; the bullet states each swap's difference over the seeds."""
    record = seeded_record("06_composed_retrieval", seeded_06_values([0.1] * 3))
    text = findings._06(record)
    assert (
        "Swapping the loss: ComplexRotation with ComposeAE's classification loss minus with the soft triplet loss: "
        "+6.7 ± 0.6 points, higher under all 3 seeds by more than the spread: a finding; TIRG with its main recipe, "
        "the classification loss, minus with the soft triplet loss: +0.7 ± 1.5 points, higher under 2 of 3 seeds: "
        "not a finding."
    ) in text
    verdicts = findings.verdicts({"06": record})
    assert verdicts[COMPLEX_ROTATIONS_LOSS_OVER_SOFT_TRIPLET] and not verdicts[TIRGS_LOSS_OVER_SOFT_TRIPLET]


def test_06_names_the_sum_fed_only_the_new_value_only_when_the_record_has_it():
    """Since 2026-12-07 notebook 06 records the sum fed only the value its text asks for ("blue" of "replace red
    with blue") and the kept compositor's margin over it; the bullet states both, and an older record stays silent."""
    older = seeded_06_values([0.1] * 3)
    older.update({"picked_minus_sum_R@10": [0.1] * 3, "n_val_queries": [190] * 3})
    since = {**older, "sum, new value only/R@10": [0.3, 0.32, 0.34]}
    since["picked_minus_sum_new_value_only_R@10"] = [0.0, -0.02, 0.02]
    old, new = (seeded_record("06_composed_retrieval", values) for values in (older, since))
    assert "new value" not in findings._06(old)
    text = findings._06(new)
    assert 'The sum fed only the new value ("blue" of "replace red with blue") scores 32.0 ± 2.0;' in text
    assert "the learned compositor kept minus it: +0.0 ± 2.0 points, higher under 1 of 3 seeds: not a finding." in text
    assert ("picked_minus_sum_new_value_only_R@10", None) in findings.verdicts({"06": new})


def test_markers_quoted_in_prose_are_not_the_section(tmp_path):
    readme = tmp_path / "README.md"
    prose = f"The tool writes between the `{findings.START}` / `{findings.END}` markers.\n"
    readme.write_text(f"# course\n{prose}\n{findings.START}\n- old\n{findings.END}\ntail\n")
    updated = findings.replace_section(readme.read_text(), "- new")
    assert updated == f"# course\n{prose}\n{findings.START}\n- new\n{findings.END}\ntail\n"


def test_the_real_profile_fills_its_own_section_with_its_runtimes(tmp_path):
    write_record(
        tmp_path,
        "01_baseline_clip",
        {
            "gallery_size": 996,
            "t2i_full_R@1": 0.2,
            "t2i_full_R@10": 0.6,
            "t2i_full_chance_R@1": 0.001,
            "t2i_full_chance_R@10": 0.01,
            "t2i_inbatch_R@1": 0.5,
            "t2i_inbatch_chance_R@1": 0.031,
            "t2i_attribute_match_model_R@10": 0.8,
            "t2i_exact_model_R@10": 0.6,
            "t2i_same_caption_model_R@10": 0.62,
        },
        profile="real",
    )
    (tmp_path / "timings-real.json").write_text(json.dumps({"01_baseline_clip": 61.4, "02_fine_tuning": 118.6}))
    _, start, end = findings.SECTIONS["real"]
    readme = tmp_path / "README.md"
    readme.write_text(f"## Findings\n{findings.START}\nfull\n{findings.END}\n## Real\n{start}\nstale\n{end}\n")
    assert findings.main(["--profile", "real", "--records", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert f"{findings.START}\nfull\n{findings.END}" in text  # the full profile's section is left alone
    assert "caption counted as a hit, 0.620" in text and "01 61 s, 02 119 s; 3.0 min in all" in text
    assert "stale" not in text
    folder = tmp_path.resolve()  # the line names the command that renders this section again, options and all
    command = f"python -m course_utils.findings --profile real --records {folder} --readme {folder / 'README.md'}"
    assert f"Generated by `{command}` from the real-profile records in `{folder}/`" in text
    with pytest.raises(SystemExit, match="'real' profile, expected 'full'"):
        findings.read_records(tmp_path)


def test_runtimes_of_further_seeds_stand_beside_the_first_seeds():
    timings = {
        "01_baseline_clip": 833.2,
        "03_cross_modal_attention": 296.0,
        "01_baseline_clip (seed 1)": 790.4,
        "03_cross_modal_attention (seed 1)": 301.0,
    }
    line = findings.render_runtimes(timings)
    assert "01 833 s (seed 1: 790 s), 03 296 s (seed 1: 301 s); 37.0 min in all" in line


def test_the_08_bullet_renders_each_scaling_axis_from_the_record(tmp_path):
    metrics = {
        "processes": 2,
        "weight_max_abs_diff": 6.5e-8,
        "weights_moved": 2.1e-3,
        "train_images_per_s_1proc": 104.0,
        "train_images_per_s_resumed": 60.1,
        "embed_single_s": 16.9,
        "embed_sharded_job_s": 28.3,
        "embed_identical": 0,
        "catalogue_size": 9500,
        "milvus_topk_agreement": 0.75,
        "milvus_build_s": 3.26,
        "milvus_reopen_s": 4.9,
        "milvus_reopen_agreement": 1.0,
        "ondisk_vectors": 1000000,
        "ondisk_lists_mb": 40.0,
        "ondisk_build_s": 23.9,
        "ondisk_best_recall": 0.8711,
        "ondisk_best_nprobe": 16,
        "ondisk_best_median_ms": 1.9595,
        "runtime_s": 200.1,
    }
    milvus = {
        "columns": ["search", "matching items", "same top-k as exact", "Milvus ms", "exact (numpy) ms"],
        "rows": [["no filter", 9500, "12/12", 382.7, 6.1], ["colour == 'black'", 1487, "9/12", 458.7, 6.9]],
    }
    record = {
        "notebook": "08_scaling_out",
        "metrics": metrics,
        "tables": {"milvus": milvus},
        "parameters": {
            "profile": "full",
            "seed": 0,
            "top_k": 10,
            "n_queries": 12,
            "filter_attribute": "colour",
            "rerank": 100,
        },
    }
    (tmp_path / "08_scaling_out.json").write_text(json.dumps(record))
    text = findings.render_findings(findings.read_records(tmp_path))
    assert "end 6.5e-08 (largest weight difference)" in text and "moved by 2.1e-03" in text
    assert "104 images/s in 1 process, 60 in 2" in text
    assert "not identical to one process's (28 s for the job" in text
    assert "75 % of 12 queries × 2 searches" in text and "median 383–459 ms per query against 6–7 ms" in text
    assert "1,000,000 vectors: 40 MB of lists, built in 24 s, recall@10 0.871 at nprobe 16" in text
    assert "The notebook took 200 s." in text
    # a record of 2026-12-06 or later also names 1 process's speed over the same steps and the setting served
    metrics |= {"train_images_per_s_1proc_half": 88.4, "ondisk_served_recall": 0.8702}
    metrics |= {"ondisk_served_nprobe": 4, "ondisk_served_median_ms": 0.71}
    record["parameters"]["recall_tolerance"] = 0.005
    (tmp_path / "08_scaling_out.json").write_text(json.dumps(record))
    text = findings.render_findings(findings.read_records(tmp_path))
    assert "104 images/s in 1 process (88 over the steps the 2 processes ran, with the same checkpoint" in text
    assert "1.96 ms per query (median); the notebook serves nprobe 4, the fastest setting within 0.005" in text
    assert "of that recall: 0.870 at 0.71 ms. The notebook took 200 s." in text


def test_column_span_collapses_equal_ends():
    table = {"columns": ["a", "ms"], "rows": [["x", 5.2], ["y", 4.9]]}
    assert findings.column_span(table, "ms") == "5"
    assert findings.column_span({**table, "rows": [["x", 5.2], ["y", 7.6]]}, "ms") == "5–8"


AMD_REAL, INTEL_FULL = "amd-family25-model17-real", "intel-family6-model167-full"
INTEL_REAL = "intel-family6-model167-real"
LATER_AMD_FULL, LATER_AMD_REAL = "amd-family26-model2-full", "amd-family26-model2-real"
LATER_INTEL_FULL, LATER_INTEL_REAL = "intel-family6-model207-full", "intel-family6-model207-real"
AVX2_AMD_FULL = "amd-family25-model1-full"


def processor_signature(record: dict) -> tuple[str, str]:
    """``("family 6 model 207", "avx avx2 ...")``: the generation (stepping left out) and the listed extensions in a
    record's ``cpu_signature``."""
    generation, extensions = record["environment"]["cpu_signature"].split("; ")
    return generation.rsplit(" stepping", 1)[0], extensions


def committed_real_record(number: str) -> dict:
    """The committed real-profile record of notebook ``number`` (``results/real/``)."""
    return findings.read_records(REPO_ROOT / "results" / "real", "real")[number]


def other_host_records(host: str) -> tuple[dict, dict]:
    """The records rerun on another host (``results/other-hosts/<host>/``, ``host`` ending in its profile) and the
    committed ones of the same notebooks (``results/<profile>/``), by stem."""
    profile = host.rsplit("-", 1)[1]
    rerun = {p.stem: json.loads(p.read_text()) for p in sorted((findings.OTHER_HOSTS / host).glob("0*.json"))}
    committed = {stem: json.loads((REPO_ROOT / "results" / profile / f"{stem}.json").read_text()) for stem in rerun}
    return rerun, committed


def test_the_later_amd_hosts_real_records_say_what_the_reproducibility_log_says():
    """``results/REPRODUCIBILITY.md``, a later AMD generation: the real profile's photo model trained there moved the
    numbers, in the directions the log names. (Its full-profile records equalled the committed ones until the
    drawings changed on 2026-12-05; the committed ones were then rerun on that host, and its own were removed.)"""
    runtimes = load_benchmark("bench_runtimes")
    stems = ["01_baseline_clip", "02_fine_tuning", "03_cross_modal_attention", "04_random_init_ablation"]
    stems += ["05_conditional_embeddings", "06_composed_retrieval"]
    rerun, committed = other_host_records(AMD_REAL)
    assert sorted(rerun) == stems
    assert all(rerun[stem]["parameters"]["seed"] == committed[stem]["parameters"]["seed"] == 0 for stem in stems)
    differing = runtimes.differing_metrics(
        {stem: committed[stem]["metrics"] for stem in stems}, {stem: rerun[stem]["metrics"] for stem in stems}
    )
    assert [name for name in differing if not is_timing_metric(name.split(".", 1)[1])] != []
    host = {record["environment"]["cpu_signature"] for record in rerun.values()}
    assert len(host) == 1 and host != {record["environment"]["cpu_signature"] for record in committed.values()}

    def difference(record: dict, first: str, second: str) -> float:
        return record["metrics"][first] - record["metrics"][second]

    def committed_differences(stem: str, first: str, second: str) -> list[float]:
        values = committed[stem]["seeds"]["values"]
        return [a - b for a, b in zip(values[first], values[second])]

    kept_direction = [
        ("01_baseline_clip", "t2i_inbatch_R@1", "t2i_full_R@1"),
        ("01_baseline_clip", "t2i_attribute_match_model_R@10", "t2i_exact_model_R@10"),
        ("03_cross_modal_attention", "label_rerank/R@1", "dual/R@1"),
        ("04_random_init_ablation", "finetuned_t2i_R@10", "scratch_t2i_R@10"),
        ("05_conditional_embeddings", "map/crl_stage1/overall", "map/global_clip/overall"),
    ]
    for stem, first, second in kept_direction:
        assert all(d > 0 for d in committed_differences(stem, first, second)), (stem, first)
        assert difference(rerun[stem], first, second) > 0, (stem, first)
    best_minus_sum = "best_minus_sum_R@10"  # 06's best learned compositor over the sum
    assert all(d > 0 for d in committed["06_composed_retrieval"]["seeds"]["values"][best_minus_sum])
    assert rerun["06_composed_retrieval"]["metrics"][best_minus_sum] > 0
    fine_tuning = ("02_fine_tuning", "full_finetune_t2i_R@10", "zero_shot_t2i_R@10")
    assert 0 < difference(rerun[fine_tuning[0]], *fine_tuning[1:]) < min(committed_differences(*fine_tuning))
    photo_labels = ("03_cross_modal_attention", "photo_label_rerank/R@1", "dual/R@1")
    assert all(d > 0 for d in committed_differences(*photo_labels))  # a finding on the committed records
    assert difference(rerun[photo_labels[0]], *photo_labels[1:]) < 0  # below the dual encoder on the other host


# Metrics a notebook began to record after some of the records compared were written (01's recall on the queries that
# are a train caption word for word, and on the rest, and 03's re-ranking by the photos' label vote kept soft, both
# since 2026-12-06; 06's pick of the compositor to keep on val triplets and its sum fed only the new value, since
# 2026-12-07): one record of a pair may lack them.
ADDED_SINCE = re.compile(
    r"t2i_(not_)?train_caption_|photo_label_soft_rerank/|picked_minus_sum_|n_val_queries|val/|sum, new value only/"
)


def moved_values(committed: dict, rerun: dict) -> dict[tuple[str, int], float]:
    """``{(metric, seed): |rerun - committed|}`` for every value of a notebook's record, timings left out, that the
    rerun on another host did not give again (the two records hold the same metrics under the same seeds, but for
    those :data:`ADDED_SINCE`)."""
    here, there = findings.values_by_seed(committed), findings.values_by_seed(rerun)
    assert all(ADDED_SINCE.match(name) for name in here.keys() ^ there.keys()), committed["notebook"]
    return {
        (name, seed): abs(there[name][seed] - here[name][seed])
        for name in here.keys() & there.keys()
        if not is_timing_metric(name)
        for seed in here[name]
        if not same_metric_value(there[name][seed], here[name][seed])
    }


def test_the_full_profile_on_another_makers_processor_moves_what_the_reproducibility_log_says():
    """``results/REPRODUCIBILITY.md``, another processor maker: an Intel host's full-profile run, set against the
    committed (AMD) records seed by seed, gives 01's and 07's metrics exactly; 02's losses differ in the seventh
    digit; 04 all but two values; 05 and 06 move by less than 0.01, 03's cross-encoder's R@1 by up to 0.04. (Its 08
    is set against an Intel host's committed 08: the later Intel generation's test below.)"""
    rerun, committed = other_host_records(INTEL_FULL)
    assert sorted(stem[:2] for stem in rerun) == ["01", "02", "03", "04", "05", "06", "07", "08"]
    del rerun["08_scaling_out"], committed["08_scaling_out"]
    makers = {record["environment"]["cpu"].split()[0] for record in rerun.values()}
    assert makers == {"Intel(R)"} and {record["environment"]["cpu"] for record in committed.values()} == {"AMD EPYC"}
    assert all(rerun[stem]["environment"]["libraries"] == committed[stem]["environment"]["libraries"] for stem in rerun)
    moved = {stem[:2]: moved_values(committed[stem], rerun[stem]) for stem in rerun}
    assert moved["01"] == {} and moved["07"] == {}
    assert {name for name, _ in moved["02"]} == {"full_finetune_final_loss", "full_finetune_i2t_R@1"}
    losses = findings.values_by_seed(committed["02_fine_tuning"])["full_finetune_final_loss"]
    assert all(moved["02"]["full_finetune_final_loss", seed] < 1e-6 * losses[seed] for seed in range(3))
    assert len(moved["04"]) == 2
    assert 0 < max(moved["05"].values()) < 0.01 and 0 < max(moved["06"].values()) < 0.01
    reranked = [moved["03"].get(("rerank/R@1", seed), 0) for seed in range(3)]
    assert 0.03 < max(reranked) < 0.04
    assert max(reranked) > committed["03_cross_modal_attention"]["seeds"]["std"]["rerank/R@1"]  # beyond the spread


def by_number(records: dict[str, dict]) -> dict[str, dict]:
    return {stem[:2]: record for stem, record in records.items()}


def test_the_full_profiles_verdicts_are_the_same_on_the_other_makers_processor():
    """``results/REPRODUCIBILITY.md``: every comparison the full profile's findings draw gets the same verdict from
    the Intel host's three seeds as from the committed ones."""
    another_host, committed = other_host_records(INTEL_FULL)
    seeded = [stem for stem in committed if committed[stem].get("seeds")]
    assert len(seeded) == 6 and all(another_host[stem]["seeds"]["seeds"] == [0, 1, 2] for stem in seeded)
    here, there = findings.verdicts(by_number(committed), "full"), findings.verdicts(by_number(another_host), "full")
    assert len(here) > 10 and here == there


def test_a_later_amd_generation_gives_every_committed_full_metric_where_an_amd_host_wrote_it():
    """``results/REPRODUCIBILITY.md``, 2026-12-06: an AMD host of a later generation (family 26 model 2) ran the full
    profile from a fresh install and an empty cache. 01-07, whose committed records an AMD host of family 25 model 17
    wrote, gave every value under every seed again, timings aside; 08, whose committed record the Intel host wrote,
    moved only in what moved there: the resumed run's weight difference and the on-disk index's recalls."""
    rerun, committed = other_host_records(LATER_AMD_FULL)
    assert sorted(stem[:2] for stem in rerun) == ["01", "02", "03", "04", "05", "06", "07", "08"]
    assert {record["environment"]["cpu_signature"].split(";")[0] for record in rerun.values()} == {
        "family 26 model 2 stepping 1"
    }
    assert all(rerun[stem]["environment"]["libraries"] == committed[stem]["environment"]["libraries"] for stem in rerun)
    assert all(not rerun[stem]["environment"]["constraints"]["unmet"] for stem in rerun)
    writers = {stem[:2]: record["environment"]["cpu_signature"].split(";")[0] for stem, record in committed.items()}
    amd_written = {writers[number] for number in ("01", "02", "03", "04", "05", "06", "07")}
    assert amd_written == {"family 25 model 17 stepping 1"}
    assert committed["08_scaling_out"]["environment"]["cpu"].startswith("Intel")
    moved = {stem[:2]: moved_values(committed[stem], rerun[stem]) for stem in rerun}
    assert all(moved[number] == {} for number in ("01", "02", "03", "04", "05", "06", "07"))
    assert {name for name, _ in moved["08"]} == {"weight_max_abs_diff", "ondisk_best_recall", "ondisk_served_recall"}
    assert all(rerun[stem]["seeds"]["seeds"] == [0, 1, 2] for stem in rerun if committed[stem].get("seeds"))


def test_the_full_profile_on_the_amd_host_with_avx2_only_gives_a_third_set_of_values_and_the_same_verdicts():
    """``results/REPRODUCIBILITY.md``, 2026-12-07: an AMD host with AVX2 and no AVX-512 (family 25 model 1, the
    processor of the committed real records) ran the full profile from a fresh install and an empty cache, 03 on the
    committed records' grid of dual weights. 01 and 07 give every committed value; 02 moves its final losses below the
    sixth digit and one R@1; 04 gives the Intel host's values, not the AVX-512 AMD hosts'; 03, 05, 06 and 08 move from
    both; every verdict of the findings is the committed one. (05's and 06's moves are the host's: the notebooks and
    package of the commit at which the family 26 model 2 host gave every committed value, run on this host from its
    cache, gave this host's values, not the committed ones.)"""
    rerun, committed = other_host_records(AVX2_AMD_FULL)
    intel = other_host_records(INTEL_FULL)[0]
    assert sorted(stem[:2] for stem in rerun) == ["01", "02", "03", "04", "05", "06", "07", "08"]
    ((model, extensions),) = {processor_signature(record) for record in rerun.values()}
    assert model == "family 25 model 1" and "avx2" in extensions.split() and "avx512f" not in extensions.split()
    assert all(rerun[stem]["environment"]["libraries"] == committed[stem]["environment"]["libraries"] for stem in rerun)
    assert all(not rerun[stem]["environment"]["constraints"]["unmet"] for stem in rerun)
    assert all(rerun[stem]["seeds"]["seeds"] == [0, 1, 2] for stem in rerun if committed[stem].get("seeds"))
    grid = "dual_weights"
    assert (
        rerun["03_cross_modal_attention"]["parameters"][grid]
        == committed["03_cross_modal_attention"]["parameters"][grid]
    )
    moved = {stem[:2]: moved_values(committed[stem], rerun[stem]) for stem in rerun}
    assert moved["01"] == {} and moved["07"] == {}
    assert {name for name, _ in moved["02"]} == {"full_finetune_final_loss", "full_finetune_i2t_R@1"}
    losses = findings.values_by_seed(committed["02_fine_tuning"])["full_finetune_final_loss"]
    assert all(moved["02"]["full_finetune_final_loss", seed] < 1e-6 * losses[seed] for seed in range(3))
    assert (
        len(moved["04"]) == 2 and moved_values(intel["04_random_init_ablation"], rerun["04_random_init_ablation"]) == {}
    )
    assert all(
        moved[stem[:2]] and moved_values(intel[stem], rerun[stem])
        for stem in rerun
        if stem[:2] in ("03", "05", "06", "08")
    )
    here, there = findings.verdicts(by_number(committed), "full"), findings.verdicts(by_number(rerun), "full")
    assert len(here) > 10 and {pair: there[pair] for pair in here} == here  # there adds 03's soft vote (ADDED_SINCE)


def test_06s_val_pick_in_the_records_is_what_the_reproducibility_log_says():
    """``results/REPRODUCIBILITY.md``, 2026-12-07: on the committed real records val keeps TIRG under seeds 0 and 1,
    where the test queries' own best is another compositor, and the test's best under seed 2; on the full profile of
    the AVX2 AMD host val keeps the test's own best under every seed."""

    def picks(record: dict) -> list[tuple[str, str]]:
        values = findings.values_by_seed(record)
        return [
            tuple(
                max(findings.LEARNED_COMPOSITORS, key=lambda name: values[f"{prefix}{name}/R@10"][seed])
                for prefix in ("val/", "")
            )
            for seed in (0, 1, 2)
        ]

    real = committed_real_record("06")
    (kept_0, best_0), (kept_1, best_1), (kept_2, best_2) = picks(real)
    assert kept_0 == kept_1 == "TIRG" and best_0 != kept_0 and best_1 != kept_1 and kept_2 == best_2
    values = findings.values_by_seed(real)
    assert all(values["picked_minus_sum_R@10"][s] <= values["best_minus_sum_R@10"][s] for s in (0, 1, 2))
    full = other_host_records(AVX2_AMD_FULL)[0]["06_composed_retrieval"]
    assert all(kept == best for kept, best in picks(full))


def test_a_later_intel_generation_gives_every_full_value_of_the_intel_host_with_the_same_extensions():
    """``results/REPRODUCIBILITY.md``, 2026-12-06: an Intel host of family 6 model 207 ran the full profile from a fresh
    install and an empty cache. Every value under every seed, timings aside, is the one the family 6 model 167 host
    recorded (same extensions, its records in ``other-hosts/``), but for 08's best on-disk recall, 1e-4 higher: the
    OpenBLAS inside faiss-cpu runs generic kernels on this processor (``course_utils.results.kernel_choices``). The
    committed 08, rerun later on this processor type with that OpenBLAS told to run its SkylakeX kernels, gives the
    model 167 host's values again, and its record names those kernels. 02-06 differ from the committed records,
    which an AMD host wrote, as the model 167 host's do."""
    later, committed = other_host_records(LATER_INTEL_FULL)
    earlier = other_host_records(INTEL_FULL)[0]
    assert sorted(later) == sorted(earlier)
    ((later_model, extensions),) = {processor_signature(record) for record in later.values()}
    assert later_model == "family 6 model 207"
    assert {processor_signature(record) for record in earlier.values()} == {("family 6 model 167", extensions)}
    assert processor_signature(committed["08_scaling_out"]) == (later_model, extensions)
    assert committed["08_scaling_out"]["environment"]["kernels"]["libopenblas 0.3.15"] == "SkylakeX"
    assert all(not later[stem]["environment"]["constraints"]["unmet"] for stem in later)
    assert all(later[stem]["seeds"]["seeds"] == [0, 1, 2] for stem in later if committed[stem].get("seeds"))
    ((moved_08, difference),) = moved_values(earlier["08_scaling_out"], later["08_scaling_out"]).items()
    assert moved_08 == ("ondisk_best_recall", 0) and difference == pytest.approx(1e-4)
    assert all(moved_values(earlier[stem], later[stem]) == {} for stem in earlier if stem != "08_scaling_out")
    assert moved_values(earlier["08_scaling_out"], committed["08_scaling_out"]) == {}
    moved_from_committed = [stem[:2] for stem in earlier if moved_values(committed[stem], later[stem])]
    assert moved_from_committed == ["02", "03", "04", "05", "06", "08"]


@pytest.mark.parametrize(
    ("later_host", "earlier_host", "other_maker"),
    [(LATER_AMD_REAL, AMD_REAL, INTEL_REAL), (LATER_INTEL_REAL, INTEL_REAL, AMD_REAL)],
)
def test_the_real_profile_gives_the_same_values_on_two_hosts_that_list_the_same_extensions(
    later_host, earlier_host, other_maker
):
    """``results/REPRODUCIBILITY.md``, 2026-12-06: the real profile's three seeds on a later generation of each maker
    (AMD family 26 model 2; Intel family 6 model 207) gave every value, timings aside, of the earlier generation's
    records that list the same extensions (AMD family 25 model 17: AVX-512 with bf16 and VNNI; Intel family 6 model
    167: the same and AMX), and not those of the committed records (family 25 model 1, AVX2 only) or of the other
    maker's."""
    later, committed = other_host_records(later_host)
    earlier, other = other_host_records(earlier_host)[0], other_host_records(other_maker)[0]
    assert sorted(later) == sorted(earlier) == sorted(other) and len(later) == 6

    def signatures(records: dict) -> set[tuple[str, str]]:
        return {processor_signature(record) for record in records.values()}

    ((later_model, later_extensions),) = signatures(later)
    ((earlier_model, earlier_extensions),) = signatures(earlier)
    ((_, other_extensions),) = signatures(other)
    assert later_model != earlier_model and later_extensions == earlier_extensions != other_extensions
    assert all("avx512f" not in extensions for _, extensions in signatures(committed))
    assert all(later[stem]["seeds"]["seeds"] == [0, 1, 2] for stem in later)
    assert all(moved_values(earlier[stem], later[stem]) == {} for stem in later)
    assert all(moved_values(committed[stem], later[stem]) != {} for stem in later)
    assert all(moved_values(other[stem], later[stem]) != {} for stem in later)


@pytest.mark.parametrize("host", sorted(path.name for path in findings.OTHER_HOSTS.iterdir() if path.is_dir()))
def test_each_other_hosts_findings_file_agrees_with_its_records(host):
    folder = findings.OTHER_HOSTS / host
    args = ["--profile", host.rsplit("-", 1)[1], "--records", str(folder), "--readme", str(folder / "FINDINGS.md")]
    assert findings.main([*args, "--check"]) == 0


def test_the_readmes_table_of_other_hosts_agrees_with_the_records():
    assert findings.main(["--hosts", "--check"]) == 0


FINE_TUNING_OVER_ZERO_SHOT = ("full_finetune_t2i_R@10", "zero_shot_t2i_R@10")
TWO_STAGE_OVER_FINE_TUNING = ("two_stage_t2i_R@10", "full_finetune_t2i_R@10")
PHOTO_LABELS_OVER_DUAL = ("photo_label_rerank/R@1", "dual/R@1")
SOFT_VOTE_OVER_HARD_GUESSES = ("photo_label_soft_rerank/R@1", "photo_label_rerank/R@1")


@pytest.mark.parametrize(
    ("host", "differing"),
    [
        (
            AMD_REAL,
            {
                FINE_TUNING_OVER_ZERO_SHOT: (True, False),
                TWO_STAGE_OVER_FINE_TUNING: (False, True),
                PHOTO_LABELS_OVER_DUAL: (True, False),
            },
        ),
        (
            INTEL_REAL,
            {
                FINE_TUNING_OVER_ZERO_SHOT: (True, False),
                PHOTO_LABELS_OVER_DUAL: (True, False),
                TIRGS_LOSS_OVER_SOFT_TRIPLET: (False, True),
            },
        ),
        (
            LATER_INTEL_REAL,
            {
                FINE_TUNING_OVER_ZERO_SHOT: (True, False),
                PHOTO_LABELS_OVER_DUAL: (True, False),
                SOFT_VOTE_OVER_HARD_GUESSES: (False, True),
                TIRGS_LOSS_OVER_SOFT_TRIPLET: (False, True),
            },
        ),
        (
            LATER_AMD_REAL,
            {
                FINE_TUNING_OVER_ZERO_SHOT: (True, False),
                TWO_STAGE_OVER_FINE_TUNING: (False, True),
                PHOTO_LABELS_OVER_DUAL: (True, False),
            },
        ),
    ],
)
def test_the_real_profiles_verdicts_that_differ_on_another_host_are_those_the_log_names(host, differing):
    """``results/REPRODUCIBILITY.md``: on each later AMD host's three seeds (family 25 model 17 and family 26 model 2,
    whose values are the same), 02's full fine-tuning over zero-shot and 03's labels guessed from the photos are not
    findings (they are on the committed records), 02's two-stage recipe below full fine-tuning is one (it is not on
    the committed records); on each Intel host's (family 6 models 167 and 207, whose values are the same), the first
    two are not findings either, and the third is not one, as on the committed records, while 06's TIRG trained with
    its classification loss over the soft triplet loss is one (it is not on the committed records: seed 1 there gives
    the soft triplet loss the edge); on family 6 model 207, the other host whose records hold 03's soft label vote,
    the soft vote over the hard guesses is a finding (it is not on the committed records, README › Real photos).
    Every other verdict is the same (a comparison that one side's records began to hold later aside:
    :data:`ADDED_SINCE`)."""
    another_host, committed = other_host_records(host)
    assert all(record["seeds"]["seeds"] == [0, 1, 2] for record in [*another_host.values(), *committed.values()])
    here = findings.verdicts(by_number(committed), "real")
    there = findings.verdicts(by_number(another_host), "real")
    assert len(here) > 3 and all(ADDED_SINCE.match(first) for first, _ in here.keys() ^ there.keys())  # added since
    both = here.keys() & there.keys()
    assert {pair: (here[pair], there[pair]) for pair in both if here[pair] != there[pair]} == differing


@pytest.mark.parametrize(
    "seed_values, verdict",
    [
        ([0.0, -0.1, -0.1], "lower under 2 of 3 seeds, equal under 1: not a finding"),
        ([0.1, 0.0, 0.2], "higher under 2 of 3 seeds, equal under 1: not a finding"),
        ([0.0, 0.0, 0.0], "equal under all 3 seeds: not a finding"),
        ([-0.1, 0.0, 0.2], "higher under 1 of 3 seeds: not a finding"),  # seeds going both ways decide it alone
        ([-0.1, -0.2, -0.3], "lower under all 3 seeds by more than the spread: a finding"),
    ],
)
def test_a_seed_with_no_difference_is_counted_as_equal_not_lower(seed_values, verdict):
    record = seeded_record("06_composed_retrieval", {"best_minus_sum_R@10": seed_values})
    assert findings.compare(record, "best_minus_sum_R@10").endswith(f", {verdict}")


@pytest.mark.parametrize(
    ("seed_values", "printed"),
    [([0.0001, 0.0002, 0.0003], "+0.000 ± 0.000"), ([0.0001, 0.0024, 0.0051], "+0.003 ± 0.003")],
)
def test_a_mean_above_its_spread_only_past_the_printed_digits_is_not_a_finding(seed_values, printed):
    """The verdict was drawn on unrounded numbers, so a sentence could read "+0.003 ± 0.003, ...: a finding"."""
    record = seeded_record("06_composed_retrieval", {"best_minus_sum_R@10": seed_values})
    assert findings.compare(record, "best_minus_sum_R@10") == (
        f"{printed}, higher under all 3 seeds but within the spread: not a finding"
    )


def test_a_metric_not_a_number_under_some_seed_is_refused_where_a_bullet_shows_it(tmp_path):
    """The first seed's value was shown alone, as if every seed had given it."""
    values = {"random_init_t2i_R@10": [0.01, 0.012, 0.011], "chance_t2i_R@10": [0.001] * 3}
    record = seeded_record("04_random_init_ablation", {**values, "normal_init_t2i_R@10": [0.02, 0.021, 0.022]})
    record["seeds"]["not_aggregated"] = ["normal_init_t2i_R@10"]  # NaN under seed 1
    for name in ("values", "mean", "std"):
        del record["seeds"][name]["normal_init_t2i_R@10"]
    with pytest.raises(SystemExit, match=r"normal_init_t2i_R@10 is missing or not a number .* no mean and spread"):
        findings.render_findings({"04": record}, "full", folder=tmp_path)
    numbers = findings.numbers(record)
    assert f"{numbers['random_init_t2i_R@10']:.3f}" == "0.011 ± 0.001"  # a metric every seed gave still renders


def test_a_metric_not_a_number_under_some_seed_is_named_not_a_key_error():
    record = seeded_record("03_cross_modal_attention", {"dual/R@1": [0.2, 0.21, 0.22]})
    record["metrics"]["rerank/R@1"] = 0.25  # NaN (written as null) under seed 1: not aggregated
    record["seeds"]["not_aggregated"] = ["rerank/R@1"]
    with pytest.raises(SystemExit, match=r"03_cross_modal_attention: rerank/R@1 is missing or not a number .*0, 1, 2"):
        findings.compare(record, "rerank/R@1", "dual/R@1")


def test_a_record_lacking_a_metric_its_bullet_needs_is_named_with_what_to_run(tmp_path):
    write_record(tmp_path, "04_random_init_ablation", {"random_init_t2i_R@10": 0.01}, profile="real")
    with pytest.raises(SystemExit, match=r"04_random_init_ablation.json lacks 'normal_init_t2i_R@10'.*make run-real"):
        findings.render_findings(findings.read_records(tmp_path, "real"), "real", folder=tmp_path)


def test_a_null_metric_its_bullet_formats_is_named_not_a_type_error(tmp_path):
    metrics = {"random_init_t2i_R@10": None, "normal_init_t2i_R@10": 0.01, "chance_t2i_R@10": 0.01}
    write_record(tmp_path, "04_random_init_ablation", metrics, profile="real")
    with pytest.raises(SystemExit, match=r"04_random_init_ablation.json: .*\['random_init_t2i_R@10'\] are null"):
        findings.render_findings(findings.read_records(tmp_path, "real"), "real", folder=tmp_path)


def test_messages_name_the_real_profiles_make_targets_and_the_damaged_record(tmp_path):
    with pytest.raises(SystemExit, match="run `make run-real` then `make records-real`"):
        findings.read_records(tmp_path, "real")
    write_record(tmp_path, "01_baseline_clip", {}, profile="full")
    with pytest.raises(SystemExit, match="expected 'real'; rerun `make run-real` then `make records-real`"):
        findings.read_records(tmp_path, "real")
    (tmp_path / "02_fine_tuning.json").write_text('{"notebook": "02_fi')
    with pytest.raises(
        SystemExit, match=r"02_fine_tuning.json is .*not a readable record .*`make run` then `make records`"
    ):
        findings.read_records(tmp_path)


def test_a_missing_readme_or_one_without_the_markers_is_named(tmp_path):
    write_record(tmp_path, "05_conditional_embeddings", {"map/global_clip/overall": 0.5})
    findings_file = tmp_path / "FINDINGS.md"
    args = ["--records", str(tmp_path), "--readme", str(findings_file)]
    with pytest.raises(SystemExit, match=r"FINDINGS.md: no such file to render the section into"):
        findings.main(args)
    findings_file.write_text("# findings, markers forgotten\n")
    with pytest.raises(
        SystemExit, match=r"FINDINGS.md has no <!-- findings:start --> \.\.\. <!-- findings:end --> lines"
    ):
        findings.main(args)


def test_the_hosts_table_counts_the_values_that_moved_and_names_each_verdict_that_changed(tmp_path, monkeypatch):
    amd = {"cpu": "AMD EPYC", "cpu_signature": "family 25 model 17 stepping 1; avx avx2 fma avx512f"}
    intel = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_signature": "family 6 model 167 stepping 1; avx avx2 avx512f"}
    committed, rerun = tmp_path / "committed", tmp_path / "other-hosts" / "intel-family6-model167-full"
    for folder, environment, stage1, latency in [
        (committed, amd, [0.45, 0.46, 0.44], 3.0),  # stage 1 over global CLIP: a finding
        (rerun, intel, [0.45, 0.39, 0.44], 4.0),  # seed 1 now below global CLIP: not a finding
    ]:
        folder.mkdir(parents=True)
        conditional = seeded_record(
            "05_conditional_embeddings",
            {
                "map/global_clip/overall": [0.38, 0.40, 0.39],
                "map/crl_stage1/overall": stage1,
                "map/crl_stage2/overall": [0.46, 0.45, 0.45],  # stage 2 over stage 1: no finding either way
            },
        )
        demo = {
            "notebook": "07_retrieval_demo",
            "parameters": {"profile": "full", "seed": 0},
            "metrics": {"gallery_size": 100, "median_ms_text": latency},  # a timing: left out of the comparison
        }
        for record in (conditional, demo):
            (folder / f"{record['notebook']}.json").write_text(json.dumps({**record, "environment": environment}))
    monkeypatch.setitem(findings.SECTIONS, "full", (committed, findings.START, findings.END))
    monkeypatch.delitem(findings.SECTIONS, "real")
    table = findings.render_hosts(tmp_path / "other-hosts").splitlines()[2:]
    assert table[2].split(" | ")[2:] == [
        "AMD EPYC, family 25 model 17, avx512f",
        "0, 1, 2 (07: 0)",
        "(the committed records)",
        "2 comparisons, 1 of them findings |",
    ]
    assert table[3].split(" | ")[2:] == [
        "Intel(R) Xeon(R) Processor, family 6 model 167, avx512f",
        "0, 1, 2 (07: 0)",
        "07: none; 05: 1 of 9. Largest move of a recall or mAP: 05's `map/crl_stage1/overall` under seed 1, "
        "0.460 → 0.390",
        "1 of 2 the same; `map/crl_stage1/overall` over `map/global_clip/overall` (not a finding here, one on the "
        "committed records) |",
    ]


def test_verdicts_are_noted_only_while_verdicts_renders():
    record = seeded_record("06_composed_retrieval", {"best_minus_sum_R@10": [0.1, 0.2, 0.3]})
    assert findings.compare(record, "best_minus_sum_R@10").endswith(": a finding")  # outside verdicts(): no note
    assert findings._verdicts_drawn.get() is None


def mean_difference(record: dict, higher: str, lower: str | None) -> float:
    """``higher - lower`` (or ``higher``) averaged over the record's seeds."""
    values = findings.values_by_seed(record)
    return statistics.fmean(value - (values[lower][seed] if lower else 0.0) for seed, value in values[higher].items())


@pytest.mark.parametrize("profile", sorted(findings.SECTIONS))
def test_every_verdict_that_differs_between_hosts_rests_on_a_smaller_difference_than_every_lasting_finding(profile):
    """README › Reproducibility: the verdicts that differ between hosts are among the smallest differences. Each
    comparison whose verdict differs on some host differs by less, on the committed records' mean over seeds, than
    every comparison that is a finding on the committed records and on every host."""
    committed = findings.read_records(findings.SECTIONS[profile][0], profile)
    reference = findings.verdicts(committed, profile)
    others = sorted(findings.OTHER_HOSTS.glob(f"*-{profile}"))
    assert others, f"no rerun of the {profile} profile in {findings.OTHER_HOSTS}"
    hosts = [findings.verdicts(findings.read_records(other, profile), profile) for other in others]
    differing = {pair for drawn in hosts for pair in drawn.keys() & reference.keys() if drawn[pair] != reference[pair]}
    lasting = {pair for pair, finding in reference.items() if finding and all(drawn.get(pair) for drawn in hosts)}
    size = {
        pair: abs(mean_difference(record, *pair))
        for number, record in committed.items()
        for pair in findings.verdicts({number: record}, profile)
    }
    assert lasting and all(size[pair] < min(size[p] for p in lasting) for pair in differing), (differing, lasting)


def test_records_of_more_than_one_processor_say_which_notebook_ran_where():
    amd = {"environment": {"cpu": "AMD EPYC", "cpu_signature": "family 25 model 17 stepping 1; avx2 avx512f"}}
    intel = {"environment": {"cpu": "Intel(R) Xeon(R) Processor", "cpu_signature": "family 6 model 167; avx512f"}}
    assert findings.processors_by_notebook({"01": amd, "02": amd}) == ""
    assert findings.processors_by_notebook({"01": amd, "02": amd, "08": intel, "03": {}}) == (
        "01, 02: AMD EPYC, family 25 model 17, avx512f; 03: processor not recorded; "
        "08: Intel(R) Xeon(R) Processor, family 6 model 167, avx512f"
    )


@pytest.mark.parametrize("host", [LATER_INTEL_FULL, LATER_INTEL_REAL])
def test_the_soft_label_vote_beats_the_hard_guesses_yet_not_the_catalogue_labels(host):
    """README › Real photos, 2026-12-06: on the family 6 model 207 host's records, whose 03 was rerun to add the row,
    re-ranking with the photos' label vote kept soft beats its hard guesses and the dual encoder under every seed,
    on the drawings and on the photos, yet stays below the catalogue's labels; on the photos below issue 14's +20 %.
    The comparison is cut short: the hard guesses' dual weight is the grid's largest under every seed."""
    record = other_host_records(host)[0]["03_cross_modal_attention"]
    values = record["seeds"]["values"]
    assert set(values["photo_label_rerank/dual_weight"]) == {max(record["parameters"]["dual_weights"])}
    soft, hard = values["photo_label_soft_rerank/R@1"], values["photo_label_rerank/R@1"]
    assert all(s > h for s, h in zip(soft, hard)) and all(s > d for s, d in zip(soft, values["dual/R@1"]))
    assert all(s < c for s, c in zip(soft, values["label_rerank/R@1"]))
    if host == LATER_INTEL_REAL:
        assert max(values["photo_label_soft_rerank/R@1_relative_gain"]) < 0.20


def test_complex_rotation_scores_higher_with_composeaes_loss_on_every_hosts_records():
    """README › Real photos: ComplexRotation trained with ComposeAE's classification loss beats it trained with seed
    004's soft triplet loss (its main recipe) under every seed by more than the spread, on the committed records and
    on every other host's, full and real profiles alike."""
    swap = COMPLEX_ROTATIONS_LOSS_OVER_SOFT_TRIPLET
    folders = [REPO_ROOT / "results" / profile for profile in ("full", "real")]
    folders += sorted(path for path in findings.OTHER_HOSTS.iterdir() if path.is_dir())
    assert len(folders) == 10
    for folder in folders:
        profile = folder.name.rsplit("-", 1)[-1]  # "full", "real", or a host's folder ending in its profile
        assert findings.verdicts({"06": findings.read_records(folder, profile)["06"]}, profile)[swap], folder.name


def test_on_the_committed_real_records_the_sum_fed_only_the_new_colour_closes_most_of_the_gap_yet_stays_behind():
    """README › Real photos, 2026-12-07: on the photos the sum fed only the new colour ("black" of "replace blue with
    black") closes most of the gap between the sum and the learned compositor kept under every seed, and the kept one
    still beats it under every seed by more than the spread."""
    record = committed_real_record("06")
    values = record["seeds"]["values"]
    closed = [new - old for new, old in zip(values["sum, new value only/R@10"], values["sum/R@10"])]
    assert all(part > gap / 2 for part, gap in zip(closed, values["picked_minus_sum_R@10"]))
    assert findings.verdicts({"06": record}, "real")["picked_minus_sum_new_value_only_R@10", None] is True


def test_on_the_committed_real_records_the_soft_label_vote_neither_leads_nor_trails_the_hard_guesses():
    """README › Real photos, 2026-12-07: the committed real records, whose 03 was rerun on their processor to add the
    row, have the soft vote tie the hard guesses under one seed, beat them under another and lose under the third,
    below issue 14's +20 % under every seed; val picked the grid's largest dual weight (3) for the hard guesses under
    every seed."""
    record = committed_real_record("03")
    values = record["seeds"]["values"]
    assert max(record["parameters"]["dual_weights"]) == 3.0 and set(values["photo_label_rerank/dual_weight"]) == {3.0}
    soft, hard = values["photo_label_soft_rerank/R@1"], values["photo_label_rerank/R@1"]
    assert sorted((s > h) - (s < h) for s, h in zip(soft, hard)) == [-1, 0, 1]
    assert max(values["photo_label_soft_rerank/R@1_relative_gain"]) < 0.20
    assert findings.verdicts({"03": record}, "real")["photo_label_soft_rerank/R@1", "photo_label_rerank/R@1"] is False
