"""The code follows the one ruff configuration in ``pyproject.toml``: lint everywhere, format on ``.py`` files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_repository_passes_ruff(command):
    done = subprocess.run([sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True)
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"ruff {' '.join(command)} failed (`make lint` shows the same):\n{report}"
