"""One place for randomness: ``seed_everything(seed)`` before any experiment (every notebook)."""

from __future__ import annotations

import os
import random

import numpy as np

from .checks import is_whole_number

# NumPy's legacy generator (``np.random.seed``) takes a 32-bit unsigned seed; Python's and PyTorch's take more.
MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> int:
    """``seed`` if every generator :func:`seed_everything` seeds takes it; else a ``ValueError`` naming ``seed`` and
    the range, so a notebook (or the runner's ``--seeds``) given a bad seed says so instead of NumPy's
    "Seed must be between 0 and 2**32 - 1", which names no parameter."""
    if not is_whole_number(seed, minimum=0) or seed > MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to 2**32 - 1 ({MAX_SEED}), got {seed!r}")
    return seed


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) and ask PyTorch for deterministic kernels."""
    import torch

    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
