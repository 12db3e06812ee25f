"""The golden numbers of the test suite's two profiles: every notebook's metrics (timings aside) and parameters from
one run of ``ci`` (the drawings) and one of ``real-ci`` (the real photos of ``../shared/data``), kept in
``tests/golden/<profile>-metrics.json`` and compared value for value with every later run of that profile in the test
suite (``tests/test_notebooks.py``, ``tests/test_real_ci.py``), so a change that moves a number without meaning to is
caught when it is made.

A run's numbers repeat exactly only on the same numerics: the processor's family, model and instruction sets
(``cpu_signature``), the kernels the libraries picked for it, the libraries' versions, Python's, and torch's thread
count (README › Reproducibility). A golden file names the numerics each notebook ran on; a notebook run on other
numerics is compared by its metric names and parameters only, and the check says which numerics differ. The folder
a run read its data from (``data_root``) is where that checkout keeps it, so it is not compared.

Rewritten only on purpose, after a ``make test`` whose moved numbers are all meant:
``make golden`` (``python -m course_utils.golden write [--profile real-ci]``), committed on its own with what moved and
why. ``python -m course_utils.golden check [--profile real-ci]`` lists what a run's records change.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from .json_files import read_json_object, write_json
from .paths import REPO_ROOT
from .results import is_timing_metric, read_results, same_metric_value

FORMAT = "course_utils.golden/1"
PROFILES = ("ci", "real-ci")  # the profiles the test suite runs every notebook in
# The parameters that say where a checkout keeps its data, not what the numbers were computed from.
CHECKOUT_PARAMETERS = ("data_root",)
# The parts of a record's environment (course_utils.results.write_results) that decide its numbers.
NUMERICS = ("python", "cpu_signature", "kernels", "libraries", "torch_threads")
REMEDY = "write it again with `make golden` after a run whose numbers are meant (python -m course_utils.golden)"


def golden_path(profile: str) -> Path:
    """Where the golden numbers of ``profile`` are kept."""
    return REPO_ROOT / "tests" / "golden" / f"{profile}-metrics.json"


def suite_records(profile: str) -> Path:
    """Where the test suite's run of ``profile`` writes its records (``make test``)."""
    return REPO_ROOT / "outputs" / profile / "results"


def records_by_notebook(folder: Path, profile: str) -> dict[str, dict]:
    """``{notebook stem: record}`` of the records in ``folder`` (a run's ``results/``); ``ValueError`` naming the
    folder when it holds none, or a record of another profile than ``profile``."""
    records = {record["notebook"]: record for record in read_results(folder)}
    if not records:
        raise ValueError(f"{folder} holds no notebook records; run the notebooks first (make test)")
    others = sorted(stem for stem, record in records.items() if record["parameters"].get("profile") != profile)
    if others:
        raise ValueError(
            f"{folder}: {', '.join(others)} ran in another profile than {profile}; give a {profile} run's records"
        )
    return records


def numerics(record: dict) -> dict:
    """The numerics (:data:`NUMERICS`) a record was computed on. Each notebook's record names its own: ``kernels``
    lists the BLAS libraries loaded in its kernel, and SciPy's OpenBLAS only where the notebook imported SciPy."""
    environment = record.get("environment", {})
    return {key: environment.get(key) for key in NUMERICS}


def golden_numbers(records: Mapping[str, dict], profile: str) -> dict:
    """The golden file's content: each notebook's numerics, parameters but :data:`CHECKOUT_PARAMETERS` and metrics
    but the timings (:func:`course_utils.results.is_timing_metric`)."""
    return {
        "format": FORMAT,
        "profile": profile,
        "notebooks": {
            stem: {
                "numerics": numerics(record),
                "parameters": {
                    name: value for name, value in record["parameters"].items() if name not in CHECKOUT_PARAMETERS
                },
                "metrics": {name: value for name, value in record["metrics"].items() if not is_timing_metric(name)},
            }
            for stem, record in sorted(records.items())
        },
    }


def read_golden(path: Path, profile: str) -> dict:
    """The golden numbers of ``profile`` in ``path``; ``ValueError`` naming the file when it is missing, damaged, of
    another format or of another profile."""
    golden = read_json_object(path, "golden numbers file", REMEDY, FORMAT, {"profile": str, "notebooks": dict})
    if golden["profile"] != profile:
        raise ValueError(f"{path} holds the golden numbers of profile {golden['profile']}, not {profile}; {REMEDY}")
    return golden


def numerics_differences(golden: dict, records: Mapping[str, dict]) -> list[str]:
    """``"torch_threads: golden 1, this run 2 (01, 02)"``: each way in which the numerics of the run's notebooks
    differ from those the golden file names for them, with the notebooks (by number) that differ so."""
    notebooks: dict[tuple[str, str, str], list[str]] = {}
    for stem in sorted(golden["notebooks"].keys() & records.keys()):
        kept, run = golden["notebooks"][stem]["numerics"], numerics(records[stem])
        for key in NUMERICS:
            if kept.get(key) != run[key]:
                notebooks.setdefault((key, repr(kept.get(key)), repr(run[key])), []).append(stem[:2])
    return [
        f"{key}: golden {kept}, this run {run} ({', '.join(stems)})" for (key, kept, run), stems in notebooks.items()
    ]


def differences(golden: dict, records: Mapping[str, dict]) -> list[str]:
    """Each way the run differs from the golden numbers, one line each: a notebook or metric missing or new, a
    parameter changed, and a metric's value changed (NaN equal to NaN) in each notebook whose numerics are the ones
    the golden file names for it (:func:`numerics_differences` says where they are not)."""
    run = golden_numbers(records, golden["profile"])["notebooks"]
    lines = []
    for stem in sorted(golden["notebooks"].keys() | run.keys()):
        if stem not in run or stem not in golden["notebooks"]:
            lines.append(f"{stem}: {'no record in this run' if stem not in run else 'not in the golden file'}")
            continue
        kept, now = golden["notebooks"][stem], run[stem]
        for name in sorted(kept["parameters"].keys() | now["parameters"].keys()):
            before, after = kept["parameters"].get(name), now["parameters"].get(name)
            if before != after:
                lines.append(f"{stem} parameter {name}: golden {before!r}, this run {after!r}")
        values = kept["numerics"] == now["numerics"]
        for name in sorted(kept["metrics"].keys() | now["metrics"].keys()):
            if name not in now["metrics"]:
                lines.append(f"{stem} {name}: no longer recorded (golden {kept['metrics'][name]!r})")
            elif name not in kept["metrics"]:
                lines.append(f"{stem} {name}: new, {now['metrics'][name]!r}")
            elif values and not same_metric_value(kept["metrics"][name], now["metrics"][name]):
                lines.append(f"{stem} {name}: golden {kept['metrics'][name]!r}, this run {now['metrics'][name]!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The test suite's golden numbers: write them, or check a run.")
    parser.add_argument("command", choices=("write", "check"))
    parser.add_argument("--profile", choices=PROFILES, default="ci")
    parser.add_argument("--records", type=Path, default=None, help="a run's results folder (default: the suite's)")
    parser.add_argument("--golden", type=Path, default=None, help="the golden file (default: the profile's)")
    args = parser.parse_args(argv)
    folder = args.records or suite_records(args.profile)
    path = args.golden or golden_path(args.profile)
    try:
        records = records_by_notebook(folder, args.profile)
        if args.command == "write":
            write_json(path, golden_numbers(records, args.profile))
            print(f"wrote the golden numbers of {len(records)} notebooks to {path}")
            return 0
        kept = read_golden(path, args.profile)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    found, other = differences(kept, records), numerics_differences(kept, records)
    if other:
        print("other numerics than the golden file's; there the metric names and parameters were compared, not values:")
        print("\n".join(f"  {line}" for line in other))
    where = " (values where the numerics are the same)" if other else ""
    print("\n".join(found) if found else f"the records in {folder} match {path}{where}")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
