"""Where the course keeps caches, outputs and figures (all relative to the repository root)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def env_path(name: str, default: Path) -> Path:
    """The folder named by environment variable ``name``, else ``default``.

    A notebook runs in ``notebooks/`` and the runner in the repository root, so a relative value is read against
    :data:`REPO_ROOT`, not the current folder, and names the same folder for both; ``~`` is expanded, and an empty
    value counts as unset (it would otherwise mean the current folder).
    """
    value = os.environ.get(name, "")
    return REPO_ROOT / Path(value).expanduser() if value else default


def folder_problem(err: OSError, path: str | Path) -> str:
    """Why ``path`` could not be made or written, in words: "it is a file, not a folder" or the system's reason, and
    where, when a folder above ``path`` is the cause (``mkdir`` names the parent it failed on)."""
    where = f" at {err.filename}" if err.filename and str(err.filename) != str(path) else ""
    reason = "it is a file, not a folder" if isinstance(err, FileExistsError) else err.strerror or str(err)
    return f"{reason}{where}"


def make_folder(path: Path, variable: str) -> Path:
    """``path``, created if missing; else the same kind of ``OSError`` with a message naming ``variable`` (the
    environment variable that chose the folder, or that would move it) and the path, and saying what to do.

    The cache, outputs and figures folders are made on first use, deep inside a load or a save, where ``mkdir``'s
    own ``FileExistsError`` would name neither the variable nor the remedy.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise type(err)(
            f"{variable}: cannot create the folder {path} ({folder_problem(err, path)}); "
            f"point {variable} at a writable folder"
        ) from None
    return path


def cache_dir() -> Path:
    """``data/cache/`` (override with ``FASHION_COURSE_CACHE``): catalogues, checkpoints, embeddings."""
    return make_folder(env_path("FASHION_COURSE_CACHE", REPO_ROOT / "data" / "cache"), "FASHION_COURSE_CACHE")


def outputs_dir(create: bool = True) -> Path:
    """``outputs/`` (override with ``FASHION_COURSE_OUTPUTS``): executed notebooks, results, screenshots; created
    unless ``create`` is false (the runner names the folder first and reports one it cannot write)."""
    path = env_path("FASHION_COURSE_OUTPUTS", REPO_ROOT / "outputs")
    return make_folder(path, "FASHION_COURSE_OUTPUTS") if create else path


def figures_dir() -> Path:
    """Slide-ready PNG and SVG figures: ``FASHION_COURSE_FIGURES``, else ``figures/`` under :func:`outputs_dir`.

    Only the runner's full profile (``make run``) points ``FASHION_COURSE_FIGURES`` at the committed ``figures/``:
    a notebook run by hand (JupyterLab, no runner) saves its figures under ``outputs/figures/`` and leaves them be.
    """
    # unset, the figures go under the outputs folder: an error there is FASHION_COURSE_OUTPUTS's to fix
    variable = "FASHION_COURSE_FIGURES" if os.environ.get("FASHION_COURSE_FIGURES") else "FASHION_COURSE_OUTPUTS"
    return make_folder(env_path("FASHION_COURSE_FIGURES", outputs_dir(create=False) / "figures"), variable)


def shared_data_dir() -> Path:
    """The real-format dataset samples beside the checkout (``../shared/data``, override with
    ``FASHION_COURSE_SHARED_DATA``); may not exist."""
    return env_path("FASHION_COURSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
