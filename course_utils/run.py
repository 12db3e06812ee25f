"""Run the course's notebooks with papermill: ``python -m course_utils.run --profile ci|full [--only 01,02]``.

Executes ``notebooks/NN_*.ipynb`` in order, injecting ``profile`` plus the profile's overrides from
``notebooks/profiles/<notebook>.json``, with a per-cell timeout and a named kernel. Executed copies go to
``outputs/<notebook>.ipynb``; each notebook writes its metrics to ``outputs/results/<notebook>.json``; the
run ends by gathering them into ``outputs/RESULTS.md``. A failing cell stops the run with the notebook, the
cell and the error.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from .paths import REPO_ROOT, outputs_dir
from .results import build_report

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILES = ("ci", "full")
KERNEL = "fashion-clip-course"


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message names the notebook, the cell and the error."""


def discover(only: list[str] | None = None) -> list[Path]:
    """Notebooks ``NN_*.ipynb`` in order, optionally only those whose number is in ``only``."""
    notebooks = sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        notebooks = [p for p in notebooks if p.name[:2] in only]
        missing = set(only) - {p.name[:2] for p in notebooks}
        if missing:
            raise SystemExit(f"no notebook numbered {sorted(missing)} in {NOTEBOOK_DIR}")
    return notebooks


def profile_parameters(notebook: Path, profile: str) -> dict:
    """``{"profile": profile}`` plus the overrides in ``notebooks/profiles/<stem>.json`` for that profile."""
    if profile not in PROFILES:
        raise SystemExit(f"unknown profile {profile!r}; choose one of {PROFILES}")
    parameters = {"profile": profile}
    overrides = NOTEBOOK_DIR / "profiles" / f"{notebook.stem}.json"
    if overrides.exists():
        parameters.update(json.loads(overrides.read_text()).get(profile, {}))
    return parameters


def parse_assignments(assignments: list[str]) -> dict:
    """``["dataset=fashion-product-small", "test_size=200"]`` -> dict, values parsed as JSON when possible."""
    parameters = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise SystemExit(f"--set expects name=value, got {assignment!r}")
        name, value = assignment.split("=", 1)
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name] = value
    return parameters


def notebook_parameters(notebook: Path) -> set[str]:
    """The names assigned in the notebook's cell tagged ``parameters`` (read by ``papermill.inspect_notebook``)."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def check_parameter_names(notebooks: list[Path], names: list[str]) -> None:
    """Fail, listing close matches, when a ``--set`` name is a parameter of none of the selected notebooks.

    papermill injects any name it is given, so a typo (``top_kk=3``) would otherwise run every notebook with the
    default value and exit 0.
    """
    known = set().union(*(notebook_parameters(notebook) for notebook in notebooks)) if notebooks else set()
    unknown = [name for name in names if name not in known]
    if not unknown:
        return
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        lines.append(f"  {name}: " + (f"did you mean {' or '.join(close)}?" if close else "no close match"))
    selected = ", ".join(notebook.stem for notebook in notebooks)
    raise SystemExit(
        f"--set names no parameter of the selected notebooks ({selected}); nothing was run:\n" + "\n".join(lines)
        + f"\nparameters they take: {', '.join(sorted(known))}"
    )


def check_output_dir(option: str) -> Path:
    """The outputs folder (``outputs_dir()``), created and probed with a temporary file; ``SystemExit`` if unwritable.

    Done before any notebook starts, so a mistyped or read-only ``--output-dir`` is reported in one line naming
    it instead of a traceback. ``option`` names where the folder came from, for the message.
    """
    try:
        path = outputs_dir()
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        target = os.environ.get("FASHION_COURSE_OUTPUTS", "outputs/")
        where = f" at {err.filename}" if err.filename and str(err.filename) != target else ""
        reason = "it is a file, not a folder" if isinstance(err, FileExistsError) else err.strerror or str(err)
        raise SystemExit(f"{option} {target}: cannot write there ({reason}{where}); choose a writable folder") from None
    return path


def check_kernel(name: str) -> None:
    """Fail fast, saying what to do, when the kernel is not registered or its Python no longer exists.

    ``make setup`` registers the kernel inside ``.venv`` (``--sys-prefix``), so every checkout has its own; a
    kernel registered elsewhere (e.g. ``--user`` from another checkout) can point at an interpreter that is gone.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise SystemExit(f"Jupyter kernel {name!r} is not registered; run `make setup` (or "
                         f"`python -m ipykernel install --sys-prefix --name {name}`), or pass --kernel") from None
    interpreter = spec.argv[0]
    if os.path.isabs(interpreter) and not os.path.exists(interpreter):
        raise SystemExit(f"Jupyter kernel {name!r} ({spec.resource_dir}) runs {interpreter}, which does not exist; "
                         f"re-register it with `python -m ipykernel install --sys-prefix --name {name}` "
                         f"from this checkout's .venv")


def execute(notebook: Path, output: Path, parameters: dict, kernel: str, cell_timeout: int) -> float:
    """Execute one notebook; returns seconds taken. Raises :class:`NotebookFailed` on a failing cell."""
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=kernel,
                                   execution_timeout=cell_timeout, progress_bar=False, cwd=str(NOTEBOOK_DIR))
    except PapermillExecutionError as err:
        raise NotebookFailed(
            f"{notebook.name} failed in cell {err.cell_index} (execution count {err.exec_count}): "
            f"{err.ename}: {err.evalue}\nExecuted copy with the traceback: {output}"
        ) from None
    except CellTimeoutError:
        raise NotebookFailed(
            f"{notebook.name}: a cell ran longer than --cell-timeout {cell_timeout} s (a busy machine, or a cold "
            f"cache that trains models first); rerun with a larger --cell-timeout. Executed copy so far: {output}"
        ) from None
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="ci", choices=PROFILES, help="ci: small and fast; full: meaningful sizes")
    parser.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 01,02")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="NAME=VALUE",
                        help="extra parameter for every notebook (e.g. dataset=fashion-product-small)")
    parser.add_argument("--kernel", default=KERNEL, help="Jupyter kernel name (make setup registers it)")
    parser.add_argument("--cell-timeout", type=int, default=1200, help="seconds one cell may run")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where executed notebooks, results and RESULTS.md go (default outputs/)")
    args = parser.parse_args(argv)

    if args.output_dir is not None:
        os.environ["FASHION_COURSE_OUTPUTS"] = str(args.output_dir.expanduser().resolve())
    out = check_output_dir("--output-dir" if args.output_dir is not None else "outputs folder")
    extra = parse_assignments(args.assignments)
    notebooks = discover([n for n in args.only.split(",") if n])
    check_parameter_names(notebooks, list(extra))
    check_kernel(args.kernel)
    timings = {}
    for notebook in notebooks:
        parameters = {**profile_parameters(notebook, args.profile), **extra}
        print(f"▶ {notebook.name}  {parameters}", flush=True)
        try:
            timings[notebook.stem] = execute(notebook, out / notebook.name, parameters, args.kernel, args.cell_timeout)
        except NotebookFailed as err:
            print(f"✗ {err}", file=sys.stderr, flush=True)
            return 1
        print(f"  done in {timings[notebook.stem]:.1f} s", flush=True)
    (out / f"timings-{args.profile}.json").write_text(json.dumps(timings, indent=2) + "\n")
    report = build_report(out / "results", out / "RESULTS.md", title=f"fashion-clip-course results ({args.profile} profile)")
    print(f"all {len(timings)} notebooks ran in {sum(timings.values()):.0f} s; report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
