"""The README's classroom benchmark section is rendered from the committed runs (``bench_classroom.py --readme``)."""

import json
import statistics

import pytest

from course_utils import bench_records
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_classroom")


def phase(bench, key: str, ready_s: float, results_s: float, failures: int = 0) -> dict:
    """A recorded phase of 4 viewers (``key`` in ``bench.PHASES``), the last ``failures`` of them failed."""
    pages = [bench.PageResult(i, ready_s=ready_s, results_s=results_s, waited_s=0.5) for i in range(4 - failures)]
    pages += [bench.PageResult(4 - failures + i, failure="timed out") for i in range(failures)]
    http = key.startswith("http")
    return {
        "mode": bench.HTTP_MODES[key == "http-again"] if http else f"Chromium, {key}",
        **({} if http else {"when": key}),
        "cpu_s": 0.2,
        "server_seconds": None,
        "memory": {
            "server_rss": 2**30,
            **({} if http else {"browser_rss": 3 * 2**30, "browser_pss": 2**30, "browser_processes": 9}),
        },
        "summary": bench.summarise(pages),
    }


def run(bench, server: str, date: str, settled_s: float, failures: int = 0, signature: str | None = None) -> dict:
    """One recorded run: every phase answers in 0.2 s but the all-at-once-once-idle one (``settled_s``), on the
    processor ``signature`` (a record kept before runs named it has none)."""
    return {
        "conditions": {
            **({"cpu_signature": signature} if signature else {}),
            "date_utc": date,
            "server": server,
            "profile": "ci",
            "workers": 4,
            "machine": "x86_64, 2 cores, 24 GiB",
            "load_average_before_after": [0.5, 9.0],
            "commit": "abc1234",
        },
        "phases": [
            phase(bench, key, 3.0, settled_s if key == "all-settled" else 0.2, failures if key == "spread" else 0)
            for key in bench.PHASES
        ],
    }


def test_the_section_renders_each_run_and_the_goals_from_the_records(bench):
    runs = [
        run(bench, "course", "2026-12-02 10:00", 1.25),
        run(bench, "precomputed", "2026-12-02 10:05", 0.75),
        run(bench, "course", "2026-12-02 10:10", 0.5, failures=1),
    ]
    text = bench.readme_section(runs)
    assert "**Measured 2026-12-02 10:00 to 2026-12-02 10:10 UTC**: 2 runs" in text and "1 with `--server" in text
    table = [line for line in text.splitlines() if line.startswith("| 4, ")]
    assert len(table) == len(bench.PHASES) + 1  # the last course run's phases, then the precomputed row
    assert "against `--server precomputed` of 10:05 UTC" in table[-1] and "0.75 / 0.75 / 0.75" in table[-1]
    assert "| 3 | 1 |" in table[len(bench.PHASES) - 1]  # the last run's spread phase: 3 served, 1 failed
    assert f"{bench.PHASES['all-settled']} 1.25, 0.50 s" in text  # each run's p95, oldest first
    assert f"With `--server precomputed`, {bench.PHASES['all-settled']}: 0.75 s." in text
    assert "no failure in 1 of 2 runs" in text
    assert f"{bench.PHASES['all-settled']} in 1 of 2 runs" in text and f"{bench.PHASES['ready']} in 2 of 2" in text


def test_runs_on_another_host_get_a_part_of_their_own(bench):
    later = "family 25 model 17 stepping 1; avx avx2 fma avx512f"
    runs = [
        run(bench, "course", "2026-12-02 10:00", 1.25),
        run(bench, "precomputed", "2026-12-02 10:05", 0.75),
        run(bench, "course", "2026-12-05 01:00", 0.5, signature=later),
        run(bench, "course", "2026-12-05 01:05", 0.25, signature=later),
    ]
    first, second = bench.readme_section(runs).split("**Measured ")[1:]
    assert first.startswith("2026-12-02 10:00 to 2026-12-02 10:05 UTC**: 1 run of") and "1 with `--server" in first
    assert "over the 1 run of the classroom server" in first and "in 0 of 1 run;" in first
    assert "24 GiB, processor not recorded, load average" in first
    assert f"{bench.PHASES['all-settled']} 1.25 s" in first and f"{bench.PHASES['all-settled']} in 0 of 1" in first
    assert second.startswith("2026-12-05 01:00 to 2026-12-05 01:05 UTC**: 2 runs") and "0 with `--server" in second
    assert "24 GiB, family 25 model 17, avx512f, load average" in second
    settled = bench.PHASES["all-settled"]
    assert f"{settled} 0.50, 0.25 s" in second and f"{settled} in 2 of 2" in second


def test_the_section_needs_a_run_of_the_classroom_server(bench):
    with pytest.raises(SystemExit, match="no run of the classroom server"):
        bench.readme_section([run(bench, "precomputed", "2026-12-02 10:05", 0.75)])


def test_check_reports_a_stale_section_and_rendering_mends_it(bench, tmp_path):
    records = tmp_path / "runs"
    records.mkdir()
    (records / "a.json").write_text(json.dumps(run(bench, "course", "2026-12-02 10:00", 1.25)))
    readme = tmp_path / "README.md"
    start, end = bench.README_MARKERS
    readme.write_text(f"# course\n{start}\ntyped by hand: 0.9 s\n{end}\nmore\n")
    assert bench.write_readme(True, readme, records) == 1
    assert bench.write_readme(False, readme, records) == 0
    assert bench.write_readme(True, readme, records) == 0
    assert "typed by hand" not in readme.read_text() and readme.read_text().endswith(f"{end}\nmore\n")


def test_no_records_is_a_clear_error(bench, tmp_path):
    with pytest.raises(SystemExit, match="no records in .*run bench_classroom.py with --json"):
        bench.write_readme(True, tmp_path / "README.md", tmp_path)


def test_the_committed_runs_say_what_the_readme_says_of_the_three_hosts(bench):
    """README › Serving a classroom, below the rendered part: the runs fall into three parts, one per host. On the
    later AMD host the pages were ready sooner than on the earlier (the median over runs of each Chromium phase's
    page-ready p95), and on both the text query meets the goal at human speed in every run, sits around it when all
    press Enter at once with the browser idle (met in some runs, not in others), and is mostly above it while pages
    load or browsers are busy. On the Intel host it meets the goal at human speed and all at once with the browser
    idle in every run, and is above it in every run while pages load or browsers are busy."""
    runs = bench_records.read_kept_runs(bench.RECORDS, "bench_classroom.py")
    hosts = bench.runs_by_host([run for run in runs if run["conditions"]["server"] == "course"])
    # kept before runs named their processor, then the later AMD generation, then an Intel processor
    assert list(hosts) == ["", "family 25 model 17, avx512f", "family 6 model 167, avx512f"]
    earlier, later, intel = hosts.values()
    for key in ("ready", "all-ready", "all-settled", "spread"):
        ready = [statistics.median(bench._p95s(runs, key, "ready_s")) for runs in (earlier, later)]
        assert ready[1] < ready[0], key

    def met(runs: list[dict], *keys: str) -> list[bool]:
        return [p95 <= bench.GOAL_QUERY_S for key in keys for p95 in bench._p95s(runs, key)]

    for runs in (earlier, later):
        assert all(met(runs, "spread"))
        settled = met(runs, "all-settled")
        assert any(settled) and not all(settled)
        busy = met(runs, "ready", "all-ready")
        assert sum(busy) < len(busy) / 2
    assert all(met(intel, "spread")) and all(met(intel, "all-settled")) and not any(met(intel, "ready", "all-ready"))
