"""Command-line options shared by the course's scripts: the data and model options of the multi-process ones
(``embed_shards``, ``train_contrastive``), the load-or-exit of all four, the ``--device`` check of ``evaluate`` and
``serve``, and the check of an output file's path before the work that writes it.

Every rank of a ``torchrun`` job rebuilds the same catalogue and model from the same options, so the options name
them reproducibly: a dataset (the procedural catalogue by size and seed, or a real one by folder), a split, an
open_clip model name and a weights file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from .checks import whole_number
from .data import load_catalogue, reads_folder
from .data.records import Catalogue
from .data.registry import loader_accepts
from .models import load_clip
from .models.clip_loader import DEVICE_CHOICES, WeightsUnavailable, device_problem, load_weights, weights_file_label
from .seeding import MAX_SEED


def add_data_and_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--catalogue --root --size --seed --split --model --weights``."""
    parser.add_argument("--catalogue", default="synthetic", help="dataset name for load_catalogue")
    parser.add_argument("--root", default=None, help="folder of a real dataset")
    parser.add_argument("--size", default=None, help='synthetic size: "ci", "full" or JSON like {"test": 2000}')
    parser.add_argument(
        "--seed",
        type=whole_number(0, MAX_SEED),
        default=0,
        help="catalogue seed (datasets with official splits: unused)",
    )
    parser.add_argument("--split", default=None, help="use only this split")
    parser.add_argument("--model", default="tiny-fashion-clip", help="open_clip model name")
    parser.add_argument("--weights", default=None, help="state_dict file of the model (else random init, seed 0)")


def catalogue_from_args(args: argparse.Namespace) -> Catalogue:
    """The catalogue (or split) the options name.

    ``--seed`` goes to every loader that takes one (the procedural catalogue, and the hashed splits of
    fashion-product-small and deepfashion-multimodal); a non-zero seed for a dataset with official splits
    (fashion200k, fashioniq) has no effect, and a warning says so.
    """
    options = {}
    if loader_accepts(args.catalogue, "seed"):
        options["seed"] = args.seed
    elif args.seed:
        warnings.warn(
            f"--seed {args.seed} is ignored: {args.catalogue} has official splits and takes no seed", stacklevel=2
        )
    if args.size:
        if not loader_accepts(args.catalogue, "size"):
            raise ValueError(
                f"--size applies to --catalogue synthetic only; {args.catalogue} is read whole: drop --size"
            )
        try:
            options["size"] = json.loads(args.size) if args.size.startswith("{") else args.size
        except json.JSONDecodeError as err:
            raise ValueError(
                f'--size {args.size!r} is not valid JSON ({err.msg} at column {err.colno}); give "ci", "full" or '
                'an object like {"train": 1000, "test": 200}'
            ) from None
    catalogue = load_catalogue(args.catalogue, root=args.root, **options)
    return catalogue.split(args.split) if args.split else catalogue


def bundle_from_args(args: argparse.Namespace, device: str = "cpu"):
    """The :class:`~course_utils.models.ClipBundle` the options name, with ``--weights`` loaded when given."""
    torch.manual_seed(0)  # the same random init on every rank when no weights are given
    previous = logging.root.manager.disable
    if args.weights:  # open_clip warns that the model is randomly initialised; the weights are loaded just below
        logging.disable(max(previous, logging.WARNING))
    try:
        bundle = load_clip(args.model, pretrained=None, device=device)
    finally:
        logging.disable(previous)
    if args.weights:
        load_weights(bundle.model, args.weights, args.model)
        bundle.model.eval()
        bundle = replace(bundle, identity=f"{bundle.identity}+{weights_file_label(args.weights)}")
    return bundle


@contextlib.contextmanager
def exit_on_load_errors(what: str, dataset: str | None = None, data_root: str | None = None) -> Iterator[None]:
    """Run the loading in the ``with`` block, or exit with one line, ``cannot load <what>: <reason>``, never a
    traceback (``evaluate``, ``serve``, ``embed_shards`` and ``train_contrastive`` load their data and model through
    it; ``train_contrastive`` its training data too, whose caption style some items may lack).

    The loaders' errors name the file and what to do (``DatasetNotFound``, ``WeightsUnavailable``, ``BadCheckpoint``)
    or the parameter (``ValueError``: an unknown dataset or model); a file that cannot be read is an ``OSError``
    naming it. A real ``dataset`` without its folder (``data_root`` ``None``) is said before anything loads, with the
    flag: the loader's own message names its ``root=`` argument, which a user of the command never wrote.
    """
    if dataset is not None and data_root is None and reads_folder(dataset):
        raise SystemExit(
            f"cannot load {what}: --dataset {dataset} is read from its folder: add --data-root <folder> "
            "(see README › Real data)"
        )
    try:
        yield
    # DatasetNotFound is an OSError and BadCheckpoint a ValueError: both are caught here, their messages kept
    except (WeightsUnavailable, ValueError, OSError) as err:
        raise SystemExit(f"cannot load {what}: {err}") from None


def check_output_file(parser: argparse.ArgumentParser, flag: str, path: str | Path) -> Path:
    """``path``, made absolute, once it names a file that can be written: not a folder, and under a folder that
    exists or can be created and is writable. Otherwise ``parser.error`` names ``flag``, before the model loads, so
    a long training or evaluation is not lost at its last step (the file's folders are created when it is written)."""
    out = Path(path).expanduser().absolute()
    nearest = next(folder for folder in out.parents if folder.exists())  # the folder the missing ones go into
    if out.is_dir() or not nearest.is_dir():
        parser.error(f"{flag} {out}: give a file name inside a folder (checked before anything runs, not after)")
    if not os.access(nearest, os.W_OK):
        parser.error(
            f"{flag} {out}: the folder {nearest} is not writable; choose another (checked before anything runs)"
        )
    return out


def device_name(text: str) -> str:
    """An argparse ``type`` for ``--device``: the name as given, once this machine has that device
    (:func:`~course_utils.models.clip_loader.device_problem`), so ``--device cuda`` without a GPU is refused at once
    with the flag's name instead of after the catalogue has loaded."""
    problem = device_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r}: {problem}; use {DEVICE_CHOICES}")
    return text
