"""The README's classroom benchmark section is rendered from the committed runs (``bench_classroom.py --readme``)."""

import json
import statistics
from types import SimpleNamespace

import pytest

from course_utils import bench_records
from course_utils.classroom import ServerCounters
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
            "queries": "one per viewer",
            "server_cpus": "all",
            "browser_cpus": "all",
            "browser_nice": 0,
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


def test_the_intro_gives_the_set_up_once_where_every_run_agrees_and_run_by_run_where_they_differ(bench):
    runs = [run(bench, "course", "2026-12-02 10:00", 1.25), run(bench, "course", "2026-12-02 10:10", 0.5)]
    assert (
        "2 runs of the classroom server and 0 with `--server precomputed`, one after another, all with `--pages 4`, "
        "ci profile, 4 query threads, one different query per viewer, x86_64, 2 cores, 24 GiB, processor not "
        "recorded, load average" in bench.readme_section(runs)
    )
    runs[0]["conditions"] |= {"queries": "navy floral dress", "server_cpus": [0], "workers": 2}  # the first run's
    text = bench.readme_section(runs)
    assert (
        "set up run by run, oldest first: 2026-12-02 10:00 UTC `--pages 4`, ci profile, 2 query threads, every viewer "
        "querying 'navy floral dress', server on cores [0], x86_64, 2 cores, 24 GiB; 2026-12-02 10:10 UTC `--pages 4`, "
        "ci profile, 4 query threads, one different query per viewer, x86_64, 2 cores, 24 GiB; processor not "
        "recorded, load average" in text
    )
    assert "warm caches" not in text  # no record says so


def test_the_times_are_the_served_viewers_and_a_failed_viewers_are_left_out(bench):
    served = [bench.PageResult(i, ready_s=1.0, results_s=0.5) for i in range(3)]
    failed = bench.PageResult(3, ready_s=9.0, results_s=7.0, failure="4 of 8 result thumbnails decoded")
    summary = bench.summarise([*served, failed])
    assert (summary["served"], summary["failures"]) == (3, 1)
    assert summary["ready_s"]["max"] == 1.0 and summary["results_s"]["max"] == 0.5


def test_the_first_enter_is_timed_from_the_moment_the_last_page_was_ready(bench):
    """'spread': the viewer ready last (at 6 s) pressed Enter at 9 s, but one ready at 1 s pressed at 8 s, 7 s after
    its own page: the first Enter came 2 s after the last page was ready, while the shortest own wait was 3 s."""
    pages = [
        bench.PageResult(0, opened_s=0.0, ready_wall_s=1.0, waited_s=7.0, results_s=0.1),
        bench.PageResult(1, opened_s=0.5, ready_wall_s=5.5, waited_s=3.0, results_s=0.1),
        bench.PageResult(2, opened_s=1.0, failure="timed out"),  # never ready: neither the last ready nor an Enter
    ]
    summary = bench.summarise(pages)
    assert summary["first_enter_after_last_ready_s"] == 2.0
    assert bench.starting_line(summary) == " (first Enter 2.0 s after the last page was ready)"
    assert bench.starting_line(bench.summarise([bench.PageResult(0, opened_s=0.0, ready_wall_s=1.0)])) == ""
    kept_before = {key: value for key, value in summary.items() if key != "first_enter_after_last_ready_s"}
    assert bench.starting_line(kept_before) == " (shortest wait from a viewer's ready page to its Enter: 3.0 s)"


def test_the_server_answer_times_are_the_phases_own_when_some_viewers_never_pressed_enter(bench, monkeypatch):
    """The server kept 4 answers of an earlier phase; in this one 2 of 4 viewers pressed Enter: only those 2 count
    (the window of the last 4, as many as the phase's viewers, took two of the earlier phase's)."""
    counters = ServerCounters()

    def answer(seconds: float) -> None:  # what the server does for each text query it answers
        counters.seconds["text"].append(seconds)
        counters.answered += 1

    monkeypatch.setattr(bench, "wait_until_served", lambda url, last=None: counters.report(last))
    for _ in range(4):
        answer(9.0)
    monitor = SimpleNamespace(stop=dict)  # no memory sampled
    server = bench.ServerPhase("http://127.0.0.1:1/", None)
    answer(0.25)
    answer(0.5)
    assert server.measured([], monitor)["server_seconds"]["max"] == 0.5
    assert server.measured([], monitor)["server_seconds"]["count"] == 2
    assert bench.ServerPhase("http://127.0.0.1:1/", None).measured([], monitor)["server_seconds"] is None  # none


def test_server_cpus_with_a_running_server_is_refused_naming_both_options(bench, monkeypatch, capsys):
    """It pins only a server the script starts: with --url the record would have said pinned, and it was not."""
    monkeypatch.setattr(bench, "wait_for_server", lambda *a: pytest.fail("ran against --url with --server-cpus"))
    with pytest.raises(SystemExit):
        bench.main(["--url", "http://127.0.0.1:8866/", "--server-cpus", "0"])
    error = capsys.readouterr().err
    assert "--server-cpus" in error and "--url" in error and "starts none" in error
