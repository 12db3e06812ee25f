"""A fresh clone's CI, timed: clone this checkout's HEAD beside it, run ``CI=true bash .ci/run`` there, record it.

The clone goes to ``<checkout>-bench-ci`` next to the checkout (``--clone-dir``), so that ``../shared/data``
resolves there as it does here; a clone left there by an earlier run is replaced. Run it on idle cores: the time is
what a CI machine of this size pays. It prints the outcome and, with ``--json``, writes a record: date, commit,
machine, load average before and after, the share of CPU time the hypervisor stole meanwhile, the command's wall time
(set-up of ``.venv`` and the browser included) and the CPU time its processes used (user + system, which leaves
out the stolen time that the wall time includes), pytest's own time and counts, and its ten slowest durations (the
log goes to ``outputs/bench/bench_ci.log``).
``--readme [--check]`` renders README › Tests and CI's measured part from the records kept in ``results/bench/ci/``.

    .venv/bin/python benchmarks/bench_ci.py --json results/bench/ci/<time>.json   # as long as a CI run
    .venv/bin/python benchmarks/bench_ci.py --readme
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import bench_records  # noqa: E402
from course_utils.paths import REPO_ROOT, outputs_dir  # noqa: E402

RECORDS = bench_records.BENCH_RECORDS / "ci"
README_MARKERS = ("<!-- bench-ci:start -->", "<!-- bench-ci:end -->")
BUDGET_S = 30 * 60  # the course's budget for a fresh clone's whole CI command
RECENT_RUNS = 5  # the runs whose slowest the README sets against the budget beside the last
SLOWEST_SHOWN = 3
STOP_GRACE_S = 10.0  # past --timeout: seconds between SIGTERM and SIGKILL to the CI command's processes


def pytest_outcome(log: str) -> dict:
    """pytest's counts, its own seconds and its slowest durations, read from its output ``log``.

    ``{"counts": {"passed": 670, ...}, "seconds": 1303.27, "slowest": [{"seconds", "when", "test"}, ...]}``;
    ``seconds`` is ``None`` when pytest printed no summary line (it did not finish).
    """
    summaries = re.findall(r"^=*\s*(\d+ [a-z]+(?:, \d+ [a-z]+)*) in ([\d.]+)s\b.*$", log, flags=re.M)
    counts, seconds = {}, None
    if summaries:
        line, seconds = summaries[-1][0], float(summaries[-1][1])
        counts = {word: int(number) for number, word in re.findall(r"(\d+) ([a-z]+)", line)}
    slowest = [
        {"seconds": float(s), "when": when, "test": test}
        for s, when, test in re.findall(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)$", log, flags=re.M)
    ]
    return {"counts": counts, "seconds": seconds, "slowest": slowest}


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished, waited-for descendants so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def clone_and_run(clone_dir: Path, timeout_s: float, log_path: Path) -> tuple[int, float, float, str]:
    """Clone HEAD into ``clone_dir`` and run its CI; ``(exit status, wall seconds, CPU seconds, commit)``.

    The CPU seconds are the CI command's processes' (each waited for by its parent, as make, pytest and the test
    fixtures do), user + system."""
    if clone_dir.exists():
        if not (clone_dir / ".ci" / "run").exists():
            raise SystemExit(f"{clone_dir} exists and is not an earlier clone of this course: choose --clone-dir")
        shutil.rmtree(clone_dir)
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone_dir)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone_dir, capture_output=True, text=True, check=True
    ).stdout.strip()
    start, cpu_start = time.perf_counter(), children_cpu_s()
    with open(log_path, "w") as log:
        status = run_to_the_end(["bash", ".ci/run"], clone_dir, log, timeout_s)
    return status, time.perf_counter() - start, children_cpu_s() - cpu_start, commit


def run_to_the_end(command: list[str], cwd: Path, log, timeout_s: float) -> int:
    """``CI=true command`` in ``cwd``, its output in ``log``; its exit status, or 124 past ``timeout_s``.

    The command runs in a session of its own, so that past the timeout every process it started (make, pytest, a
    server a test started) is stopped with it: SIGTERM to the whole process group, SIGKILL after
    :data:`STOP_GRACE_S` seconds to whatever is left, then waited for."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "CI": "true"}, start_new_session=True
    )
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(process, STOP_GRACE_S)
        return 124


def stop_group(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to ``process``'s process group, SIGKILL to the group after ``grace_s`` seconds if any member is left,
    then wait for ``process``."""
    group = process.pid  # start_new_session: the command leads its own group
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and group_alive(group):
        time.sleep(0.1)
        process.poll()  # reap the leader, so that a stopped leader does not count as a member left
    if group_alive(group):
        os.killpg(group, signal.SIGKILL)
    process.wait()


def group_alive(group: int) -> bool:
    """Whether any process of process group ``group`` is left (signal 0 checks without sending)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def minutes(seconds: float) -> str:
    """``1319.6`` -> ``"22 min 0 s"`` (rounded to the second first)."""
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60} s"


def readme_section(runs: list[dict]) -> str:
    """A table of the recorded runs, oldest first, then the last run and the last on each processor against the
    budget; every number from ``runs``."""
    lines = [
        "| date (UTC) | commit | CPU | load average before | CPU steal | tests | pytest | whole command (set-up "
        f"included) | its CPU time | slowest {SLOWEST_SHOWN} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        conditions, outcome = run["conditions"], run["pytest"]
        counts = counts_text(outcome)
        slowest = ", ".join(
            f"`{entry['test'].split('::')[-1]}` {entry['seconds']:.0f} s"
            for entry in outcome["slowest"][:SLOWEST_SHOWN]
        )
        lines.append(
            f"| {conditions['date_utc']} | {conditions['commit']} | "
            f"{bench_records.cpu_generation(conditions) or '–'} | {conditions['load_average_before_after'][0]}"
            f" | {bench_records.cpu_steal(conditions) or '–'} | {counts} "
            f"(exit {run['exit_status']}) | "
            f"{minutes(outcome['seconds']) if outcome['seconds'] else '–'} | {minutes(run['wall_s'])} | "
            f"{minutes(run['cpu_s']) if 'cpu_s' in run else '–'} | {slowest} |"
        )
    last = runs[-1]
    machine = last["conditions"]["machine"]
    intro = (
        f"**Measured** by `benchmarks/bench_ci.py` (a fresh clone, `CI=true bash .ci/run`, {machine}; records "
        "in `results/bench/ci/`; CPU steal: the share of CPU time the hypervisor gave to other guests during the "
        "run; its CPU time: user + system time of the command's processes, which leaves out the stolen time that "
        "the wall time includes; CPU: the host's processor generation and widest vector extension, since hosts that "
        "share one model name differ in speed; – where a record predates the column):"
    )
    # one run is one draw: hosts differ, and so do runs on one host
    recent = runs[-RECENT_RUNS:]
    slowest = max(recent, key=lambda run: run["wall_s"])
    slowest_cpu = bench_records.processor(slowest["conditions"])
    budget = (
        f"The last run took {100 * last['wall_s'] / BUDGET_S:.0f} % of the {BUDGET_S // 60}-minute budget "
        f"for the whole command; the slowest of the last {len(recent)} kept runs "
        f"({slowest['conditions']['date_utc']}, {slowest_cpu}) took {100 * slowest['wall_s'] / BUDGET_S:.0f} %."
    )
    return "\n\n".join([intro, "\n".join(lines), budget + by_processor(runs)])


def counts_text(outcome: dict) -> str:
    """pytest's counts as a row shows them, warnings left out: ``"1 failed, 669 passed, 3 skipped"``, or
    ``"no summary"`` for a run that ended before pytest printed one."""
    counts = (f"{number} {word}" for word, number in outcome["counts"].items() if not word.startswith("warning"))
    return ", ".join(counts) or "no summary"


def by_processor(runs: list[dict]) -> str:
    """`` The last run on each processor, slowest first: …`` — hosts differ in speed, so each processor's latest
    record is set against the budget; "" where no record names its processor."""
    last_on = {bench_records.cpu_generation(run["conditions"]): run for run in runs}  # oldest first: the last wins
    last_on.pop("", None)
    if not last_on:
        return ""
    shares = [
        f"{processor} ({run['conditions']['date_utc']}, {counts_text(run['pytest'])}): "
        f"{100 * run['wall_s'] / BUDGET_S:.0f} %"
        for processor, run in sorted(last_on.items(), key=lambda item: -item[1]["wall_s"])
    ]
    return " The last run on each processor, slowest first: " + "; ".join(shares) + "."


def write_readme(check: bool, readme: Path = bench_records.README, folder: Path = RECORDS) -> int:
    """README › Tests and CI's measured part from the runs kept in ``folder`` (``check``: compare only)."""
    return bench_records.render_readme(Path(__file__).name, folder, README_MARKERS, readme_section, check, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--clone-dir",
        type=Path,
        default=REPO_ROOT.parent / f"{REPO_ROOT.name}-bench-ci",
        help="where to clone (beside the checkout, so ../shared resolves; replaced if an earlier clone)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds the CI command may take")
    bench_records.add_record_options(parser, "Tests and CI")
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme(args.check)
    log_path = outputs_dir() / "bench" / "bench_ci.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    conditions = bench_records.RunConditions()
    status, wall_s, cpu_s, commit = clone_and_run(args.clone_dir.resolve(), args.timeout, log_path)
    # the clone's commit: what the CI ran, without the checkout's uncommitted changes (so none are named)
    finished = conditions.finish(commit=commit)
    record = {
        "conditions": {name: value for name, value in finished.items() if name != "uncommitted"},
        "exit_status": status,
        "wall_s": round(wall_s, 1),
        "cpu_s": round(cpu_s, 1),
        "pytest": pytest_outcome(log_path.read_text()),
    }
    bench_records.keep(record, args.json)
    print(json.dumps(record, indent=2))
    print(f"log: {log_path}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
