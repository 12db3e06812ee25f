"""What a profile's run costs: every notebook via papermill from an empty cache, then again from the filled one.

Runs ``python -m course_utils.run --profile PROFILE`` twice with a cache folder of its own (``FASHION_COURSE_CACHE``,
emptied first) and outputs and figures outside ``outputs/`` and ``figures/``: the *fresh* run is what a fresh clone
pays (the catalogue rendered, the tiny CLIP pretrained, every cached model trained), the *cached* one what every later
run pays. Each run's seconds per notebook come from the runner's ``timings-<profile>.json``. The two runs' records are
also compared metric by metric: what differs between them should be timings only (the course's reproducibility
claim). Run it on idle cores. With ``--json`` the record is kept; ``--readme [--check]`` renders README › Profiles'
runtimes from the records kept in ``results/bench/runtimes/`` (the last per profile).

  .venv/bin/python benchmarks/bench_runtimes.py --profile ci --json results/bench/runtimes/<time>-ci.json    # ~15 min
  .venv/bin/python benchmarks/bench_runtimes.py --profile full --json results/bench/runtimes/<time>-full.json  # ~30 min
  .venv/bin/python benchmarks/bench_runtimes.py --readme
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import bench_records  # noqa: E402
from course_utils.paths import REPO_ROOT, outputs_dir  # noqa: E402
from course_utils.results import is_timing_metric, same_metric_value  # noqa: E402

RECORDS = bench_records.BENCH_RECORDS / "runtimes"
README_MARKERS = ("<!-- bench-runtimes:start -->", "<!-- bench-runtimes:end -->")
# The course's budgets for a whole profile's run from an empty cache (set by its issues, not measured).
BUDGETS_S = {"ci": 8 * 60, "full": 30 * 60}
CACHES = ("fresh", "cached")


def run_profile(profile: str, work: Path, cache: str) -> dict:
    """One ``course_utils.run --profile profile`` with ``work/cache`` as its cache and ``work/<cache>`` as its
    outputs; ``{"cache", "exit_status", "wall_s", "notebooks": {stem: seconds}, "metrics": {stem: {...}}}``."""
    out = work / cache
    bench_records.empty_own_folder(out, "--work-dir", __file__)
    env = {**os.environ, "FASHION_COURSE_CACHE": str(work / "cache")}  # --output-dir takes the figures along
    command = [sys.executable, "-m", "course_utils.run", "--profile", profile, "--output-dir", str(out)]
    print(f"▶ {cache}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    status = subprocess.run(command, cwd=REPO_ROOT, env=env).returncode
    wall_s = time.perf_counter() - start
    timings = out / f"timings-{profile}.json"
    metrics = {path.stem: json.loads(path.read_text())["metrics"] for path in sorted((out / "results").glob("*.json"))}
    return {
        "cache": cache,
        "exit_status": status,
        "wall_s": round(wall_s, 1),
        "notebooks": {stem: round(s, 1) for stem, s in json.loads(timings.read_text()).items()}
        if timings.exists()
        else {},
        "metrics": metrics,
    }


def differing_metrics(first: dict, second: dict) -> list[str]:
    """``notebook.metric`` names whose values differ between two runs' metrics (or that only one run has);
    NaN equals NaN."""
    names = []
    for stem in sorted(set(first) | set(second)):
        left, right = first.get(stem, {}), second.get(stem, {})
        names += [
            f"{stem}.{name}"
            for name in sorted(set(left) | set(right))
            if name not in left or name not in right or not same_metric_value(left[name], right[name])
        ]
    return names


def metric_count(metrics: dict) -> int:
    """How many metrics the notebooks' records hold in all."""
    return sum(len(values) for values in metrics.values())


def seconds(value: float) -> str:
    return f"{value:,.0f} s"


def fresh_run(record: dict) -> dict | None:
    """The run from an empty cache of a record, or ``None`` when it timed only the cached run."""
    return next((run for run in record["runs"] if run["cache"] == "fresh"), None)


def budget_verdict(record: dict, profile: str) -> tuple[str, str]:
    """``("6.7 min", "held")``: a record's run from an empty cache against its profile's budget (a failed run never
    holds)."""
    fresh = fresh_run(record)
    held = fresh["exit_status"] == 0 and fresh["wall_s"] <= BUDGETS_S[profile]
    return f"{fresh['wall_s'] / 60:.1f} min", "held" if held else "not held"


def readme_section(records: list[dict]) -> str:
    """The last record of each profile as one table (a column per profile and cache), its totals against the
    budgets (after them the earlier kept runs' verdicts, each with its date and processor), and what differed between
    its fresh and cached runs; every number from ``records``."""
    latest = {record["profile"]: record for record in records}
    profiles = [profile for profile in BUDGETS_S if profile in latest] + sorted(set(latest) - set(BUDGETS_S))
    columns = [(profile, run) for profile in profiles for run in latest[profile]["runs"]]
    stems = sorted({stem for _, run in columns for stem in run["notebooks"]})
    lines = [
        "| notebook | " + " | ".join(f"{profile}, {run['cache']}" for profile, run in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for stem in stems:
        lines.append(
            f"| {stem} | "
            + " | ".join(seconds(run["notebooks"][stem]) if stem in run["notebooks"] else "–" for _, run in columns)
            + " |"
        )
    lines.append(
        "| **total (runner)** | "
        + " | ".join(
            f"**{seconds(sum(run['notebooks'].values()))} ({sum(run['notebooks'].values()) / 60:.1f} min)**"
            for _, run in columns
        )
        + " |"
    )
    lines.append(
        "| wall time of the command | "
        + " | ".join(
            f"{seconds(run['wall_s'])}" + ("" if run["exit_status"] == 0 else f" (exit {run['exit_status']})")
            for _, run in columns
        )
        + " |"
    )
    # the machine and threads once where every profile's record agrees on them, else in each profile's conditions
    setups = {
        profile: f"{latest[profile]['conditions']['machine']}, torch on "
        f"{latest[profile]['conditions']['torch_threads']} threads"
        for profile in profiles
    }
    shared = len(set(setups.values())) == 1
    conditions = [setups[profiles[0]]] if shared else []
    for profile in profiles:
        measured = latest[profile]["conditions"]
        conditions.append(
            f"{profile}: {'' if shared else setups[profile] + ', '}{measured['date_utc']} UTC, "
            f"{bench_records.processor(measured)}, commit {measured['commit']}, load average "
            f"{measured['load_average_before_after'][0]} before"
        )
    intro = (
        f"**Measured** by `benchmarks/bench_runtimes.py` ({'; '.join(conditions)}; records in "
        "`results/bench/runtimes/`):"
    )
    verdicts = []
    for profile in profiles:
        if profile not in BUDGETS_S or fresh_run(latest[profile]) is None:
            continue
        earlier = []
        for record in records:
            if record["profile"] == profile and record is not latest[profile] and fresh_run(record) is not None:
                minutes, held = budget_verdict(record, profile)
                when, where = record["conditions"]["date_utc"][:10], bench_records.processor(record["conditions"])
                earlier.append(f"{minutes} on {when} ({where}, {held})")
        verdicts.append(
            f"`{profile}` ≤ {BUDGETS_S[profile] // 60} min from an empty cache: "
            + ", ".join(budget_verdict(latest[profile], profile))
            + (f" (earlier kept runs: {'; '.join(earlier)})" if earlier else "")
        )
    compared = []
    for profile in profiles:
        names = latest[profile]["differing_metrics"]
        if names is None:
            compared.append(f"`{profile}`: one run only, not compared")
            continue
        timings = [name for name in names if is_timing_metric(name.split(".", 1)[1])]
        others = [name for name in names if name not in timings]
        compared.append(
            f"`{profile}`: {latest[profile]['metrics_compared']} metrics, {len(timings)} timings "
            "differ, other metrics that differ: " + (", ".join(f"`{name}`" for name in others) if others else "none")
        )
    return "\n\n".join(
        [
            intro,
            "\n".join(lines),
            "Budgets: " + "; ".join(verdicts) + ".",
            "The fresh and the cached run's records compared metric by metric (timings differ between "
            "runs; any other metric that differs would break the reproducibility claim below): "
            + "; ".join(compared)
            + ".",
        ]
    )


def write_readme(check: bool, readme: Path = bench_records.README, folder: Path = RECORDS) -> int:
    """README › Profiles' runtimes from the runs kept in ``folder`` (``check``: compare only)."""
    return bench_records.render_readme(Path(__file__).name, folder, README_MARKERS, readme_section, check, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="ci", choices=sorted(BUDGETS_S), help="the profile to time")
    parser.add_argument(
        "--caches",
        default=",".join(CACHES),
        help="which runs, in order: fresh (empty cache first), cached (reuses the cache); default both",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="cache and outputs of the runs (default outputs/bench/runtimes-<profile>/); emptied first, so it must be "
        "new, empty or made by an earlier run of this script",
    )
    bench_records.add_record_options(parser, "Profiles, outputs and runtimes")
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme(args.check)
    caches = [cache for cache in args.caches.split(",") if cache]
    if not caches or set(caches) - set(CACHES) or caches[0] != "fresh" and "fresh" in caches:
        parser.error(f"--caches takes fresh and/or cached, fresh first; got {args.caches!r}")
    work = (args.work_dir or outputs_dir() / "bench" / f"runtimes-{args.profile}").resolve()
    if "fresh" in caches:
        bench_records.empty_own_folder(work, "--work-dir", __file__)
    elif not (work / "cache").is_dir() or not any((work / "cache").iterdir()):
        parser.error(
            f"--caches cached reuses {work / 'cache'}, which is missing or empty: a run there would start from an "
            "empty cache; run --caches fresh,cached (or fresh first, with the same --work-dir)"
        )
    import torch

    conditions = bench_records.RunConditions()
    runs = [run_profile(args.profile, work, cache) for cache in caches]
    record = {
        "profile": args.profile,
        "conditions": conditions.finish(
            torch_threads=int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())
        ),
        "runs": [{key: value for key, value in run.items() if key != "metrics"} for run in runs],
        "differing_metrics": differing_metrics(runs[0]["metrics"], runs[1]["metrics"]) if len(runs) > 1 else None,
        "metrics_compared": metric_count(runs[0]["metrics"]),
    }
    bench_records.keep(record, args.json)
    print(json.dumps(record, indent=2))
    return max(run["exit_status"] for run in runs)


if __name__ == "__main__":
    raise SystemExit(main())
