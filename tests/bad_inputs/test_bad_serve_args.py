"""``python -m course_utils.serve``'s demo flags: a bad seed is refused by argparse with the flag's name, and a demo
that cannot load ends in one line naming what to change, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from course_utils import serve
from course_utils.paths import REPO_ROOT


@pytest.fixture
def no_port(monkeypatch):
    """Bind nothing: these tests end before the server would listen."""
    monkeypatch.setattr(serve, "bind_or_exit", lambda ip, port: [])


@pytest.mark.parametrize("seed", ["-1", "4294967296", "zero"])
def test_a_seed_numpy_refuses_is_refused_with_the_flags_name(seed, capsys):
    """Before, ``--seed -1`` loaded for seconds, then ended in NumPy's "Seed must be between 0 and 2**32 - 1"."""
    with pytest.raises(SystemExit) as refused:
        serve.parse_args(["--seed", seed])
    assert refused.value.code == 2
    assert f"argument --seed: must be a whole number from 0 to 4294967295, got '{seed}'" in capsys.readouterr().err


def test_a_real_dataset_without_its_folder_names_the_data_root_flag(no_port, monkeypatch):
    def load_demo_state(**_):
        raise AssertionError("the demo was loaded without its dataset's folder")

    monkeypatch.setattr(serve, "load_demo_state", load_demo_state)
    with pytest.raises(SystemExit) as refused:
        serve.main(["--dataset", "fashion-product-small"])
    assert str(refused.value.code) == (
        "cannot load the demo: --dataset fashion-product-small is read from its folder: add --data-root <folder> "
        "(see README › Real data)"
    )


@pytest.mark.parametrize(
    "error",
    [
        ValueError("unknown dataset 'nonsense'; choose one of […]"),
        PermissionError("[Errno 13] Permission denied: '/cache/catalogue.pt'"),
    ],
)
def test_any_value_or_file_error_of_loading_is_one_line(error, no_port, monkeypatch):
    def load_demo_state(**_):
        raise error

    monkeypatch.setattr(serve, "load_demo_state", load_demo_state)
    with pytest.raises(SystemExit) as refused:
        serve.main([])
    assert str(refused.value.code) == f"cannot load the demo: {error}"


def test_the_command_ends_without_a_traceback(tmp_path):
    """The whole command, as typed: exits by itself (nothing is served), status 1, the reason on its last line."""
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {**os.environ, "FASHION_COURSE_CACHE": str(tmp_path / "cache")}
    finished = subprocess.run(
        [sys.executable, "-m", "course_utils.serve", "--port", str(port), "--dataset", "nonsense"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 1 and "Traceback" not in finished.stderr
    assert finished.stderr.strip().splitlines()[-1].startswith("cannot load the demo: unknown dataset 'nonsense'")
