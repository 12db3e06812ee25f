"""Milvus Lite (``MilvusIndex``, FLAT) against exact search in this process, as the collection grows.

Notebook 08 stores its catalogue in Milvus Lite and finds it slower than scoring every vector in numpy at a few
thousand items. This script says by how much, at which sizes, and where the time goes. For each collection size,
on random unit vectors with two attributes (``tenth`` = row mod 10, ``hundredth`` = row mod 100, so a filter keeps
1 row in 10 or 1 in 100), it times:

- writing: ``MilvusIndex.add(seal=False)`` (the inserts), then the flush that seals the rows into a segment, then
  reopening the collection from its files (the engine released first, as in a new process);
- one query at a time (median and 90th percentile of ``--queries``): ``MilvusIndex.search`` with no filter and with
  each filter, and the same query in the process (``torch.topk`` over ``gallery @ q`` with the rows the filter
  rejects set to -inf: how notebook 07's retriever filters); whether Milvus's top-k ids are exact search's;
- a row count (``len(index)``) alone: the engine round trip a search saves by not counting;
- the same count and an unfiltered search while the rows are still in a growing segment, before the flush
  (``--growing-queries`` of them: the slow path ``MilvusIndex.add`` seals its rows to avoid);
- the collection's size on disk, and the memory it costs: Milvus Lite 3 runs in this process (a gRPC server on
  threads, in Python and numpy), so the growth of the process's resident memory from before the collection is
  created to after its searches.

Prints markdown tables; ``--json`` keeps the run's record and ``--readme`` renders README › Scaling out › Milvus Lite
from the last record kept in ``results/bench/milvus/`` (``course_utils.bench_records``).

  .venv/bin/python benchmarks/bench_milvus.py --json results/bench/milvus/<time>.json
  .venv/bin/python benchmarks/bench_milvus.py --readme
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling bench_exact_search, also when loaded by path
from bench_exact_search import timings, unit_vectors  # noqa: E402

from course_utils import bench_records  # noqa: E402
from course_utils.vector_db import MilvusIndex  # noqa: E402

RECORDS = bench_records.BENCH_RECORDS / "milvus"
README_MARKERS = ("<!-- bench-milvus:start -->", "<!-- bench-milvus:end -->")
# What each filter keeps: the attribute values of row i are str(i % 10) and str(i % 100).
FILTERS = {"none": {}, "1 row in 10": {"tenth": "0"}, "1 row in 100": {"hundredth": "0"}}


def row_attributes(n: int) -> list[dict[str, str]]:
    """Row i's attributes: ``tenth`` = i mod 10, ``hundredth`` = i mod 100."""
    return [{"tenth": str(i % 10), "hundredth": str(i % 100)} for i in range(n)]


def allowed_rows(attributes: list[dict[str, str]], filters: dict[str, str]) -> torch.Tensor:
    """(n,) bool: the rows whose ``attributes`` have every value ``filters`` asks for."""
    return torch.tensor([all(row[name] == value for name, value in filters.items()) for row in attributes])


def exact_search(gallery: torch.Tensor, query: torch.Tensor, allowed: torch.Tensor | None, k: int) -> torch.Tensor:
    """The k best rows for ``query`` among the ``allowed`` ones (all of them when fewer): every score, the rejected
    rows set to -inf."""
    scores = gallery @ query
    if allowed is None:
        return torch.topk(scores, k).indices
    scores[~allowed] = -torch.inf
    return torch.topk(scores, min(k, int(allowed.sum()))).indices


def milliseconds(seconds: list[float]) -> dict[str, float]:
    """Median and 90th percentile, in milliseconds."""
    return {"median ms": statistics.median(seconds) * 1e3, "p90 ms": float(np.percentile(seconds, 90)) * 1e3}


def resident_mb() -> float:
    """This process's resident memory, in MB."""
    return psutil.Process().memory_info().rss / 1e6


def folder_mb(folder: Path) -> float:
    """Bytes of the files under ``folder``, in MB."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def bench_size(n: int, args: argparse.Namespace, folder: Path) -> tuple[list[dict], dict]:
    """One collection of ``n`` rows: the search rows (one per filter, and the growing segment's) and the costs."""
    gallery = unit_vectors(n, args.dim, seed=args.seed)
    queries = unit_vectors(args.queries, args.dim, seed=args.seed + 1)
    attributes = row_attributes(n)
    uri = str(folder / f"bench_{n}.db")
    memory_before = resident_mb()
    index = MilvusIndex.create(uri, args.dim, attribute_names=("tenth", "hundredth"))
    start = time.perf_counter()
    index.add(gallery, attributes=attributes, seal=False)
    insert_s = time.perf_counter() - start

    growing_count = timings(lambda _: len(index), args.growing_queries)
    growing_search = timings(lambda i: index.search(queries[i], args.k), args.growing_queries)
    start = time.perf_counter()
    index.client.flush(index.collection)  # what MilvusIndex.add(seal=True) ends with
    seal_s = time.perf_counter() - start
    index.close()  # its last client: Milvus Lite's engine stops, so the reopen reads the collection's files
    start = time.perf_counter()
    index = MilvusIndex.open(uri)
    reopen_s = time.perf_counter() - start

    rows = []
    for label, filters in FILTERS.items():
        allowed = allowed_rows(attributes, filters) if filters else None
        found = [index.search(queries[i], args.k, filters)[1][0] for i in range(args.queries)]
        expected = [exact_search(gallery, queries[i], allowed, args.k).numpy() for i in range(args.queries)]
        same = sum(set(f[f >= 0].tolist()) == set(e.tolist()) for f, e in zip(found, expected))  # -1: no row
        milvus = milliseconds(
            timings(lambda i, filters=filters: index.search(queries[i], args.k, filters), args.queries)
        )
        exact = milliseconds(
            timings(lambda i, allowed=allowed: exact_search(gallery, queries[i], allowed, args.k), args.queries)
        )
        rows.append(
            {
                "n": n,
                "filter": label,
                "matching rows": n if allowed is None else int(allowed.sum()),
                **{f"Milvus {key}": value for key, value in milvus.items()},
                **{f"exact {key}": value for key, value in exact.items()},
                "Milvus / exact": milvus["median ms"] / exact["median ms"],
                "same top-k": same / args.queries,
            }
        )
    rows.append(
        {
            "n": n,
            "filter": "none, before the seal",
            "matching rows": n,
            **{f"Milvus {key}": value for key, value in milliseconds(growing_search).items()},
        }
    )
    sealed_count = timings(lambda _: len(index), args.queries)
    costs = {
        "n": n,
        "insert s": insert_s,
        "seal s": seal_s,
        "reopen s": reopen_s,
        "count ms, growing": statistics.median(growing_count) * 1e3,
        "count ms, sealed": statistics.median(sealed_count) * 1e3,
        "on disk MB": folder_mb(Path(uri)),  # Milvus Lite keeps its database in this folder
        "process MB": resident_mb() - memory_before,
    }
    index.close()
    return rows, costs


def search_table(rows: list[dict]) -> str:
    return bench_records.markdown_table(
        rows,
        [
            "n",
            "filter",
            "matching rows",
            "Milvus median ms",
            "Milvus p90 ms",
            "exact median ms",
            "exact p90 ms",
            "Milvus / exact",
            "same top-k",
        ],
        lambda value, column: f"{value:.0%}" if column == "same top-k" else bench_records.plain_cell(value, column),
    )


def cost_table(costs: list[dict]) -> str:
    return bench_records.markdown_table(
        costs,
        ["n", "insert s", "seal s", "reopen s", "count ms, growing", "count ms, sealed", "on disk MB", "process MB"],
    )


def value_range(values: list[float], unit: str = "×") -> str:
    """``"9.3–24×"``: the lowest and highest of ``values`` and their unit, whole numbers from 10 up."""
    low, high = (f"{value:.0f}" if value >= 10 else f"{value:.1f}" for value in (min(values), max(values)))
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"


def summary(run: dict) -> str:
    """What the run's tables say, one sentence per comparison (every ratio from the record)."""
    compared = [row for row in run["rows"] if "Milvus / exact" in row]
    unfiltered = {row["n"]: row["Milvus median ms"] for row in run["rows"] if row["filter"] == "none"}
    before_seal = {row["n"]: row["Milvus median ms"] for row in run["rows"] if row["filter"] == "none, before the seal"}
    all_exact = all(row["same top-k"] == 1.0 for row in compared)
    slower_unsealed = value_range([before_seal[n] / unfiltered[n] for n in before_seal])
    return (
        "At every size and filter, one Milvus Lite search took "
        f"{value_range([row['Milvus / exact'] for row in compared])} as long as exact search in the process (median "
        f"against median), and returned exact search's top-k for {'every' if all_exact else 'not every'} query. "
        f"Before the seal an unfiltered search took {slower_unsealed} as long as after it. A sealed count took "
        f"{value_range([100 * cost['count ms, sealed'] / unfiltered[cost['n']] for cost in run['costs']], ' %')} of "
        "an unfiltered search's time: what a search saves by not counting the rows on each call."
    )


def readme_section(runs: list[dict]) -> str:
    """The last kept run: its search table, its cost table, the conditions under them, and what they say."""
    run = runs[-1]
    conditions, arguments = run["conditions"], run["arguments"]
    return "\n\n".join(
        [
            bench_records.run_heading(run, RECORDS),
            search_table(run["rows"]),
            cost_table(run["costs"]),
            f"pymilvus {conditions['pymilvus']}, milvus-lite {conditions['milvus_lite']}, torch {conditions['torch']} "
            f"on {conditions['torch_threads']} threads; {arguments['dim']}-d vectors, k = {arguments['k']}; "
            f"single queries, {arguments['queries']} per row ({arguments['growing_queries']} before the seal), "
            "query vectors given (no text encoding); `same top-k`: the share of queries whose Milvus top-k ids are "
            "exact search's. Process MB: the growth of this process's resident memory from before the collection "
            "to after its searches (Milvus Lite 3 runs in the process; memory Python freed is not always returned).",
            summary(run),
        ]
    )


def write_readme(check: bool, readme: Path = bench_records.README, folder: Path = RECORDS) -> int:
    """README › Scaling out › Milvus Lite from the runs kept in ``folder`` (``check``: compare only)."""
    return bench_records.render_readme(Path(__file__).name, folder, README_MARKERS, readme_section, check, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="collection sizes (rows)")
    parser.add_argument("--dim", type=int, default=512, help="vector dimension")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--queries", type=int, default=200, help="timed single queries per row (median, p90)")
    parser.add_argument("--growing-queries", type=int, default=10, help="timed counts and searches before the seal")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, all cores)")
    parser.add_argument("--seed", type=int, default=0)
    bench_records.add_record_options(parser, "Scaling out › Milvus Lite")
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme(args.check)
    if args.threads:
        torch.set_num_threads(args.threads)

    import milvus_lite
    import pymilvus

    conditions = bench_records.RunConditions()
    rows, costs = [], []
    with tempfile.TemporaryDirectory(prefix="bench_milvus_") as folder:
        for n in args.sizes:
            size_rows, size_costs = bench_size(n, args, Path(folder))
            rows += size_rows
            costs.append(size_costs)
            print(f"... n={n:,} done", file=sys.stderr)
    record = {
        "conditions": conditions.finish(
            torch=torch.__version__,
            torch_threads=torch.get_num_threads(),
            pymilvus=pymilvus.__version__,
            milvus_lite=milvus_lite.__version__,
        ),
        "arguments": bench_records.arguments(args),
        "rows": rows,
        "costs": costs,
    }
    bench_records.keep_then_print(record, args.json, readme_section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
