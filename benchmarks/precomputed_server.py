"""The classroom server with the benchmark's text answers computed before it serves: a server that spends almost
no time on a query, for ``bench_classroom.py --server precomputed``.

Run against it, the benchmark's time to results is what the browsers and the loopback cost on their own; the
difference to the real server's row is the server's share. Every other request (the page, other queries) is the
real server's (:class:`course_utils.classroom.QueryService`).

    .venv/bin/python benchmarks/precomputed_server.py --port 8866 --texts "navy floral dress" "red plain shirt"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils.classroom import DEFAULT_WORKERS, QueryService, text_answers  # noqa: E402
from course_utils.demo import DemoState, load_demo_state  # noqa: E402
from course_utils.serve import serve_until_stopped  # noqa: E402
from course_utils.widgets import DEFAULT_TOP_K  # noqa: E402


class PrecomputedService(QueryService):
    """:class:`QueryService` that answers the given text queries (at ``top_k``) from answers computed at start."""

    def __init__(self, state: DemoState, texts: list[str], top_k: int, **options) -> None:
        super().__init__(state, **options)
        self.top_k = str(top_k)
        queries = [{"text": text, "top_k": self.top_k} for text in texts]
        self.answers = {texts[position]: page for position, page in text_answers(state, queries)}

    async def answer(self, kind: str, arguments: dict[str, str], upload=None) -> str:
        if kind == "text" and arguments.get("top_k") == self.top_k and arguments.get("text") in self.answers:
            return self.answers[arguments["text"]]
        return await super().answer(kind, arguments, upload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", default="ci", choices=["ci", "full"])
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    parser.add_argument("--texts", nargs="+", required=True, help="the text queries to answer in advance")
    args = parser.parse_args(argv)
    state = load_demo_state(profile=args.profile)
    torch.set_num_threads(1)
    service = PrecomputedService(state, args.texts, args.top_k, workers=args.workers)
    serve_until_stopped(service, "127.0.0.1", args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
