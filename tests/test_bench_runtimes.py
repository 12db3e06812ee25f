"""README › Profiles' runtimes are rendered from the committed runs of ``bench_runtimes.py --readme``."""

import json

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_runtimes")


def record(
    profile: str,
    fresh_s: list[float],
    cached_s: list[float],
    date: str = "2026-12-02 10:00",
    differing=("01_baseline_clip.runtime_s",),
    fresh_wall: float = 450.0,
    status: int = 0,
) -> dict:
    stems = ["01_baseline_clip", "02_fine_tuning"]
    return {
        "profile": profile,
        "conditions": {
            "date_utc": date,
            "commit": "abc1234",
            "machine": "x86_64, 2 cores, 24 GiB",
            "torch_threads": 2,
            "load_average_before_after": [0.3, 1.9],
        },
        "runs": [
            {"cache": "fresh", "exit_status": status, "wall_s": fresh_wall, "notebooks": dict(zip(stems, fresh_s))},
            {"cache": "cached", "exit_status": 0, "wall_s": 100.0, "notebooks": dict(zip(stems, cached_s))},
        ],
        "differing_metrics": list(differing),
        "metrics_compared": 40,
    }


def test_the_table_has_a_column_per_profile_and_cache_and_the_totals(bench):
    text = bench.readme_section(
        [record("full", [170.4, 232.0], [21.0, 24.0]), record("ci", [181.0, 65.0], [20.0, 9.6])]
    )
    lines = text.splitlines()
    assert "| notebook | ci, fresh | ci, cached | full, fresh | full, cached |" in lines  # ci first, as the budgets
    assert "| 01_baseline_clip | 181 s | 20 s | 170 s | 21 s |" in lines
    assert (
        "| **total (runner)** | **246 s (4.1 min)** | **30 s (0.5 min)** | **402 s (6.7 min)** "
        "| **45 s (0.8 min)** |" in lines
    )
    assert "| wall time of the command | 450 s | 100 s | 450 s | 100 s |" in lines
    assert "`ci` ≤ 8 min from an empty cache: 7.5 min, held;" in text
    assert "`full`: 40 metrics, 1 timings differ, other metrics that differ: none" in text


def test_the_last_record_of_each_profile_is_shown_and_a_failed_or_slow_run_does_not_hold(bench):
    older = record("ci", [1.0, 1.0], [1.0, 1.0], date="2026-12-01 10:00")
    newer = record("ci", [400.0, 200.0], [20.0, 9.6], date="2026-12-02 10:00", fresh_wall=600.0, differing=())
    text = bench.readme_section([older, newer])
    assert "| 01_baseline_clip | 400 s |" in text and "| 01_baseline_clip | 1 s |" not in text
    assert (
        "10.0 min, not held" in text and "`ci`: 40 metrics, 0 timings differ, other metrics that differ: none" in text
    )
    # the earlier run keeps its verdict, with its date and processor
    assert "10.0 min, not held (earlier kept runs: 7.5 min on 2026-12-01 (processor not recorded, held))" in text
    failed = bench.readme_section([record("ci", [181.0], [20.0], status=1)])
    assert "450 s (exit 1)" in failed and "not held" in failed


def test_a_differing_metric_that_is_no_timing_is_named(bench):
    text = bench.readme_section(
        [
            record(
                "ci",
                [1.0, 1.0],
                [1.0, 1.0],
                differing=(
                    "03_cross_modal_attention.latency_ms/dual",
                    "07_retrieval_demo.median_ms_text",
                    "08_scaling_out.embed_single_s",
                    "08_scaling_out.train_images_per_s_1proc",
                    "03_cross_modal_attention.train_seconds/itm",
                    "03_cross_modal_attention.rerank/R@1",
                ),
            )
        ]
    )
    assert "5 timings differ, other metrics that differ: `03_cross_modal_attention.rerank/R@1`" in text


def test_differing_metrics_names_changed_and_missing_metrics_and_nan_equals_nan(bench):
    fresh = {"01": {"r1": 0.5, "latency": 3.0, "gone": 1.0, "undefined": float("nan")}, "02": {"r1": 0.2}}
    cached = {"01": {"r1": 0.5, "latency": 2.5, "undefined": float("nan")}, "02": {"r1": 0.2}, "03": {"x": 1}}
    assert bench.differing_metrics(fresh, cached) == ["01.gone", "01.latency", "03.x"]


def test_caches_must_start_with_the_fresh_run(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--caches", "cached,fresh", "--work-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.main(["--caches", "warm", "--work-dir", str(tmp_path)])


def test_no_record_is_a_clear_error(bench, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{bench.README_MARKERS[0]}\n{bench.README_MARKERS[1]}\n")
    with pytest.raises(SystemExit, match="bench_runtimes.py with --json"):
        bench.write_readme(check=True, readme=readme, folder=tmp_path)


def test_the_check_mends_a_stale_section(bench, tmp_path):
    (tmp_path / "ci.json").write_text(json.dumps(record("ci", [181.0, 65.0], [20.0, 9.6])))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.README_MARKERS[0]}\ntyped by hand: 441 s\n{bench.README_MARKERS[1]}\nend\n")
    assert bench.write_readme(check=True, readme=readme, folder=tmp_path) == 1
    assert bench.write_readme(check=False, readme=readme, folder=tmp_path) == 0
    assert bench.write_readme(check=True, readme=readme, folder=tmp_path) == 0
    assert "typed by hand" not in readme.read_text() and "| 02_fine_tuning | 65 s | 10 s |" in readme.read_text()


def test_each_profile_names_its_processor(bench):
    ci = record("ci", [181.0, 65.0], [20.0, 9.6], date="2026-12-05 02:37")
    ci["conditions"]["cpu_signature"] = "family 25 model 17 stepping 1; avx avx2 avx512f"
    text = bench.readme_section([record("full", [170.4, 232.0], [21.0, 24.0]), ci])
    assert "ci: 2026-12-05 02:37 UTC, family 25 model 17, avx512f, commit abc1234" in text
    assert "full: 2026-12-02 10:00 UTC, processor not recorded, commit abc1234" in text


def test_the_work_dir_is_emptied_only_when_new_empty_or_an_earlier_runs(bench, tmp_path, monkeypatch):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("a user's file")
    monkeypatch.setattr(bench, "run_profile", lambda *a: pytest.fail("ran in a folder of someone else's files"))
    with pytest.raises(SystemExit, match=r"--work-dir .*home holds files this benchmark did not write"):
        bench.main(["--work-dir", str(tmp_path / "home")])
    assert (tmp_path / "home" / "thesis.tex").read_text() == "a user's file"

    def look_then_stop(profile, work, cache):
        raise KeyboardInterrupt(sorted(p.name for p in work.iterdir()))

    monkeypatch.setattr(bench, "run_profile", look_then_stop)
    for _ in range(2):  # a new folder, then the same folder again: an earlier run's, emptied and marked again
        with pytest.raises(KeyboardInterrupt) as stopped:
            bench.main(["--work-dir", str(tmp_path / "runs")])
        assert stopped.value.args[0] == [".bench_runtimes"]
        (tmp_path / "runs" / "cache").mkdir()


def test_a_cached_run_alone_needs_the_cache_a_fresh_run_filled(bench, tmp_path, monkeypatch, capsys):
    """Without it the "cached" run would start from an empty cache, and its record would say cached."""
    monkeypatch.setattr(bench, "run_profile", lambda *a: pytest.fail("timed an empty cache as the cached run"))
    (tmp_path / "emptied" / "cache").mkdir(parents=True)  # a work folder whose cache holds nothing
    for work in (tmp_path / "new", tmp_path / "emptied"):
        with pytest.raises(SystemExit):
            bench.main(["--caches", "cached", "--work-dir", str(work)])
        assert f"--caches cached reuses {work / 'cache'}, which is missing or empty" in capsys.readouterr().err


def test_a_run_empties_its_outputs_folder_only_when_it_is_the_benchmarks(bench, tmp_path, monkeypatch):
    work = tmp_path / "runs"
    (work / "cached").mkdir(parents=True)
    (work / "cached" / "thesis.tex").write_text("a user's file")
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("ran over someone else's files"))
    with pytest.raises(SystemExit, match=r"--work-dir .*cached holds files this benchmark did not write"):
        bench.run_profile("ci", work, "cached")
    assert (work / "cached" / "thesis.tex").read_text() == "a user's file"


def test_the_machine_and_threads_are_given_once_only_where_every_profile_agrees(bench):
    full, ci = record("full", [170.4, 232.0], [21.0, 24.0]), record("ci", [181.0, 65.0], [20.0, 9.6])
    assert "`benchmarks/bench_runtimes.py` (x86_64, 2 cores, 24 GiB, torch on 2 threads; ci: 2026-12-02" in (
        bench.readme_section([full, ci])
    )
    full["conditions"] |= {"machine": "x86_64, 4 cores, 32 GiB", "torch_threads": 4}  # the last profile shown
    text = bench.readme_section([full, ci])
    assert "(ci: x86_64, 2 cores, 24 GiB, torch on 2 threads, 2026-12-02 10:00 UTC," in text
    assert "; full: x86_64, 4 cores, 32 GiB, torch on 4 threads, 2026-12-02 10:00 UTC," in text
