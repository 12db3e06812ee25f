"""Results are records: each notebook writes one JSON; the report only reads those records.

``write_results`` stores a notebook's parameters, metrics and tables in ``outputs/results/<notebook>.json``;
records, the benchmarks' included, are written by :func:`course_utils.json_files.write_json` (atomic) and read by
``load_record`` (naming a damaged file and the command that writes it again); ``aggregate_seeds`` adds to each record
the same notebook's metrics under other seeds (values, mean, std);
``build_report`` gathers every record into ``outputs/RESULTS.md``, a report an instructor can project;
``timing_key`` / ``parse_timing_key`` name a notebook's run under a further seed in a run's timings file;
``cpu_model``, ``cpu_signature``, ``kernel_choices`` and ``library_versions`` say what else a record's numbers depend
on (each record's ``environment``, and the benchmarks' run conditions), with whether the installed distributions are
those ``constraints.txt`` pins (:func:`course_utils.lockfile.environment_pins`).
"""

from __future__ import annotations

import argparse
import math
import platform
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .json_files import check_json_object, read_json_object, write_json
from .lockfile import environment_pins
from .paths import outputs_dir

# The installed libraries whose versions can change the course's numbers: image decoding and resizing, weight
# initialisation, the CPU kernels, the solvers and the indexes.
NUMERIC_LIBRARIES = ("torch", "torchvision", "numpy", "pillow", "scikit-learn", "open_clip_torch", "timm", "faiss-cpu")


def first_processor_fields(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The ``name: value`` lines of the first processor in ``/proc/cpuinfo`` (empty where there is no such file)."""
    fields: dict[str, str] = {}
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if not line.strip():
                break  # the other processors' blocks repeat it
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's model name (``/proc/cpuinfo``; elsewhere what ``platform`` knows, or the architecture)."""
    return first_processor_fields(cpuinfo).get("model name") or platform.processor() or platform.machine()


#: Instruction-set extensions that choose which kernels oneDNN and PyTorch run, hence how a computation rounds.
KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
GENERATION_FIELDS = (("family", "cpu family"), ("model", "model"), ("stepping", "stepping"))


def cpu_signature(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """``"family 25 model 1 stepping 1; avx avx2 fma"``: which processor generation, and which of
    :data:`KERNEL_FLAGS` it has (``/proc/cpuinfo``; ``None`` elsewhere). Hosts whose model name is the same generic
    string (a cloud's "AMD EPYC") can be different processors that train different weights from one seed."""
    fields = first_processor_fields(cpuinfo)
    if not fields:
        return None
    flags = set(fields.get("flags", "").split())
    generation = " ".join(f"{label} {fields.get(name, '?')}" for label, name in GENERATION_FIELDS)
    return f"{generation}; {' '.join(flag for flag in KERNEL_FLAGS if flag in flags)}".rstrip("; ")


def kernel_choices() -> dict[str, str | None]:
    """Which kernels the numeric libraries picked for this processor when they loaded: ``{"faiss": FAISS's SIMD
    level, "<BLAS> <version>": the core type that BLAS runs its kernels for, ...}`` for each BLAS loaded in this
    process (read by threadpoolctl; FAISS is imported first, so the OpenBLAS inside it is among them).

    Each library detects the processor its own way, so two hosts with the same :data:`KERNEL_FLAGS` can still differ
    here: the OpenBLAS 0.3.15 inside faiss-cpu 1.15.1 does not know Intel's family 6 model 207 and runs its generic
    "Prescott" kernels there; notebook 08's on-disk IVF-PQ recall then moved in the fourth digit from the value the
    model 167 host recorded, and ``OPENBLAS_CORETYPE=SkylakeX`` gave that value back (``results/REPRODUCIBILITY.md``,
    2026-12-06)."""
    import threadpoolctl

    choices: dict[str, str | None] = {}
    try:
        import faiss

        choices["faiss"] = faiss.SIMDConfig.get_level_name() if hasattr(faiss, "SIMDConfig") else None
    except ImportError:
        pass
    for library in threadpoolctl.threadpool_info():
        if library["user_api"] == "blas":
            choices[f"{library['prefix']} {library['version']}"] = library.get("architecture")
    return choices


def cpu_generation(conditions: dict) -> str:
    """A run's processor as a table shows it, ``"family 25 model 17, avx512f"``: the generation and the widest vector
    extension in its ``cpu_signature`` (hosts of one generic model name can differ in both), or ``""`` for a record
    kept before the signature was."""
    signature = conditions.get("cpu_signature")
    if not signature:
        return ""
    generation, _, flags = signature.partition("; ")
    widest = next((flag for flag in ("avx512f", "avx2", "avx") if flag in flags.split()), None)
    return ", ".join(part for part in (generation.split(" stepping")[0], widest) if part)


def library_versions(names: Sequence[str] = NUMERIC_LIBRARIES) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (``None`` when it is not installed), read from the
    package metadata without importing it."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def results_dir() -> Path:
    path = outputs_dir() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_default_index(index: pd.Index) -> bool:
    """Whether ``index`` is the unnamed ``0, 1, 2, ...`` a DataFrame gets when none is given (it says nothing)."""
    return isinstance(index, pd.RangeIndex) and index.name is None and index.start == 0 and index.step == 1


def table_record(frame: pd.DataFrame) -> dict:
    """A DataFrame as ``{"columns": [...], "rows": [[...], ...]}``: its index kept as the first column(s) unless it is
    the default unnamed ``0, 1, 2, ...`` (NumPy values and NaN are made standard JSON as the record is written)."""
    frame = frame if _is_default_index(frame.index) else frame.reset_index()
    return {
        "columns": [str(c) for c in frame.columns],
        "rows": [list(row) for row in frame.itertuples(index=False)],
    }


def write_results(
    notebook: str, parameters: dict, metrics: dict, tables: dict[str, pd.DataFrame] | None = None, notes: str = ""
) -> Path:
    """Write one notebook's record (standard JSON: :func:`course_utils.json_files.write_json`).

    Args:
        notebook: notebook stem, e.g. ``"01_baseline_clip"``.
        parameters: the parameters that produced the numbers (the papermill parameters cell).
        metrics: flat ``name -> number`` dict (what later notebooks and the report compare).
        tables: named DataFrames to show in the report.
        notes: one or two sentences for the report.
    """
    import torch

    record = {
        "notebook": notebook,
        "parameters": dict(parameters),
        "metrics": dict(metrics),
        "tables": {name: table_record(frame) for name, frame in (tables or {}).items()},
        "notes": notes,
        "environment": {
            "python": platform.python_version(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "cpu": cpu_model(),
            "cpu_signature": cpu_signature(),  # one model name can be several processors (rounding differs)
            "kernels": kernel_choices(),  # and each library picks its kernels for it in its own way
            "libraries": library_versions(),  # torch's among them
            "torch_threads": torch.get_num_threads(),  # a sum over more threads rounds in another order
            "constraints": environment_pins(),  # and every other distribution: as pinned, or which differ
        },
    }
    path = results_dir() / f"{notebook}.json"
    write_json(path, record)
    return path


# The keys every notebook record has (``write_results``): what the readers of records index.
NOTEBOOK_RECORD_KEYS = {"notebook": str, "parameters": dict, "metrics": dict}


def load_record(path: Path, regenerate: str, required: Sequence[str] | Mapping[str, type] = ()) -> dict:
    """The JSON object in ``path`` (a record, a run's timings), with the keys ``required`` (and their JSON types, where
    ``required`` maps each to one: see :func:`course_utils.json_files.read_json_object`).

    Raises:
        SystemExit: ``path`` is not a JSON object (a damaged or hand-edited file) or lacks a ``required`` key (a
            JSON file of another kind in a records folder); the message names the file and ``regenerate``, the
            command that writes it again (:func:`course_utils.json_files.read_json_object`'s message, for commands).
    """
    try:
        return read_json_object(path, "record", f"write it again with {regenerate}", fields=required)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def rerun_command(stems: Sequence[str], seeds: Sequence[int] = ()) -> str:
    """The runner's command that writes the records of notebooks ``stems`` again (under ``seeds`` where given)."""
    numbers = ",".join(sorted({stem[:2] for stem in stems}))
    seeds_option = f" --seeds {','.join(map(str, seeds))}" if seeds else ""
    return f"`python -m course_utils.run --only {numbers}{seeds_option}` (with the --profile of the run that wrote it)"


def read_results(directory: Path | None = None) -> list[dict]:
    """All records, ordered by notebook name (``SystemExit`` naming a damaged one, or one whose tables or seed
    aggregate the report could not show)."""
    directory = directory or results_dir()
    keys = {**NOTEBOOK_RECORD_KEYS, "tables": dict}  # the report shows the tables too
    records = []
    for path in sorted(directory.glob("*.json")):
        command = rerun_command([path.stem])
        remedy = f"write it again with {command}"  # load_record's remedy, for the checks below
        record = load_record(path, command, keys)
        try:
            for name, table in record["tables"].items():
                check_json_object(
                    table, f"{path}: table {name!r}", "table", remedy, fields={"columns": list, "rows": list}
                )
            if "seeds" in record:  # the seed aggregate (aggregate_seeds)
                seeds = check_json_object(
                    record["seeds"],
                    f"{path}: seeds",
                    "seed aggregate",
                    remedy,
                    fields={"seeds": list, "mean": dict, "std": dict},
                )
                if not seeds["seeds"]:
                    raise ValueError(f"{path}: seeds lists no seed; {remedy}")
        except ValueError as err:
            raise SystemExit(str(err)) from None
        records.append(record)
    return records


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Metric names that are timings (latencies, seconds, throughputs): the ones a rerun on the same machine changes.
TIMING_METRIC = re.compile(r"latency|seconds|runtime|_s$|_s_|per_s|(^|[_/])ms([_/]|$)")


def is_timing_metric(name: str) -> bool:
    """True for a metric that measures time (``latency_ms/dual``, ``runtime_s``, ``train_images_per_s_1proc``): a
    rerun gives another value, so comparisons of reruns leave it out."""
    return TIMING_METRIC.search(name) is not None


def same_metric_value(first, second) -> bool:
    """Whether two runs gave a metric the same value; NaN (``null`` in a record) equals NaN."""
    nan = (isinstance(first, float) and math.isnan(first)) and (isinstance(second, float) and math.isnan(second))
    return first == second or nan


def timing_key(stem: str, seed: int | None = None) -> str:
    """A run's timings-file key: the notebook's stem for the first seed's run, ``"<stem> (seed <s>)"`` for a further
    seed's (``python -m course_utils.run --seeds``)."""
    return stem if seed is None else f"{stem} (seed {seed})"


def parse_timing_key(key: str) -> tuple[str, int | None]:
    """``(stem, seed)`` of a :func:`timing_key`; ``seed`` is ``None`` for the first seed's run."""
    further = re.fullmatch(r"(.+) \(seed (\d+)\)", key)
    return (further.group(1), int(further.group(2))) if further else (key, None)


def merge_timings(run_timings: Path, kept_timings: Path) -> dict[str, float]:
    """Fold a run's timings file into the kept one (``make records``): the run's notebooks replace every timing
    of theirs (any seed), and the other notebooks keep theirs, so a partial run (``--only 08``) leaves the
    runtimes of the records it did not rewrite. Returns the merged timings, written to ``kept_timings``."""
    run = read_json_object(run_timings, "timings file", "rerun the notebooks with python -m course_utils.run")
    kept = read_json_object(kept_timings, "timings file", f"delete {kept_timings}") if kept_timings.exists() else {}
    rerun = {parse_timing_key(key)[0] for key in run}
    merged = {key: seconds for key, seconds in kept.items() if parse_timing_key(key)[0] not in rerun} | run
    write_json(kept_timings, merged)
    return merged


def aggregate_seeds(folders: dict[int, Path], notebooks: Sequence[str] | None = None) -> list[Path]:
    """Add a ``seeds`` section to the record of each of ``notebooks`` in the first folder.

    ``folders`` maps seed -> results folder, the first entry being the run whose record (metrics, tables,
    figures) stays the notebook's record. For each metric that is a number under every seed the section holds
    ``values`` (one per seed, in ``folders`` order), ``mean`` and ``std`` (sample standard deviation, ddof=1);
    metrics that are missing or not a number under some seed are listed in ``not_aggregated``, never dropped
    silently. ``notebooks``: the stems of the notebooks just run under every seed (default: every record of the
    first folder), so that records left in the folders by an earlier run are not mixed in. Returns the records
    rewritten.

    Raises:
        ValueError: a record of ``notebooks`` is missing under some seed (every missing path is named), unreadable,
            or produced with another seed than its folder's; nothing is rewritten then.
    """
    seeds = list(folders)
    if len(seeds) < 2:
        raise ValueError(f"aggregating seeds needs at least two seeds, got {seeds}")
    stems = sorted(notebooks) if notebooks is not None else sorted(p.stem for p in folders[seeds[0]].glob("*.json"))
    missing = [folders[seed] / f"{stem}.json" for stem in stems for seed in seeds]
    missing = [path for path in missing if not path.exists()]
    if missing:
        raise ValueError(
            f"no record to aggregate over seeds {seeds} at {', '.join(map(str, missing))}: rerun "
            f"{rerun_command([path.stem for path in missing], seeds)}"
        )
    loaded = {}  # every record read and checked before the first is rewritten: a refusal leaves every folder as it was
    for stem in stems:
        paths = [folders[seed] / f"{stem}.json" for seed in seeds]
        loaded[stem] = [load_record(p, rerun_command([stem], seeds), NOTEBOOK_RECORD_KEYS) for p in paths]
        for seed, record, record_path in zip(seeds, loaded[stem], paths):
            if record["parameters"].get("seed") != seed:
                raise ValueError(
                    f"{record_path} was produced with seed {record['parameters'].get('seed')!r}, "
                    f"not {seed}: rerun it with --seeds"
                )
    written = []
    for stem, records in loaded.items():
        path = folders[seeds[0]] / f"{stem}.json"
        names = list(records[0]["metrics"])
        numeric = [name for name in names if all(_is_number(r["metrics"].get(name)) for r in records)]
        values = {name: [r["metrics"][name] for r in records] for name in numeric}
        records[0]["seeds"] = {
            "seeds": seeds,
            "values": values,
            "mean": {name: statistics.fmean(v) for name, v in values.items()},
            "std": {name: statistics.stdev(v) for name, v in values.items()},
            "not_aggregated": [name for name in names if name not in values],
        }
        write_json(path, records[0])
        written.append(path)
    return written


def markdown_table_text(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A markdown table: the header of ``columns``, its separator, then one line per row of formatted ``cells``.

    The one table layout of the course's reports (``RESULTS.md``, the benchmarks' README sections).
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _markdown_table(columns: list[str], rows: list[list]) -> str:
    """``RESULTS.md``'s table of ``rows``: floats to 4 significant digits, ``None`` left empty."""

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    return markdown_table_text(columns, [[cell(v) for v in row] for row in rows])


def _metrics_table(record: dict) -> str:
    """name | value, or with a ``seeds`` section name | value of the first seed | mean | std | seeds."""
    metrics, seeds = record["metrics"], record.get("seeds")
    if not seeds:
        return _markdown_table(["metric", "value"], [[k, v] for k, v in metrics.items()])
    first = seeds["seeds"][0]
    rows = [[k, v, seeds["mean"].get(k), seeds["std"].get(k)] for k, v in metrics.items()]
    columns = ["metric", f"seed {first}", f"mean over seeds {', '.join(map(str, seeds['seeds']))}", "std"]
    return _markdown_table(columns, rows)


def build_report(
    directory: Path | None = None, out: Path | None = None, title: str = "Results", profile: str | None = None
) -> Path:
    """Gather every notebook record into one markdown report (``outputs/RESULTS.md`` by default); with ``profile``,
    only that profile's records, the others in the folder (an earlier run of another profile into the same
    ``--output-dir``) named as left out."""
    records, others = [], []
    for record in read_results(directory):
        of_profile = profile is None or record["parameters"].get("profile") == profile
        (records if of_profile else others).append(record)
    profiles = {r["parameters"].get("profile") for r in records} - {None}
    parts = [
        f"# {title}",
        "",
        f"Profile: {', '.join(sorted(profiles)) or 'n/a'}. One section per notebook; "
        "numbers are read from the records in `results/` beside this report.",
        "",
    ]
    if others:
        left_out = ", ".join(f"{r['notebook']} ({r['parameters'].get('profile')})" for r in others)
        parts += [f"Left out, records of another profile in the same folder: {left_out}.", ""]
    for record in records:
        parts += [f"## {record['notebook']}", ""]
        if record.get("notes"):
            parts += [record["notes"], ""]
        for name, table in record["tables"].items():
            parts += [f"**{name}**", "", _markdown_table(table["columns"], table["rows"]), ""]
        if record["metrics"]:
            parts += ["**metrics**", "", _metrics_table(record), ""]
    out = out or outputs_dir() / "RESULTS.md"
    out.write_text("\n".join(parts))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m course_utils.results merge-timings RUN KEPT``: :func:`merge_timings` (``make records``)."""
    parser = argparse.ArgumentParser(description="Fold a run's timings file into the kept one.")
    parser.add_argument("command", choices=["merge-timings"])
    parser.add_argument("run_timings", type=Path, help="the run's timings, e.g. outputs/timings-full.json")
    parser.add_argument("kept_timings", type=Path, help="the committed timings, e.g. results/full/timings-full.json")
    args = parser.parse_args(argv)
    merged = merge_timings(args.run_timings, args.kept_timings)
    print(f"{args.kept_timings}: {len(merged)} timings, those of {args.run_timings} in place of their notebooks'")


if __name__ == "__main__":
    main()
