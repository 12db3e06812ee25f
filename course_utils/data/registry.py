"""One registry of dataset loaders: ``load_catalogue(name, root=None, **options)``.

Datasets, models and metrics are three registries joined by one evaluation call (as in CLIP_benchmark),
so any notebook is "catalogue x model x metric" and switching to real data is one parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .records import Catalogue

_LOADERS: dict[str, Callable[..., Catalogue]] = {}


def register_catalogue(name: str) -> Callable[[Callable[..., Catalogue]], Callable[..., Catalogue]]:
    """Decorator: make a loader available as ``load_catalogue(name, ...)``."""

    def decorate(loader: Callable[..., Catalogue]) -> Callable[..., Catalogue]:
        _LOADERS[name] = loader
        return loader

    return decorate


def available_catalogues() -> list[str]:
    return sorted(_LOADERS)


def reads_folder(name: str) -> bool:
    """Whether dataset ``name`` is read from a data folder: every registered format but the procedural catalogue."""
    return name in _LOADERS and name != "synthetic"


def loader_accepts(name: str, option: str) -> bool:
    """Whether dataset ``name``'s loader takes ``option`` (e.g. ``seed``: datasets with official splits do not)."""
    import inspect

    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {available_catalogues()}")
    return option in inspect.signature(_LOADERS[name]).parameters


def load_catalogue(name: str, root: str | Path | None = None, **options) -> Catalogue:
    """Load a dataset by name into a :class:`Catalogue`.

    Args:
        name: ``"synthetic"`` (the embedded default, no download) or a real format:
            ``"fashion-product-small"``, ``"deepfashion-multimodal"``, ``"fashion200k"``, ``"fashioniq"``.
        root: folder holding the real dataset; ``None`` for ``"synthetic"``, which reads no folder (a folder
            given with it is refused rather than ignored: the run would otherwise report on the drawings).
        **options: loader-specific options (size, seed, ...).
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {available_catalogues()}")
    loader = _LOADERS[name]
    if not reads_folder(name):
        if root is not None:
            real_formats = [other for other in available_catalogues() if reads_folder(other)]
            raise ValueError(
                f"a data folder ({root}) was given with dataset 'synthetic', the procedural catalogue, which reads "
                f"no folder; name the folder's format as the dataset (one of {real_formats}), or "
                "leave the folder out"
            )
        return loader(**options)
    if root is None:
        raise ValueError(f"dataset {name!r} needs root=<folder>; see README › Real data")
    return loader(Path(root).expanduser(), **options)
