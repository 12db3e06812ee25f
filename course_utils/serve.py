"""Serve notebook 07's query demos as a web page: ``python -m course_utils.serve`` (``make serve``).

By default this starts the **classroom server** (:mod:`course_utils.classroom`): one process that loads the
model, catalogue, gallery embeddings and index once (:func:`course_utils.demo.load_demo_state`, the objects
notebook 07 builds) and serves a page with the four query types to any number of viewers, each viewer costing a
few kilobytes instead of a notebook kernel. It binds ``127.0.0.1`` (only this machine can open it); ``--ip``
binds another interface for a classroom network, and prints what that exposes (with ``--voila`` too). The port is
bound before the model loads, so a taken port is said at once. Stop it with Ctrl+C.

``--voila`` keeps the earlier way: Voilà on ``notebooks/07_retrieval_demo.ipynb``, one fresh kernel per page view
(about 1.1 GiB and 20 s each), fine for one presenter, too heavy for a class. The notebook switches
``INTERACTIVE`` on by itself under Voilà (:func:`course_utils.widgets.running_in_voila`), so its widgets are live.
Voilà runs the notebook with the parameters written in it, so the classroom server's flags (``--profile``,
``--dataset``, ``--workers`` …) are refused with ``--voila`` rather than ignored, and ``--show-tracebacks`` without it;
README › Query demos as a web page says how to serve another configuration under Voilà (a parameterised copy).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
import time
from pathlib import Path

import torch

from .checks import whole_number
from .classroom import (
    DEFAULT_MAX_PENDING,
    DEFAULT_WORKERS,
    QueryService,
    bind,
    exposure_warning,
    serve_forever,
    where_to_open,
)
from .cli import device_name, exit_on_load_errors
from .demo import DemoState, load_demo_state
from .paths import REPO_ROOT
from .run import kernel_config
from .seeding import MAX_SEED

DEMO_NOTEBOOK = REPO_ROOT / "notebooks" / "07_retrieval_demo.ipynb"
DEFAULT_PORT = 8866


def voila_command(
    notebook: Path = DEMO_NOTEBOOK, port: int = DEFAULT_PORT, ip: str = "127.0.0.1", show_tracebacks: bool = False
) -> list[str]:
    """The ``voila`` command line that serves ``notebook`` on ``ip:port`` (run with this Python); its kernels take
    the notebook runner's kernel config (:func:`course_utils.run.kernel_config`: encrypted sockets where offered)."""
    command = [sys.executable, "-m", "voila", str(notebook), f"--port={port}", "--no-browser", f"--Voila.ip={ip}"]
    command += [
        f"--{section}.{name}={value}" for section, traits in kernel_config().items() for name, value in traits.items()
    ]
    if show_tracebacks:
        command.append("--show_tracebacks=True")
    return command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--port", type=whole_number(1, 65535), default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--ip",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0: every interface, "
        "e.g. a classroom network — read the warning it prints)",
    )
    demo = parser.add_argument_group("classroom server (default): the demo state, as notebook 07's parameters")
    classroom_only = [
        demo.add_argument("--profile", default="ci", choices=["ci", "full"], help="catalogue size (default ci)"),
        demo.add_argument("--seed", type=whole_number(0, MAX_SEED), default=0, help="seed of the catalogue and models"),
        demo.add_argument(
            "--dataset", default="synthetic", help="'synthetic' or a real format, e.g. fashion-product-small"
        ),
        demo.add_argument("--data-root", default=None, help="folder of a real dataset"),
        demo.add_argument("--model", default="tiny-fashion-clip"),
        demo.add_argument("--pretrained", default="embedded"),
        demo.add_argument(
            "--test-size", type=whole_number(1), default=None, help="keep the first N test items as the gallery"
        ),
        demo.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N"),
        demo.add_argument("--workers", type=whole_number(1), default=DEFAULT_WORKERS, help="threads that run queries"),
        demo.add_argument(
            "--max-pending",
            type=whole_number(1),
            default=DEFAULT_MAX_PENDING,
            help="queries that may be in progress (running or waiting) before viewers are asked to retry",
        ),
        demo.add_argument(
            "--torch-threads",
            type=whole_number(1),
            default=1,
            help="torch threads per query (default 1: the workers give the parallelism)",
        ),
    ]
    voila = parser.add_argument_group("--voila: one Voilà kernel per page view (the earlier way)")
    voila.add_argument("--voila", action="store_true", help="serve the notebook with Voilà instead")
    voila.add_argument(
        "--notebook",
        type=Path,
        default=None,
        help=f"notebook to serve with Voilà (implies --voila; default {DEMO_NOTEBOOK.name})",
    )
    voila_only = [
        voila.add_argument(
            "--show-tracebacks", action="store_true", help="show Python tracebacks on the page (--voila)"
        )
    ]
    args = parser.parse_args(argv)
    if args.voila or args.notebook is not None:
        mode = "--voila" if args.voila else "--notebook"
        advice = (
            "Voilà runs the notebook with the parameters written in it. To serve another configuration, write a "
            "parameterised copy (papermill notebooks/07_retrieval_demo.ipynb /tmp/07_full.ipynb -p profile full "
            "--prepare-only) and serve it with --notebook (README › Query demos as a web page, 'Other parameters on "
            f"the page'); or drop {mode} to have the classroom server use these flags"
        )
        _refuse_flags_given(parser, argv, classroom_only, f"{mode} ignores", advice)
    else:
        advice = "only Voilà's page shows tracebacks: add --voila, or drop the flag"
        _refuse_flags_given(parser, argv, voila_only, "the classroom server ignores", advice)
    return args


def _refuse_flags_given(
    parser: argparse.ArgumentParser, argv: list[str] | None, actions: list[argparse.Action], ignores: str, advice: str
) -> None:
    """``parser.error`` naming those of ``actions``' flags that ``argv`` gives (with any value, its default too),
    e.g. ``--profile`` with ``--voila``: a flag the chosen way of serving never reads must not pass in silence."""
    for action in actions:
        action.default = argparse.SUPPRESS  # a flag not given is left out of the namespace
    given = vars(parser.parse_args(argv))
    flags = [action.option_strings[0] for action in actions if action.dest in given]
    if flags:
        parser.error(f"{ignores} {', '.join(flags)}: {advice}")


def serve_voila(args: argparse.Namespace) -> int:
    args.notebook = args.notebook or DEMO_NOTEBOOK
    if not args.notebook.is_file():
        print(f"no notebook at {args.notebook}", file=sys.stderr)
        return 2
    command = voila_command(args.notebook, args.port, args.ip, args.show_tracebacks)
    print(f"serving {args.notebook.name} at {where_to_open(args.ip, args.port)}  (Ctrl+C stops it)", flush=True)
    os.execv(command[0], command)  # replace this process: signals and the exit status are Voilà's own
    return 0  # not reached


def bind_or_exit(ip: str, port: int) -> list[socket.socket]:
    """:func:`course_utils.classroom.bind`, or exit with a message that says which flag to change."""
    try:
        return bind(ip, port)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            advice = f"port {port} is in use (another server?): pass --port with a free one, e.g. --port {port + 1}"
        else:
            advice = f"{err.strerror or err}: pass --ip with an address of this machine (default 127.0.0.1) or --port"
        raise SystemExit(f"cannot listen on {ip}:{port}: {advice}") from None


def serve_classroom(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sockets = bind_or_exit(args.ip, args.port)  # before the model loads (minutes on an empty cache)
    start = time.perf_counter()
    print("loading the model, the catalogue and the gallery embeddings (once)…", flush=True)
    state = load_demo_or_exit(args)
    torch.set_num_threads(args.torch_threads)  # after loading: a cold cache trains with every core
    service = QueryService(state, args.workers, args.max_pending)
    print(
        f"ready in {time.perf_counter() - start:.1f} s: {len(state.retriever.catalogue)} gallery items, "
        f"model {state.retriever.bundle.identity}, conditions {state.conditions or 'none'}",
        flush=True,
    )
    serve_until_stopped(service, args.ip, args.port, sockets)
    return 0


def load_demo_or_exit(args: argparse.Namespace) -> DemoState:
    """:func:`course_utils.demo.load_demo_state` with the flags' values, or exit with one line saying what is wrong
    (:func:`course_utils.cli.exit_on_load_errors`, as ``python -m course_utils.evaluate`` loads its own)."""
    with exit_on_load_errors("the demo", args.dataset, args.data_root):
        return load_demo_state(
            profile=args.profile,
            seed=args.seed,
            dataset=args.dataset,
            data_root=args.data_root,
            model=args.model,
            pretrained=args.pretrained,
            device=args.device,
            test_size=args.test_size,
        )


def serve_until_stopped(service: QueryService, ip: str, port: int, sockets: list[socket.socket] | None = None) -> None:
    """Serve ``service`` on ``ip:port``, printing its address, until Ctrl+C.

    ``sockets``: ``ip:port`` already bound by :func:`bind_or_exit` (:func:`serve_classroom` binds before it
    loads the model); ``None`` binds it here."""
    sockets = sockets or bind_or_exit(ip, port)
    try:
        asyncio.run(serve_forever(service, sockets, announce=lambda line: print(line, flush=True)))
    except KeyboardInterrupt:
        print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warning = exposure_warning(args.ip, args.port)  # both ways of serving expose the same page and uploads
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return serve_voila(args) if args.voila or args.notebook is not None else serve_classroom(args)


if __name__ == "__main__":
    raise SystemExit(main())
