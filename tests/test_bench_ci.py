"""README › Tests and CI's measured part is rendered from the committed CI runs (``bench_ci.py --readme``)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from course_utils.bench_records import read_kept_runs
from tests.conftest import load_benchmark

LOG = """install_browser: Chromium already installed
........................................................................ [ 99%]
============================= slowest 10 durations =============================
513.45s call     tests/test_notebooks.py::test_the_real_profile_runs
361.63s setup    tests/test_notebooks.py::test_every_notebook_runs_in_the_ci_profile
194.00s call     tests/test_browser.py::test_text_query_shows_result_images
17.39s teardown tests/test_browser.py::test_uploads
1 failed, 669 passed, 3 skipped, 2 warnings in 1303.27s (0:21:43)
"""


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_ci")


def test_pytest_outcome_reads_counts_time_and_the_slowest(bench):
    outcome = bench.pytest_outcome(LOG)
    assert outcome["counts"] == {"failed": 1, "passed": 669, "skipped": 3, "warnings": 2}
    assert outcome["seconds"] == 1303.27
    assert [entry["when"] for entry in outcome["slowest"]] == ["call", "setup", "call", "teardown"]
    assert outcome["slowest"][1] == {
        "seconds": 361.63,
        "when": "setup",
        "test": "tests/test_notebooks.py::test_every_notebook_runs_in_the_ci_profile",
    }


def test_a_run_that_did_not_finish_has_no_time(bench):
    assert bench.pytest_outcome("....\nKilled\n") == {"counts": {}, "seconds": None, "slowest": []}


def test_the_section_lists_each_run_and_the_last_against_the_budget(bench):
    runs = [
        {
            "conditions": {
                "date_utc": date,
                "commit": commit,
                "machine": "x86_64, 2 cores, 24 GiB",
                "load_average_before_after": [0.4, 3.0],
            },
            "exit_status": 0,
            "wall_s": wall_s,
            "pytest": bench.pytest_outcome(LOG),
        }
        for date, commit, wall_s in [("2026-12-02 10:00", "abc1234", 1500.0), ("2026-12-02 11:00", "def5678", 1620.4)]
    ]
    text = bench.readme_section(runs)
    rows = [line for line in text.splitlines() if line.startswith("| 2026")]
    assert len(rows) == 2 and "abc1234" in rows[0] and "def5678" in rows[1]
    assert "| 1 failed, 669 passed, 3 skipped (exit 0) | 21 min 43 s | 27 min 0 s | – |" in rows[1]
    assert "| – | 0.4 | – | 1 failed" in rows[1]  # records from before the CPU, steal and CPU time were kept
    assert "`test_the_real_profile_runs` 513 s" in rows[1] and "test_uploads" not in rows[1]  # the slowest three
    assert "The last run took 90 % of the 30-minute budget for the whole command; the slowest of the last 2" in text
    assert "kept runs (2026-12-02 11:00, processor not recorded) took 90 %." in text
    runs[0]["wall_s"] = 1900.0  # an older run over the budget is named, not hidden behind the last
    assert "the slowest of the last 2 kept runs (2026-12-02 10:00, processor not recorded) took 106 %." in (
        bench.readme_section(runs)
    )


def test_the_budget_line_sets_each_processors_last_run_against_it_slowest_first(bench):
    def run(date: str, signature: str | None, wall_s: float) -> dict:
        conditions = {"date_utc": date, "commit": "abc1234", "machine": "x86_64", "load_average_before_after": [0, 0]}
        if signature:
            conditions["cpu_signature"] = signature
        return {"conditions": conditions, "exit_status": 0, "wall_s": wall_s, "pytest": bench.pytest_outcome(LOG)}

    fast, slow = "family 6 model 207 stepping 2; avx avx2 fma avx512f", "family 23 model 1 stepping 2; avx avx2 fma"
    runs = [
        run("2026-12-01 10:00", None, 900.0),  # no processor recorded: not a processor of its own
        run("2026-12-01 11:00", fast, 1500.0),  # an older run on a processor that ran again: the later one counts
        run("2026-12-01 12:00", slow, 2700.0),
        run("2026-12-01 13:00", fast, 1080.0),
    ]
    assert bench.readme_section(runs).endswith(
        " The last run on each processor, slowest first: family 23 model 1, avx2 (2026-12-01 12:00, 1 failed, 669 "
        "passed, 3 skipped): 150 %; family 6 model 207, avx512f (2026-12-01 13:00, 1 failed, 669 passed, 3 skipped): "
        "60 %."
    )
    assert "on each processor" not in bench.readme_section(runs[:1])


def test_minutes_round_to_the_second_before_splitting(bench):
    assert [bench.minutes(s) for s in (1319.6, 1352.59, 59.4)] == ["22 min 0 s", "22 min 33 s", "0 min 59 s"]


def test_the_kept_runs_are_read_oldest_first_and_none_is_a_clear_error(bench, tmp_path):
    with pytest.raises(SystemExit, match="no records in .*run bench_ci.py with --json"):
        bench.write_readme(True, tmp_path / "README.md", tmp_path)
    for name, date in [("a.json", "2026-12-02 11:00"), ("b.json", "2026-12-02 10:00")]:
        (tmp_path / name).write_text(json.dumps({"conditions": {"date_utc": date}}))
    runs = read_kept_runs(tmp_path, "bench_ci.py")
    assert [run["conditions"]["date_utc"] for run in runs] == ["2026-12-02 10:00", "2026-12-02 11:00"]


def test_the_section_shows_the_cpu_its_steal_and_the_commands_cpu_time_where_a_record_has_them(bench):
    run = {
        "conditions": {
            "date_utc": "2026-12-03 04:00",
            "commit": "abc1234",
            "machine": "x86_64, 2 cores, 24 GiB",
            "cpu_signature": "family 25 model 17 stepping 1; avx avx2 fma avx512f",
            "load_average_before_after": [0.2, 1.5],
            "cpu_steal_share": 0.084,
        },
        "exit_status": 0,
        "wall_s": 1500.0,
        "cpu_s": 2000.4,
        "pytest": bench.pytest_outcome(LOG),
    }
    row = next(line for line in bench.readme_section([run]).splitlines() if line.startswith("| 2026"))
    assert "| abc1234 | family 25 model 17, avx512f | 0.2 | 8% | 1 failed" in row
    assert "| 25 min 0 s | 33 min 20 s | `test_the_real_profile_runs`" in row


def test_the_cpu_time_counts_the_finished_childrens_user_and_system_seconds(bench):
    before = bench.children_cpu_s()
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    assert bench.children_cpu_s() - before > 0.05  # the child's loop, counted once it was waited for


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie waiting to be reaped has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_past_the_timeout_every_process_of_the_ci_command_is_stopped(bench, tmp_path, monkeypatch):
    """Not only ``bash .ci/run``: what it started too, one that ignores SIGTERM included (SIGKILL after the grace)."""
    repo, pids = tmp_path / "repo", tmp_path / "pids"
    (repo / ".ci").mkdir(parents=True)
    (repo / ".ci" / "run").write_text(
        f"sleep 300 &\necho $! > {pids}\nbash -c 'trap \"\" TERM; sleep 300; true' &\necho $! >> {pids}\nwait\n"
    )
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ci"]):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    monkeypatch.setattr(bench, "REPO_ROOT", repo)
    monkeypatch.setattr(bench, "STOP_GRACE_S", 1.0)
    started = time.monotonic()
    status, wall_s, _, _ = bench.clone_and_run(tmp_path / "clone", 2.0, tmp_path / "ci.log")
    children = [int(pid) for pid in pids.read_text().split()]
    try:
        assert status == 124 and 2.0 <= wall_s < 10 and time.monotonic() - started < 15
        assert len(children) == 2
        time.sleep(0.2)  # the orphans' new parent reaps them
        assert [pid for pid in children if running(pid)] == []
    finally:
        for pid in children:  # never leave a sleeper behind, whatever the code under test did
            if running(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_tests_column_leaves_out_one_warning_as_it_does_several(bench):
    run = {
        "conditions": {
            "date_utc": "2026-12-03 04:00",
            "commit": "abc1234",
            "machine": "x86_64, 2 cores, 24 GiB",
            "load_average_before_after": [0.2, 1.5],
        },
        "exit_status": 0,
        "wall_s": 1500.0,
        "pytest": bench.pytest_outcome("670 passed, 1 warning in 1303.27s (0:21:43)\n"),
    }
    row = next(line for line in bench.readme_section([run]).splitlines() if line.startswith("| 2026"))
    assert "| 670 passed (exit 0) |" in row


def test_the_record_names_no_uncommitted_files_since_the_clone_ran_the_commit_without_them(
    bench, tmp_path, monkeypatch
):
    monkeypatch.setattr(bench.bench_records, "source_commit", lambda: "abc1234-dirty")
    monkeypatch.setattr(bench.bench_records, "uncommitted_files", lambda: ["benchmarks/bench_ci.py"])

    def cloned_and_ran(clone_dir, timeout_s, log_path):
        log_path.write_text("670 passed in 1303.27s (0:21:43)\n")
        return 0, 1400.0, 2000.0, "abc1234"

    monkeypatch.setattr(bench, "clone_and_run", cloned_and_ran)
    record = tmp_path / "run.json"
    assert bench.main(["--clone-dir", str(tmp_path / "clone"), "--json", str(record)]) == 0
    conditions = json.loads(record.read_text())["conditions"]
    assert conditions["commit"] == "abc1234" and "uncommitted" not in conditions
