"""Run the course's notebooks with papermill: ``python -m course_utils.run --profile ci|full|real [--only 01,02]``.

Executes ``notebooks/NN_*.ipynb`` in order, injecting ``profile`` plus the profile's overrides from
``notebooks/profiles/<notebook>.json``, with a per-cell timeout and a named kernel. Executed copies go to
``outputs/<notebook>.ipynb``; each notebook writes its metrics to ``outputs/results/<notebook>.json`` and its
figures to ``figures/<notebook>/``; the run ends by gathering the metrics into ``outputs/RESULTS.md``. That is the
full profile (``make run``); every other profile writes all of it to ``outputs/<profile>/`` instead, figures
included, and ``--output-dir`` sends it elsewhere (:func:`profile_environment`). A failing cell stops the run with the
notebook, the cell and the error.

``--profile real --set data_root=DIR`` runs every notebook on a real catalogue with the course CLIP pretrained on
its train photos (``pretrained="photo"``); its outputs and figures go to ``outputs/real/``.

``--seeds 0,1,2`` repeats the experiments over seeds: the first seed's run is the usual one (executed notebooks,
records, figures); each further seed reruns the experiment notebooks (``SEED_REPEATED``) into the outputs
folder's ``seeds/seed-<s>/`` (figures there too), and the first run's records gain each metric's values, mean and
standard deviation over the seeds (:func:`course_utils.results.aggregate_seeds`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from .checks import whole_number
from .json_files import write_json
from .paths import REPO_ROOT, env_path, folder_problem, outputs_dir
from .results import aggregate_seeds, build_report, load_record, timing_key
from .seeding import check_seed
from .tasks.photo_pretrain import PHOTO_RECIPE

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PROFILES = ("ci", "full", "real", "real-ci")
# The real-photo profiles: every notebook on a real catalogue (``--set data_root=...``) with the course CLIP
# pretrained on its train photos. Each takes its sizes from another profile (real: full's, real-ci: ci's), then
# the ``real`` entries (REAL_SHARED's, then the notebook profile file's: its queries), then its own entries.
REAL_PROFILES = {"real": "full", "real-ci": "ci"}
# What every notebook shares in the real profiles, so that it is stated once: the Kaggle layout and the course
# CLIP pretrained on its photos with the recipe's tower; real-ci (the test suite's run) also keeps fewer test items.
REAL_SHARED = {
    "real": {"dataset": "fashion-product-small", "model": PHOTO_RECIPE.model, "pretrained": "photo"},
    "real-ci": {"test_size": 300},
}
KERNEL = "fashion-clip-course"
# The notebooks whose comparisons the course states (findings, claims test): repeated under every seed of --seeds.
# 07 (the demo's latencies) and 08 (scaling measurements) run once, under the first seed.
SEED_REPEATED = ("01", "02", "03", "04", "05", "06")


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


def profile_file(notebook: Path) -> Path:
    """``notebooks/profiles/<stem>.json``, where ``notebook``'s overrides for each profile are written."""
    return NOTEBOOK_DIR / "profiles" / f"{notebook.stem}.json"


def profile_overrides(notebook: Path) -> dict:
    """:func:`profile_file`'s content: each profile's overrides of the notebook's parameters (``{}`` for a notebook
    without one: it runs with its parameter cell's defaults in ci and full, and not in the real profiles)."""
    path = profile_file(notebook)
    return load_record(path, "an editor (it is hand-written; `git diff` shows what changed)") if path.exists() else {}


def check_profile_files(notebooks: list[Path]) -> None:
    """Fail, naming the file, when a notebook's profile file has an entry for no profile (a typo such as ``"Ci"``
    would leave its overrides unused) or sets a name that is not one of the notebook's parameters (papermill
    injects it anyway and only warns): every entry of every profile is checked, not only the one that runs."""
    for notebook in notebooks:
        by_profile, path = profile_overrides(notebook), profile_file(notebook)
        unknown = sorted(set(by_profile) - set(PROFILES))
        if unknown:
            raise SystemExit(f"{path}: entries {unknown} are no profile; name one of {PROFILES}")
        names = {name for entries in by_profile.values() for name in entries}
        if "real" in by_profile:  # it runs in the real profiles, with their shared entries
            names |= {name for entries in REAL_SHARED.values() for name in entries}
        strays = sorted(names - set(parameter_defaults(notebook)))
        if strays:
            raise SystemExit(f"{path}: {strays} are not parameters of {notebook.name}; fix the names")


def profile_parameters(notebook: Path, profile: str) -> dict:
    """``{"profile": profile}`` plus the overrides in ``notebooks/profiles/<stem>.json`` for that profile (for a
    real profile, layered as :data:`REAL_PROFILES` says, with :data:`REAL_SHARED` under each real layer)."""
    if profile not in PROFILES:
        raise SystemExit(f"unknown profile {profile!r}; choose one of {PROFILES}")
    parameters = {"profile": profile}
    by_profile = profile_overrides(notebook)
    if profile in REAL_PROFILES:
        parameters.update(by_profile.get(REAL_PROFILES[profile], {}))
        for layer in dict.fromkeys(["real", profile]):
            parameters.update({**REAL_SHARED[layer], **by_profile.get(layer, {})})
    else:
        parameters.update(by_profile.get(profile, {}))
    return parameters


def parameter_defaults(notebook: Path) -> dict:
    """The defaults of ``notebook``'s cell tagged ``parameters``: each name assigned there with its value (read by
    ``papermill.inspect_notebook``, parsed as a Python literal), before any profile changes it."""
    import papermill

    defaults = {}
    for name, parameter in papermill.inspect_notebook(str(notebook)).items():
        try:
            defaults[name] = ast.literal_eval(parameter["default"])
        except (ValueError, SyntaxError):
            raise SystemExit(
                f"{notebook.name}: its parameters cell sets {name} = {parameter['default']}, which is not a Python "
                "literal (a number, string, True/False/None, or a list, tuple or dict of them); papermill injects "
                "values over those defaults, so write it as a literal there and compute the rest in a later cell"
            ) from None
    return defaults


def notebook_settings(notebook: Path, profile: str) -> dict:
    """Every parameter ``notebook`` runs with under ``profile``: :func:`parameter_defaults` updated with
    :func:`profile_parameters`.

    For scripts that repeat a notebook's recipe (``benchmarks/``): they read it here instead of copying it.
    """
    return {**parameter_defaults(notebook), **profile_parameters(notebook, profile)}


def in_profile(notebooks: list[Path], profile: str) -> list[Path]:
    """The notebooks that run in ``profile``: all for ci/full; for a real profile those whose profile file has a
    ``real`` entry (08, about scale rather than photos, has none; nor has a notebook without a profile file).
    ``SystemExit`` when none is left."""
    if profile not in REAL_PROFILES:
        return notebooks
    kept = [n for n in notebooks if "real" in profile_overrides(n)]
    for notebook in sorted(set(notebooks) - set(kept)):
        print(f"· {notebook.name} does not run in the {profile} profile (no 'real' entry in its profile file)")
    if not kept:
        raise SystemExit(f"none of {[n.stem for n in notebooks]} runs in the {profile} profile")
    return kept


def profile_environment(profile: str, extra: dict, output_dir: Path | None) -> dict[str, str]:
    """Where a run of ``profile`` writes, decided before any notebook starts: the ``FASHION_COURSE_OUTPUTS`` and
    ``FASHION_COURSE_FIGURES`` that :func:`main` sets for the run's kernels.

    The full profile (``make run``) writes to ``outputs/`` and its slide-ready figures to the committed
    ``figures/``. Every other profile writes to ``outputs/<profile>/``, figures in its ``figures/``: a quick ci run
    never replaces the full run's records (``make records`` keeps those) or the committed figures, and figures of
    a real dataset's photos, whose licence is not the course's, stay out of ``figures/``. ``--output-dir`` takes a
    run's figures along in every profile; ``FASHION_COURSE_FIGURES``, when set, still decides where the first seed's
    run puts them (each further seed of ``--seeds`` keeps its figures in its own ``seeds/seed-<s>/figures/``).

    Raises:
        SystemExit: a real profile without ``--set data_root=...`` (says what to add), or an ``output_dir`` that is
            the repository itself or inside ``notebooks/``.
    """
    if profile in REAL_PROFILES and not extra.get("data_root"):
        raise SystemExit(
            f"the {profile} profile runs on a real catalogue: add --set data_root=/path/to/"
            "fashion-product-small (Kaggle layout: styles.csv + images/<id>.jpg; README › Real photos)"
        )
    writes_committed_figures = output_dir is None and profile == "full"
    if output_dir is None:
        output_dir = outputs_dir(create=False) if profile == "full" else outputs_dir(create=False) / profile
    output_dir = output_dir.expanduser().resolve()
    if output_dir == REPO_ROOT or output_dir.is_relative_to(NOTEBOOK_DIR):
        raise SystemExit(
            f"--output-dir {output_dir}: the executed notebooks would replace the course's own (notebooks/) or the "
            "run would write into the committed figures/ and results/; choose a folder such as outputs/mine"
        )
    own_figures = REPO_ROOT / "figures" if writes_committed_figures else output_dir / "figures"
    figures = env_path("FASHION_COURSE_FIGURES", own_figures)
    return {"FASHION_COURSE_OUTPUTS": str(output_dir), "FASHION_COURSE_FIGURES": str(figures)}


def parse_assignments(assignments: list[str]) -> dict:
    """``["dataset=fashion-product-small", "test_size=200", "tune_encoders=True"]`` -> dict: each value parsed as
    JSON (``200``, ``null``, ``true``) or else as a Python literal, as the parameter cells write them (``None``,
    ``True``, ``(1, 5)``); anything else stays a string. A tuple becomes a list: papermill would inject it as the
    string ``"(1, 5)"``."""
    parameters = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise SystemExit(f"--set expects name=value, got {assignment!r}")
        name, value = assignment.split("=", 1)
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            try:
                parameters[name] = tuples_as_lists(ast.literal_eval(value))
            except (ValueError, SyntaxError):
                parameters[name] = value
    return parameters


def tuples_as_lists(value: object) -> object:
    """``value`` with every tuple in it turned into a list: papermill writes a list into the notebook as a list, but
    a tuple as the string ``"(0.5,)"``, which the notebook's own checks then refuse."""
    if isinstance(value, (list, tuple)):
        return [tuples_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: tuples_as_lists(item) for key, item in value.items()}
    return value


def comma_list(text: str, option: str, example: str) -> list[str]:
    """``"01, 02"`` -> ``["01", "02"]``: the items of a comma-separated option, spaces around them dropped; ``[]``
    for an option not given (``""``). ``SystemExit`` naming ``option`` when it is given but names nothing
    (``","``): running everything, as if it were absent, is not what was asked."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if text and not items:
        raise SystemExit(
            f"{option} {text!r} names nothing: give comma-separated values such as {example}, or leave it out"
        )
    return items


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``SystemExit`` naming ``--seeds`` for anything else, a seed NumPy refuses
    (:func:`course_utils.seeding.check_seed`) or a repeated seed."""
    try:
        seeds = [int(part) for part in comma_list(text, "--seeds", "0,1,2")]
    except ValueError:
        raise SystemExit(f"--seeds expects comma-separated integers such as 0,1,2, got {text!r}") from None
    for seed in seeds:
        refuse_bad_seed(seed, f"--seeds {text!r}")
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {text!r} repeats a seed")
    return seeds


def refuse_bad_seed(seed: int, option: str) -> None:
    """``SystemExit`` naming ``option`` for a seed the notebooks' ``seed_everything`` would refuse
    (:func:`course_utils.seeding.check_seed`): said before any notebook starts, not in notebook 01's kernel."""
    try:
        check_seed(seed)
    except ValueError as err:
        raise SystemExit(f"{option}: {err}; nothing was run") from None


@contextlib.contextmanager
def environment(**variables: str):
    """Set environment variables (inherited by the notebook kernels) for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_parameter_names(notebooks: list[Path], names: list[str]) -> None:
    """Fail, listing close matches, when a ``--set`` name is a parameter of none of the selected notebooks.

    papermill injects any name it is given, so a typo (``top_kk=3``) would otherwise run every notebook with the
    default value and exit 0.
    """
    known = set().union(*(parameter_defaults(notebook) for notebook in notebooks)) if notebooks else set()
    unknown = [name for name in names if name not in known]
    if not unknown:
        return
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        lines.append(f"  {name}: " + (f"did you mean {' or '.join(close)}?" if close else "no close match"))
    selected = ", ".join(notebook.stem for notebook in notebooks)
    raise SystemExit(
        f"--set names no parameter of the selected notebooks ({selected}); nothing was run:\n"
        + "\n".join(lines)
        + f"\nparameters they take: {', '.join(sorted(known))}"
    )


# What a --set value may be, by the type of the parameter's default (a default of None takes anything): a True/False
# switch takes only True or False (its ``if`` would take any non-empty string, "False" and "no" included, as True);
# a number takes a number of its kind, an integer where a float is expected too; a list, a list or a tuple.
ACCEPTED_TYPES = {
    bool: ((bool,), "True or False"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
    list: ((list, tuple), "a list such as [1, 2]"),
}


def check_parameter_types(notebooks: list[Path], parameters: dict) -> None:
    """Fail, naming the notebook and the parameter, when a ``--set`` value is not of the kind the parameter's default
    is (:data:`ACCEPTED_TYPES`), before any notebook starts: inside the notebook it would fail later with a
    traceback, or, for a True/False switch, run the wrong branch without a word. The kind is the parameter cell's,
    whatever the profile: a profile's override does not change what ``--set`` accepts."""
    for notebook in notebooks:
        defaults = parameter_defaults(notebook)
        for name, value in parameters.items():
            default = defaults.get(name)
            if default is None or type(default) not in ACCEPTED_TYPES:
                continue
            accepted, kind = ACCEPTED_TYPES[type(default)]
            if not isinstance(value, accepted) or (isinstance(value, bool) and type(default) is not bool):
                # --set text_query=1984 parses as a number: say how to keep it text
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                quote = (
                    f" (quote text that reads as a number: --set '{name}=\"...\"')"
                    if kind == "a string" and number
                    else ""
                )
                raise SystemExit(
                    f"--set {name}={value!r}: {notebook.stem}'s {name} is {kind}{quote} (its default: {default!r}); "
                    "nothing was run"
                )


def check_output_dir(option: str) -> Path:
    """The outputs folder (``outputs_dir()``), created and probed with a temporary file; ``SystemExit`` if unwritable.

    Done before any notebook starts, so a mistyped or read-only ``--output-dir`` is reported in one line naming
    it instead of a traceback. ``option`` names where the folder came from, for the message.
    """
    target = os.environ.get("FASHION_COURSE_OUTPUTS", "outputs/")
    try:
        path = outputs_dir(create=False)  # made here: outputs_dir's own error names the variable, not ``option``
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise SystemExit(
            f"{option} {target}: cannot write there ({folder_problem(err, target)}); choose a writable folder"
        ) from None
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
        raise SystemExit(
            f"Jupyter kernel {name!r} is not registered; run `make setup` (or "
            f"`python -m ipykernel install --sys-prefix --name {name}`), or pass --kernel"
        ) from None
    interpreter = spec.argv[0]
    if os.path.isabs(interpreter) and not os.path.exists(interpreter):
        raise SystemExit(
            f"Jupyter kernel {name!r} ({spec.resource_dir}) runs {interpreter}, which does not exist; "
            f"re-register it with `python -m ipykernel install --sys-prefix --name {name}` "
            f"from this checkout's .venv"
        )


def kernel_config():
    """The traitlets config of the runner's kernel managers: CurveZMQ encryption of the kernel's sockets wherever the
    installed libraries offer it.

    A kernel talks to the runner over TCP on localhost. jupyter_client 8.9 and later can give it CurveZMQ keys (with a
    pyzmq built with CurveZMQ, as PyPI's wheels are) but does not by default, and ipykernel 7.4 and later warns once per
    notebook, on the run's terminal, that its code and outputs then cross the sockets in plain text. ``"auto"`` gives
    keys to kernels whose kernelspec declares they take them (``make setup`` registers ours with ipykernel, which
    does). With an older jupyter_client, or a pyzmq without CurveZMQ, the config is empty and nothing changes."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    config = Config()
    if KernelManager.class_traits().get("transport_encryption") is not None and zmq.has("curve"):
        config.KernelManager.transport_encryption = "auto"
    return config


def execute(notebook: Path, output: Path, parameters: dict, kernel: str, cell_timeout: int) -> float:
    """Execute one notebook; returns seconds taken. Raises :class:`NotebookFailed` on a failing cell."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(notebook),
            str(output),
            parameters=parameters,
            kernel_name=kernel,
            config=kernel_config(),
            execution_timeout=cell_timeout,
            progress_bar=False,
            cwd=str(NOTEBOOK_DIR),
        )
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
    except DeadKernelError as err:
        raise NotebookFailed(
            f"{notebook.name}: its kernel died ({err}), most often killed for running out of memory; close other "
            f"programs, or run fewer notebooks per run with --only. Executed copy so far: {output}"
        ) from None
    return time.perf_counter() - start


def run_notebooks(
    notebooks: list[Path], out: Path, profile: str, extra: dict, kernel: str, cell_timeout: int
) -> dict[str, float] | None:
    """Execute ``notebooks`` in order into ``out``; seconds per notebook, or ``None`` after a failure (printed). Each
    notebook's record of an earlier run in ``out/results/`` is removed before it runs."""
    timings = {}
    for notebook in notebooks:
        parameters = {**profile_parameters(notebook, profile), **extra}
        # an earlier run's record would otherwise stand for this run's, should the notebook stop before writing its own
        (out / "results" / f"{notebook.stem}.json").unlink(missing_ok=True)
        print(f"▶ {notebook.name}  {parameters}", flush=True)
        try:
            timings[notebook.stem] = execute(notebook, out / notebook.name, parameters, kernel, cell_timeout)
        except NotebookFailed as err:
            print(f"✗ {err}", file=sys.stderr, flush=True)
            return None
        print(f"  done in {timings[notebook.stem]:.1f} s", flush=True)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--profile",
        default="ci",
        choices=PROFILES,
        help="ci: small and fast; full: meaningful sizes; real: real photos (--set data_root=...), "
        "real-ci: real sized for the tests",
    )
    parser.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 01,02")
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra parameter for every notebook (e.g. dataset=fashion-product-small)",
    )
    parser.add_argument(
        "--seeds",
        default="",
        help="comma-separated seeds, e.g. 0,1,2: the experiment notebooks "
        f"({', '.join(SEED_REPEATED)}) run under each, records gain mean and std over them",
    )
    parser.add_argument("--kernel", default=KERNEL, help="Jupyter kernel name (make setup registers it)")
    parser.add_argument(
        "--cell-timeout", type=whole_number(1), default=1200, help="seconds one cell may run (at least 1)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where executed notebooks, results, RESULTS.md and figures go (default: outputs/ and figures/ for "
        "the full profile, outputs/<profile>/ for the others)",
    )
    args = parser.parse_args(argv)

    extra, seeds = parse_assignments(args.assignments), parse_seeds(args.seeds)
    args.only = comma_list(args.only, "--only", "01,02")  # the notebook numbers, checked as --seeds is
    if seeds and "seed" in extra:
        raise SystemExit("give the seed either with --seeds or with --set seed=..., not both")
    if "profile" in extra:
        raise SystemExit(
            f"--set profile={extra['profile']}: give the profile with --profile (one of {', '.join(PROFILES)}), which "
            "also picks the profile's overrides and the folder the records go to; nothing was run"
        )
    option = "--output-dir" if args.output_dir is not None else "outputs folder"
    # set for this run's kernels only: main() called twice in one process (the tests) starts afresh each time
    with environment(**profile_environment(args.profile, extra, args.output_dir)):
        return run_profile(args, extra, seeds, check_output_dir(option))


def run_profile(args: argparse.Namespace, extra: dict, seeds: list[int], out: Path) -> int:
    """The run :func:`main` parsed: every notebook of ``args.only`` in ``args.profile`` under each of ``seeds``
    (the experiments of :data:`SEED_REPEATED` only, past the first), into ``out``; 0 when all ran, 1 when one
    failed or left no record to aggregate over the seeds (the error is printed)."""
    notebooks = in_profile(discover(args.only), args.profile)
    check_profile_files(notebooks)
    check_parameter_names(notebooks, list(extra) + (["seed"] if seeds else []))
    check_parameter_types(notebooks, extra)
    if "seed" in extra:  # an integer by now (check_parameter_types): its range is NumPy's
        refuse_bad_seed(extra["seed"], f"--set seed={extra['seed']!r}")
    check_kernel(args.kernel)
    experiments = [notebook for notebook in notebooks if notebook.name[:2] in SEED_REPEATED]
    once = [notebook.stem for notebook in notebooks if notebook not in experiments]
    if len(seeds) > 1 and once:
        print(
            f"{', '.join(once)}: run under seed {seeds[0]} only (--seeds repeats {', '.join(SEED_REPEATED)})",
            flush=True,
        )
    # a run that stops leaves no timings file and no report: neither can then pass for this run's (make records
    # refuses to copy records without the timings file)
    for finished_run_file in (out / f"timings-{args.profile}.json", out / "RESULTS.md"):
        finished_run_file.unlink(missing_ok=True)
    run = functools.partial(run_notebooks, profile=args.profile, kernel=args.kernel, cell_timeout=args.cell_timeout)
    timings = run(notebooks, out, extra={**extra, **({"seed": seeds[0]} if seeds else {})})
    if timings is None:
        return 1
    results = {seeds[0]: out / "results"} if seeds else {}
    for seed in seeds[1:] if experiments else []:
        folder = out / "seeds" / f"seed-{seed}"
        with environment(FASHION_COURSE_OUTPUTS=str(folder), FASHION_COURSE_FIGURES=str(folder / "figures")):
            folder.mkdir(parents=True, exist_ok=True)
            repeated = run(experiments, folder, extra={**extra, "seed": seed})
        if repeated is None:
            return 1
        timings.update({timing_key(stem, seed): seconds for stem, seconds in repeated.items()})
        results[seed] = folder / "results"
    if len(results) > 1:
        try:
            aggregated = aggregate_seeds(results, [notebook.stem for notebook in experiments])
        except ValueError as err:
            print(f"✗ {err}", file=sys.stderr, flush=True)
            return 1
        print(f"{len(aggregated)} records now carry mean and std over seeds {', '.join(map(str, seeds))}", flush=True)
    write_json(out / f"timings-{args.profile}.json", timings)
    report = build_report(
        out / "results",
        out / "RESULTS.md",
        title=f"fashion-clip-course results ({args.profile} profile)",
        profile=args.profile,
    )
    print(f"all {len(timings)} notebook runs took {sum(timings.values()):.0f} s; report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
