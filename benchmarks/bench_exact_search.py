"""Exact (brute-force) search latency against the memory-bandwidth bound, and against a per-item Python loop.

A single exact query must read every stored vector once, so it cannot run faster than
``bytes stored / memory read bandwidth``. This script measures that bandwidth in the same run (the best of a
single-threaded numpy sum and a multi-threaded torch sum over the same matrix: the faster reader gives the
stricter bound), then times ``course_utils.index.ExactIndex`` (float32 and float16 storage) for one query and for
batches of queries, a one-shot ``torch.topk(gallery @ query)``, the same product through numpy's BLAS (another
library's matrix-vector kernel on the same machine), and the per-item loop of the seed retrievers (timed
on a subset and extrapolated linearly). Prints a markdown table; ``--json`` keeps the run's record and ``--readme``
renders README › Performance › Exact search from the last record kept in ``results/bench/exact_search/``
(``course_utils.bench_records``).

  .venv/bin/python benchmarks/bench_exact_search.py --sizes 100000 1000000 --json results/bench/exact_search/<time>.json
  .venv/bin/python benchmarks/bench_exact_search.py --readme
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import bench_records  # noqa: E402
from course_utils.index import ExactIndex  # noqa: E402

RECORDS = bench_records.BENCH_RECORDS / "exact_search"
README_MARKERS = ("<!-- bench-exact-search:start -->", "<!-- bench-exact-search:end -->")
NUMPY_ONE_SHOT = "numpy argpartition(gallery @ q)"
GOAL_X_BOUND = 1.3  # issue 16's goal (issue 3 asked 1.5x): one exact query within 1.3x of the bandwidth bound


def unit_vectors(n: int, dim: int, seed: int, block: int = 100_000) -> torch.Tensor:
    """(n, dim) float32 random unit vectors, generated block by block to limit temporaries."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dim)
    for start in range(0, n, block):
        x = torch.randn(min(block, n - start), dim, generator=generator)
        out[start : start + x.shape[0]] = x / x.norm(dim=1, keepdim=True)
    return out


def timings(fn: Callable[[int], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``fn(i)`` for i in range(repeats), after ``warmup`` untimed calls."""
    for i in range(warmup):
        fn(i)
    result = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        result.append(time.perf_counter() - start)
    return result


def read_bandwidth(matrix: torch.Tensor, repeats: int) -> dict[str, float]:
    """Bytes per second reading ``matrix`` once: best of ``repeats`` for a numpy sum and a torch sum."""
    array = matrix.numpy()
    n_bytes = matrix.numel() * matrix.element_size()
    numpy_best = min(timings(lambda _: array.sum(), repeats))
    torch_best = min(timings(lambda _: matrix.sum(), repeats))
    return {
        "numpy sum (1 thread)": n_bytes / numpy_best,
        f"torch sum ({torch.get_num_threads()} threads)": n_bytes / torch_best,
    }


def numpy_blas() -> str:
    """The BLAS library numpy was built with (``"scipy-openblas"`` for the pip wheels), as numpy reports it."""
    return np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]


def naive_loop_search(gallery: np.ndarray, query: np.ndarray, k: int) -> list[tuple[float, int]]:
    """The seed retrievers' search: one dot product per gallery item in Python, a list, a sort."""
    scored = []
    for i, vector in enumerate(gallery):
        scored.append((float(np.dot(query, vector)), i))
    scored.sort(reverse=True)
    return scored[:k]


def bench_size(n: int, args: argparse.Namespace) -> list[dict[str, object]]:
    gallery = unit_vectors(n, args.dim, seed=args.seed)
    queries = unit_vectors(max(args.batch, args.repeats + 1), args.dim, seed=args.seed + 1)
    bandwidths = read_bandwidth(gallery, repeats=5)
    bandwidth = max(bandwidths.values())
    rows: list[dict[str, object]] = []

    def row(method: str, per_query_s: float, stored_bytes: int | None, note: str = "") -> None:
        bound = stored_bytes / bandwidth if stored_bytes else None
        rows.append(
            {
                "n": n,
                "method": method,
                "ms/query": per_query_s * 1e3,
                "queries/s": 1.0 / per_query_s,
                "bound ms": bound * 1e3 if bound else None,
                "× bound": per_query_s / bound if bound else None,
                "note": note,
            }
        )

    fp32_bytes = gallery.numel() * 4
    for name, value in bandwidths.items():
        rows.append({"n": n, "method": f"read bandwidth: {name}", "note": f"{value / 1e9:.1f} GB/s"})

    # One-shot torch: the whole (n,) score vector, then top-k (no chunking).
    one_shot = timings(lambda i: torch.topk(gallery @ queries[i], args.k), args.repeats)
    row("torch.topk(gallery @ q), 1 query", statistics.median(one_shot), fp32_bytes)
    # The same product through numpy's BLAS, another library's matrix-vector kernel on the same machine.
    gallery_array, query_arrays = gallery.numpy(), queries.numpy()
    numpy_one_shot = timings(
        lambda i: np.argpartition(gallery_array @ query_arrays[i], -args.k)[-args.k :], args.repeats
    )
    row(f"{NUMPY_ONE_SHOT} ({numpy_blas()}), 1 query", statistics.median(numpy_one_shot), fp32_bytes)

    for dtype in ("float32", "float16"):
        index = ExactIndex(args.dim, dtype=dtype, chunk_size=args.chunk_size)
        index.add(gallery)
        stored = index.vectors.numel() * index.vectors.element_size()
        single = timings(lambda i, index=index: index.search(queries[i], args.k), args.repeats)
        row(f"ExactIndex {dtype}, 1 query", statistics.median(single), stored, f"median of {args.repeats}")
        batch = queries[: args.batch]
        batched = timings(lambda _, index=index, batch=batch: index.search(batch, args.k), max(3, args.repeats // 3))
        row(f"ExactIndex {dtype}, batch of {args.batch}", statistics.median(batched) / args.batch, None, "per query")
        del index

    subset = min(n, args.naive_items)
    gallery_np, query_np = gallery[:subset].numpy(), queries[0].numpy()
    naive = timings(lambda _: naive_loop_search(gallery_np, query_np, args.k), 3)
    row(
        "per-item Python loop, 1 query",
        statistics.median(naive) * n / subset,
        fp32_bytes,
        f"timed on {subset:,} items, extrapolated ×{n / subset:.0f}" if subset < n else "",
    )
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    """The run's rows as a table: ``× bound`` to two decimals, times to three significant places or so."""

    def cell(value: object, column: str) -> str:
        if column == "n":
            return f"{value:,}"
        if isinstance(value, float):
            if column == "× bound":
                return f"{value:.2f}"
            return f"{value:,.3f}" if value < 10 else f"{value:,.0f}" if value >= 1000 else f"{value:,.1f}"
        return str(value)

    return bench_records.markdown_table(
        rows, ["n", "method", "ms/query", "queries/s", "bound ms", "× bound", "note"], cell
    )


def readme_section(runs: list[dict]) -> str:
    """The last kept run: its table and, per gallery size, ExactIndex's single query against the goal."""
    run = runs[-1]
    single = [row for row in run["rows"] if row["method"] == "ExactIndex float32, 1 query"]
    verdicts = "; ".join(
        f"{row['n']:,}: {row['× bound']:.2f}× ({'met' if row['× bound'] <= GOAL_X_BOUND else 'not met'})"
        for row in single
    )
    other_blas = {row["n"]: row for row in run["rows"] if row["method"].startswith(NUMPY_ONE_SHOT)}
    compared = "; ".join(
        f"{row['n']:,}: {other_blas[row['n']]['× bound']:.2f}×" for row in single if row["n"] in other_blas
    )
    other = (
        f" For comparison, the same product through numpy's BLAS (`{NUMPY_ONE_SHOT}`, its top-k unsorted) "
        f"against the same bound: {compared}."
        if compared
        else ""
    )
    return "\n\n".join(
        [
            bench_records.run_heading(run, RECORDS),
            markdown(run["rows"]),
            f"torch {run['conditions']['torch']} on {run['conditions']['torch_threads']} threads; "
            "bound = bytes stored / the best read bandwidth measured in the same run. "
            "One ExactIndex query (float32) against the goal of "
            f"{GOAL_X_BOUND}× the bound: {verdicts}.{other}",
        ]
    )


def write_readme(check: bool, readme: Path = bench_records.README, folder: Path = RECORDS) -> int:
    """README › Performance › Exact search from the runs kept in ``folder`` (``check``: compare only)."""
    return bench_records.render_readme(Path(__file__).name, folder, README_MARKERS, readme_section, check, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="gallery sizes")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--repeats", type=int, default=15, help="timed single queries per method (median)")
    parser.add_argument("--batch", type=int, default=256, help="queries per batched search")
    parser.add_argument("--chunk-size", type=int, default=65536, help="ExactIndex chunk_size")
    parser.add_argument("--naive-items", type=int, default=100_000, help="gallery items the Python loop is timed on")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, all cores)")
    parser.add_argument("--seed", type=int, default=0)
    bench_records.add_record_options(parser, "Performance › Exact search")
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme(args.check)
    if args.threads:
        torch.set_num_threads(args.threads)

    conditions = bench_records.RunConditions()
    print(f"data: random unit vectors, d={args.dim}, float32 unless stated; k={args.k}\n")
    rows = []
    for n in args.sizes:
        rows += bench_size(n, args)
        print(f"... n={n:,} done", file=sys.stderr)
    record = {
        "conditions": conditions.finish(
            torch=torch.__version__, torch_threads=torch.get_num_threads(), numpy=np.__version__
        ),
        "arguments": bench_records.arguments(args),
        "rows": rows,
    }
    bench_records.keep_then_print(record, args.json, readme_section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
