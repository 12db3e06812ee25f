"""Serve notebook 07's query demos as a web page on this machine: ``python -m course_utils.serve``.

Starts Voilà on ``notebooks/07_retrieval_demo.ipynb``, bound to ``127.0.0.1`` (only this machine can open it),
without opening a browser; open the printed address. Voilà executes the notebook with its default parameters
(``profile="ci"``) in a fresh kernel per page view and hides the code; the notebook switches ``INTERACTIVE`` on
by itself when it runs under Voilà (:func:`course_utils.widgets.running_in_voila`), so the widgets are live.
Stop it with Ctrl+C.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .paths import REPO_ROOT

DEMO_NOTEBOOK = REPO_ROOT / "notebooks" / "07_retrieval_demo.ipynb"
DEFAULT_PORT = 8866


def voila_command(
    notebook: Path = DEMO_NOTEBOOK, port: int = DEFAULT_PORT, ip: str = "127.0.0.1", show_tracebacks: bool = False
) -> list[str]:
    """The ``voila`` command line that serves ``notebook`` on ``http://{ip}:{port}/`` (run with this Python)."""
    command = [sys.executable, "-m", "voila", str(notebook), f"--port={port}", "--no-browser", f"--Voila.ip={ip}"]
    if show_tracebacks:
        command.append("--show_tracebacks=True")
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.add_argument("--ip", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--notebook", type=Path, default=DEMO_NOTEBOOK, help="notebook to serve")
    parser.add_argument("--show-tracebacks", action="store_true", help="show Python tracebacks on the page")
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        print(f"no notebook at {args.notebook}", file=sys.stderr)
        return 2
    command = voila_command(args.notebook, args.port, args.ip, args.show_tracebacks)
    print(f"serving {args.notebook.name} at http://{args.ip}:{args.port}/  (Ctrl+C stops it)", flush=True)
    os.execv(command[0], command)  # replace this process: signals and the exit status are Voilà's own
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
