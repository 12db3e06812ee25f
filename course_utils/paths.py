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


def cache_dir() -> Path:
    """``data/cache/`` (override with ``FASHION_COURSE_CACHE``): catalogues, checkpoints, embeddings."""
    path = env_path("FASHION_COURSE_CACHE", REPO_ROOT / "data" / "cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def outputs_dir(create: bool = True) -> Path:
    """``outputs/`` (override with ``FASHION_COURSE_OUTPUTS``): executed notebooks, results, screenshots; created
    unless ``create`` is false (the runner names the folder first and reports one it cannot write)."""
    path = env_path("FASHION_COURSE_OUTPUTS", REPO_ROOT / "outputs")
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir() -> Path:
    """Slide-ready PNG and SVG figures: ``FASHION_COURSE_FIGURES``, else ``figures/`` under :func:`outputs_dir`.

    Only the runner's full profile (``make run``) points ``FASHION_COURSE_FIGURES`` at the committed ``figures/``:
    a notebook run by hand (JupyterLab, no runner) saves its figures under ``outputs/figures/`` and leaves them be.
    """
    path = env_path("FASHION_COURSE_FIGURES", outputs_dir(create=False) / "figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def shared_data_dir() -> Path:
    """The real-format dataset samples beside the checkout (``../shared/data``, override with
    ``FASHION_COURSE_SHARED_DATA``); may not exist."""
    return env_path("FASHION_COURSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
