"""What the benchmark scripts in ``benchmarks/`` share: a run's record, and README sections rendered from kept runs.

A script started with ``--json results/bench/<name>/<time>.json`` keeps its run's record: the conditions
(:class:`RunConditions`: date, commit, machine, load average before and after, CPU steal in between), usually its
arguments, and what it measured. ``--readme`` renders the script's section of ``README.md`` (between its
``<!-- bench-<name>:start -->`` and ``:end`` lines) from the records kept there, and ``--readme --check`` only
compares; the unit tests run the check, so a measured number in the README always comes from a kept run (the
findings' rule, applied to the benchmarks).

    parser = argparse.ArgumentParser(...)
    add_record_options(parser, "Performance › Exact search")
    ...
    if args.readme:
        return render_readme(Path(__file__).name, RECORDS, MARKERS, readme_section, args.check)
    conditions = RunConditions()
    ... measure ...
    keep_then_print({"conditions": conditions.finish(), "arguments": arguments(args), ...}, args.json, readme_section)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .findings import README, update_readme
from .json_files import write_json
from .lockfile import environment_pins
from .paths import REPO_ROOT
from .results import (
    cpu_generation,
    cpu_model,
    cpu_signature,
    kernel_choices,
    library_versions,
    load_record,
    markdown_table_text,
)

BENCH_RECORDS = REPO_ROOT / "results" / "bench"


def source_commit() -> str:
    """The checkout's commit (``git describe --always --dirty``), or "unknown" outside a git checkout."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return described.stdout.strip() or "unknown"


def uncommitted_files(root: Path = REPO_ROOT) -> list[str]:
    """Tracked files whose content differs from the commit (``git diff --name-only HEAD``): what a ``-dirty``
    commit in a record ran with beside the commit, so a reader knows where to look (``[]`` outside a checkout)."""
    try:
        changed = subprocess.run(
            ["git", "diff", "--name-only", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return changed.stdout.split() if changed.returncode == 0 else []


def machine_description() -> str:
    """``"x86_64, 2 cores, 24 GiB"``: what a record says its run had."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{platform.machine()}, {os.cpu_count()} cores, {memory / 2**30:.0f} GiB"


def command_line(argv: list[str]) -> str:
    """``argv`` as the command that ran (script name first), without ``--json PATH``: what a reader reruns."""
    words, skip = [Path(argv[0]).name], False
    for word in argv[1:]:
        if skip or word == "--json" or word.startswith("--json="):
            skip = word == "--json"
            continue
        words.append(word)
    return " ".join(shlex.quote(word) for word in words)


def cpu_ticks(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """``(steal, total)`` CPU ticks of all cores since boot, from ``/proc/stat``'s ``cpu`` line (``None`` where
    there is none). Steal is time the hypervisor gave this virtual machine's cores to another guest."""
    try:
        fields = [int(value) for value in stat.read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already in user and nice
    return (fields[7], sum(fields[:8])) if len(fields) >= 8 else None


def steal_share(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The share of CPU time stolen by the hypervisor between two :func:`cpu_ticks` readings (``None`` without
    both)."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return (end[0] - start[0]) / (end[1] - start[1])


class RunConditions:
    """Made when a run starts (its date, command, the load average and CPU ticks then); :meth:`finish` adds the
    rest at its end, with the share of CPU time the hypervisor stole in between (a busy neighbour on the host slows
    a run as surely as a busy core here does)."""

    def __init__(self) -> None:
        self.date_utc = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
        self.load_before = os.getloadavg()[0]
        self.ticks_before = cpu_ticks()
        self.commit = source_commit()
        # which tracked files a -dirty commit ran with (asked of git only then)
        self.uncommitted = {"uncommitted": uncommitted_files()} if self.commit.endswith("-dirty") else {}
        self.command = command_line(sys.argv)

    def finish(self, **extra) -> dict:
        """``{"date_utc", "commit", "uncommitted", "command", "machine", "cpu", "cpu_signature", "kernels",
        "libraries", "constraints", "load_average_before_after", "cpu_steal_share", **extra}`` (``cpu_steal_share``
        only where ``/proc/stat`` exists; ``uncommitted`` only for a ``-dirty`` commit: :func:`uncommitted_files`;
        ``cpu``, ``cpu_signature``, ``kernels``, ``libraries`` and ``constraints``:
        :func:`course_utils.results.cpu_model`, :func:`~course_utils.results.cpu_signature`,
        :func:`~course_utils.results.kernel_choices`, :func:`~course_utils.results.library_versions` and
        :func:`course_utils.lockfile.environment_pins`)."""
        steal = steal_share(self.ticks_before, cpu_ticks())
        return {
            "date_utc": self.date_utc,
            "commit": self.commit,
            **self.uncommitted,
            "command": self.command,
            "machine": machine_description(),
            "cpu": cpu_model(),
            "cpu_signature": cpu_signature(),
            "kernels": kernel_choices(),
            "libraries": library_versions(),
            "constraints": environment_pins(),
            "load_average_before_after": [round(self.load_before, 2), round(os.getloadavg()[0], 2)],
            **({} if steal is None else {"cpu_steal_share": round(steal, 3)}),
            **extra,
        }


def add_record_options(parser: argparse.ArgumentParser, section: str) -> None:
    """``--json PATH`` (keep the run's record), ``--readme`` and ``--check`` (render or compare README › section)."""
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="keep the run's record here (results/bench/<name>/<time>.json for the README)",
    )
    parser.add_argument(
        "--readme",
        action="store_true",
        help=f"run nothing: render README › {section} from the kept records (with --check: compare)",
    )
    parser.add_argument("--check", action="store_true", help="with --readme: compare only, exit 1 when it differs")


def arguments(args: argparse.Namespace) -> dict:
    """The run's command-line arguments for its record, without the record options themselves."""
    return {
        name: str(value) if isinstance(value, Path) else value
        for name, value in vars(args).items()
        if name not in ("json", "readme", "check")
    }


def empty_own_folder(folder: Path, option: str, script: str) -> None:
    """Empty ``folder`` (or make it) for a run of ``script`` that writes there, and mark it as that script's.

    A benchmark empties its work folder first, so it only ever empties one that is new, empty or marked by an earlier
    run of the same script (an empty file ``.<script>`` in it); a folder of other files is refused with
    ``SystemExit`` naming ``option``, the command-line option that chose it: a mistyped path must not cost a user's
    files."""
    marker = folder / f".{Path(script).stem}"
    if folder.exists() and any(folder.iterdir()) and not marker.exists():
        raise SystemExit(
            f"{option} {folder} holds files this benchmark did not write (no {marker.name} in it), and the benchmark "
            "empties its folder; give a new or empty folder"
        )
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    marker.touch()  # the next run may empty this folder


def keep(record: dict, path: Path | None) -> None:
    """Write ``record`` to ``path`` as JSON, atomically (nothing when ``path`` is ``None``)."""
    if path is not None:
        write_json(path, record)
        print(f"record kept: {path}")


def keep_then_print(record: dict, path: Path | None, render: Callable[[list[dict]], str]) -> None:
    """:func:`keep` ``record``, then print ``render([record])`` (the run :func:`as_printed`), as a README section
    renders its kept runs: the record is written first, so a render that fails cannot lose a long run's
    measurements."""
    keep(record, path)
    print(render([as_printed(record, path)]))


def as_printed(record: dict, path: Path | None) -> dict:
    """``record`` as a run's own printout shows it: :func:`run_heading` then says where :func:`keep` wrote it
    (``path``), or that it was not kept, instead of the records folder a README section names."""
    return {**record, "kept_at": path}


def read_kept_runs(folder: Path, script: str) -> list[dict]:
    """The records ``folder/*.json`` that ``script`` kept (its ``--json``), oldest first by their
    ``conditions.date_utc``; ``SystemExit`` saying how to keep one when there are none, or naming a damaged one."""
    runs = [
        load_record(
            path, f"`{script_command(script)} --json {path}` (or restore the committed one)", {"conditions": dict}
        )
        for path in sorted(folder.glob("*.json"))
    ]
    if not runs:
        raise SystemExit(f"no records in {folder}: run {script} with --json {folder}/<time>.json")
    return sorted(runs, key=lambda run: run["conditions"]["date_utc"])


def render_readme(
    script: str,
    folder: Path,
    markers: tuple[str, str],
    render: Callable[[list[dict]], str],
    check: bool,
    readme: Path = README,
) -> int:
    """``render(kept runs of folder)`` between the README's ``markers`` (``check``: only compare; 1 when it differs)."""
    command = f"{script_command(script)} --readme"
    return update_readme(readme, render(read_kept_runs(folder, script)), *markers, check, folder, command)


def script_command(script: str) -> str:
    """``"python benchmarks/bench_x.py"``: how a reader starts benchmark ``script`` from the repository's root."""
    return f"python benchmarks/{script}"


def markdown_table(rows: list[dict], columns: list[str], cell: Callable[[object, str], str] | None = None) -> str:
    """A markdown table of ``rows`` (dicts) in ``columns``; ``cell(value, column)`` formats a value (default
    :func:`plain_cell`); a value a row lacks is left empty."""
    cell = cell or plain_cell
    cells = [["" if row.get(c) is None else cell(row[c], c) for c in columns] for row in rows]
    return markdown_table_text(columns, cells)


def plain_cell(value: object, column: str) -> str:
    """Floats to three decimals below 10 and one decimal above (``0.973``, ``1,358.2``); ints with thousands commas."""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def cpu_steal(conditions: dict) -> str | None:
    """A run's CPU steal share as a percent (``"10%"``), or ``None`` for a record kept before it was measured."""
    return f"{conditions['cpu_steal_share']:.0%}" if "cpu_steal_share" in conditions else None


def processor(conditions: dict) -> str:
    """:func:`cpu_generation`, or ``"processor not recorded"`` for a record kept before the signature was."""
    return cpu_generation(conditions) or "processor not recorded"


def run_heading(run: dict, folder: Path, lead: str = "**Measured**", end: str = ":") -> str:
    """``**Measured** 2026-12-02 19:40 UTC by `bench_x.py --n 1000` (x86_64, 2 cores, 24 GiB, family 25 model 17,
    avx512f, load average 0.3 before, 1.9 after; commit abc1234; record in `results/bench/x/`):`` — the line above a
    rendered table (the processor and the CPU steal where the record has them; for a run printed through
    :func:`as_printed`, the file it was kept in, or that it was not kept)."""
    conditions = run["conditions"]
    kept_at = run.get("kept_at", folder)
    if kept_at is None:
        where = "not kept: `--json FILE` keeps it"
    else:
        shown = kept_at.relative_to(REPO_ROOT) if kept_at.is_relative_to(REPO_ROOT) else kept_at
        where = f"record in `{shown}{'/' if kept_at == folder else ''}`"
    before, after = conditions["load_average_before_after"]
    steal = cpu_steal(conditions)
    steal = f", CPU steal {steal}" if steal else ""
    generation = cpu_generation(conditions)
    machine = f"{conditions['machine']}, {generation}" if generation else conditions["machine"]
    return (
        f"{lead} {conditions['date_utc']} UTC by `{conditions['command']}` ({machine}, load "
        f"average {before} before, {after} after{steal}; commit {conditions['commit']}; {where}){end}"
    )
