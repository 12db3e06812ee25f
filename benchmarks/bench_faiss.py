"""Approximate search (FAISS IVF and HNSW): recall@k against exact search versus per-query latency.

Data: CLUSTERED unit vectors from a Gaussian mixture (``--centres`` random unit centres; each point is
``normalise(centre + noise)`` with noise of norm about ``--spread``; at the default 1.5 a point's cosine is about
0.55 to its centre, 0.3 to a point of its own cluster and 0 +- 0.04 to any other point), and held-out queries
drawn from the same mixture. Random Gaussian vectors are the wrong test for ANN: in high dimension they have no
neighbourhood structure, while real embeddings are clustered. ``--data gaussian`` runs the same sweep on them (plain
normalised Gaussian vectors, no centres) to show it; README › Performance sets its kept run's best recalls beside
the mixture's.

For each index the script reports build time, recall@k (fraction of the exact top-k found, ground truth from
``ExactIndex``) and the median / 90th-percentile latency of single-query searches (one query per call, as in an
interactive app). Goal from the course: recall@10 >= 0.95 at < 2 ms per query. ``--json`` keeps the run's record;
``--readme`` renders README › Performance › Approximate search from the last record kept in ``results/bench/faiss/``.

    .venv/bin/python benchmarks/bench_faiss.py                 # quick: n = 100,000
    .venv/bin/python benchmarks/bench_faiss.py --n 1000000 --json results/bench/faiss/<time>.json  # HNSW build ~10 min
    .venv/bin/python benchmarks/bench_faiss.py --data gaussian --json results/bench/faiss/<time>-gaussian.json
    .venv/bin/python benchmarks/bench_faiss.py --readme
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import bench_records  # noqa: E402
from course_utils.index import ExactIndex, FaissIndex  # noqa: E402

RECORDS = bench_records.BENCH_RECORDS / "faiss"
README_MARKERS = ("<!-- bench-faiss:start -->", "<!-- bench-faiss:end -->")
GOAL = {"recall": 0.95, "median_ms": 2.0}  # the course's goal for approximate search: recall@10 >= 0.95 at < 2 ms


def unit_rows(n: int, d: int, draw, block: int = 100_000) -> np.ndarray:
    """(n, d) float32: ``draw(m)`` gives ``m`` raw rows at a time (blocks of ``block``), each L2-normalised."""
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, block):
        x = draw(min(block, n - start))
        out[start : start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def gaussian_mixture(n: int, centres: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """(n, d) float32 unit vectors: normalise(centre + noise), centres drawn uniformly, noise norm ~ spread."""
    d = centres.shape[1]
    return unit_rows(
        n,
        d,
        lambda m: (
            centres[rng.integers(0, len(centres), m)]
            + rng.standard_normal((m, d), dtype=np.float32) * (spread / math.sqrt(d))
        ),
    )


def gaussian_unit_vectors(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) float32 normalised standard-normal vectors: directions uniform on the sphere, no clusters."""
    return unit_rows(n, d, lambda m: rng.standard_normal((m, d), dtype=np.float32))


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k present in the found top-k."""
    k = exact.shape[1]
    return float(np.mean([len(set(f.tolist()) & set(e.tolist())) / k for f, e in zip(found, exact, strict=True)]))


def single_query_latencies(index: ExactIndex | FaissIndex, queries: np.ndarray, k: int) -> np.ndarray:
    """Seconds per ``index.search(one query, k)``, after one warm-up call."""
    index.search(queries[:1], k)
    times = np.empty(len(queries))
    for i in range(len(queries)):
        start = time.perf_counter()
        index.search(queries[i : i + 1], k)
        times[i] = time.perf_counter() - start
    return times


def data_kind(run: dict) -> str:
    """The run's data: ``mixture`` (runs kept before ``--data`` existed) or ``gaussian``."""
    return run["arguments"].get("data", "mixture")


def best_recalls(run: dict) -> str:
    """Each ANN index's best recall@k over its sweep, with the setting that reached it."""
    k, best = run["arguments"]["k"], {}
    for row in run["rows"]:
        kind = row["index"].split()[0]
        if kind in ("IVF-Flat", "HNSW") and row[f"recall@{k}"] > best.get(kind, {}).get(f"recall@{k}", -1):
            best[kind] = row
    return ", ".join(f"{kind} {row[f'recall@{k}']:.3f} ({row['params']})" for kind, row in best.items())


def gaussian_comparison(gaussian: dict, mixture: dict) -> str:
    """Why the data are clustered: the best recalls of a ``--data gaussian`` run beside the mixture run's."""
    a, k = gaussian["arguments"], gaussian["arguments"]["k"]
    return (
        f"**Why clustered data:** on {a['n']:,} × {a['dim']} random Gaussian unit vectors "
        f"(`--data gaussian`, {gaussian['conditions']['date_utc']} UTC, commit {gaussian['conditions']['commit']}, "
        f"{a['queries']:,} queries) the best recall@{k} of each index over the same kind of sweep was "
        f"{best_recalls(gaussian)}; on the {mixture['arguments']['n']:,}-vector mixture above, "
        f"{best_recalls(mixture)}. Without clusters a point's true neighbours are barely nearer than any other "
        "point, so an inverted list or a graph must visit far more of the data to find them."
    )


def run_section(run: dict) -> str:
    """One run: its data, build times and the recall / latency sweep with the goal per row."""
    a, k = run["arguments"], run["arguments"]["k"]
    data = (
        f"unit vectors from a Gaussian mixture of {a['centres']:,} centres (noise norm {a['spread']})"
        if data_kind(run) == "mixture"
        else "random Gaussian unit vectors (no clusters)"
    )
    return "\n\n".join(
        [
            bench_records.run_heading(run, RECORDS),
            f"Data: {a['n']:,} × {a['dim']} {data}, {a['queries']:,} held-out queries; faiss "
            f"{run['conditions']['faiss']} on {run['conditions']['faiss_threads']} threads; single-query latency over "
            f"{a['latency_queries']} queries ({a['exact_latency_queries']} for the exact baselines). Build:",
            bench_records.markdown_table(run["builds"], ["index", "train s", "add s", "total s", "note"]),
            f"Recall@{k} against single-query latency (goal: recall@{k} ≥ {GOAL['recall']} at < {GOAL['median_ms']:g} "
            "ms per query):",
            bench_records.markdown_table(
                run["rows"], ["index", "params", f"recall@{k}", "median ms/query", "p90 ms/query", "goal met"]
            ),
        ]
    )


def readme_section(runs: list[dict]) -> str:
    """The last kept mixture run (:func:`run_section`); then, where a ``--data gaussian`` run was kept, the last
    one's best recalls beside the mixture's."""
    mixture = [run for run in runs if data_kind(run) == "mixture"]
    gaussian = [run for run in runs if data_kind(run) == "gaussian"]
    if not mixture:
        raise SystemExit("no kept run on the Gaussian mixture (the default --data) among the records")
    comparison = [gaussian_comparison(gaussian[-1], mixture[-1])] if gaussian else []
    return "\n\n".join([run_section(mixture[-1]), *comparison])


def write_readme(check: bool, readme: Path = bench_records.README, folder: Path = RECORDS) -> int:
    """README › Performance › Approximate search from the runs kept in ``folder`` (``check``: compare only)."""
    return bench_records.render_readme(Path(__file__).name, folder, README_MARKERS, readme_section, check, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="indexed vectors (1000000 for the full run)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument(
        "--data",
        choices=["mixture", "gaussian"],
        default="mixture",
        help="mixture: clustered unit vectors (the benchmark); gaussian: plain random unit vectors, "
        "to see ANN indexes fail where there is no neighbourhood structure",
    )
    parser.add_argument("--centres", type=int, default=1000, help="Gaussian mixture components")
    parser.add_argument("--spread", type=float, default=1.5, help="noise norm relative to the unit centre")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries for recall")
    parser.add_argument("--latency-queries", type=int, default=200, help="queries timed one by one (ANN indexes)")
    parser.add_argument("--exact-latency-queries", type=int, default=20, help="queries timed one by one (exact)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 4*sqrt(n), e.g. 4000 at 1M)")
    parser.add_argument("--train-size", type=int, default=0, help="IVF k-means sample (0: min(n, 50*nlist))")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--skip-hnsw", action="store_true", help="skip the (slow) HNSW build")
    parser.add_argument("--threads", type=int, default=0, help="FAISS/torch threads (0: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    bench_records.add_record_options(parser, "Performance › Approximate search")
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme(args.check)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    nlist = args.nlist or int(4 * math.sqrt(args.n))
    train_size = args.train_size or min(args.n, 50 * nlist)

    conditions = bench_records.RunConditions()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    if args.data == "mixture":
        print(
            f"data: Gaussian mixture of {args.centres:,} random unit centres, noise norm {args.spread}, "
            f"L2-normalised; n={args.n:,}, d={args.dim}, {args.queries:,} held-out queries from the same mixture; "
            f"k={args.k}\n"
        )
        centres = rng.standard_normal((args.centres, args.dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        base = gaussian_mixture(args.n, centres, args.spread, rng)
        queries = gaussian_mixture(args.queries, centres, args.spread, rng)
    else:
        print(
            f"data: random Gaussian unit vectors (no clusters); n={args.n:,}, d={args.dim}, {args.queries:,} "
            f"queries; k={args.k}\n"
        )
        base = gaussian_unit_vectors(args.n, args.dim, rng)
        queries = gaussian_unit_vectors(args.queries, args.dim, rng)
    latency_queries = queries[: args.latency_queries]
    print(f"generated data in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    builds: list[dict[str, object]] = []
    rows: list[dict[str, object]] = []

    def add_row(index_name: str, params: str, found: np.ndarray, latencies: np.ndarray) -> None:
        r = recall(found, exact_ids)
        median_ms = float(np.median(latencies) * 1e3)
        rows.append(
            {
                "index": index_name,
                "params": params,
                f"recall@{args.k}": r,
                "median ms/query": median_ms,
                "p90 ms/query": float(np.percentile(latencies, 90) * 1e3),
                "goal met": "yes" if r >= GOAL["recall"] and median_ms < GOAL["median_ms"] else "no",
            }
        )
        print(f"... {index_name} {params}: recall {r:.3f}, {median_ms:.2f} ms", file=sys.stderr)

    # Exact ground truth (batched) and the exact single-query baselines.
    exact = ExactIndex(args.dim)
    start = time.perf_counter()
    exact.add(base)
    builds.append({"index": "ExactIndex (torch)", "train s": 0.0, "add s": time.perf_counter() - start})
    start = time.perf_counter()
    _, exact_ids = exact.search(queries, args.k)
    print(f"ground truth: {time.perf_counter() - start:.1f} s for {args.queries} queries", file=sys.stderr)
    exact_queries = queries[: args.exact_latency_queries]
    add_row("ExactIndex (torch)", "float32", exact_ids, single_query_latencies(exact, exact_queries, args.k))
    del exact

    flat = FaissIndex(args.dim, kind="flat")
    start = time.perf_counter()
    flat.add(base)
    builds.append({"index": "FAISS Flat", "train s": 0.0, "add s": time.perf_counter() - start})
    found = flat.search(queries, args.k)[1]
    add_row("FAISS Flat", "exact", found, single_query_latencies(flat, exact_queries, args.k))
    del flat

    ivf = FaissIndex(args.dim, kind="ivf", nlist=nlist)
    start = time.perf_counter()
    ivf.train(base[rng.choice(args.n, size=train_size, replace=False)])
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    ivf.add(base)
    builds.append(
        {
            "index": f"FAISS IVF-Flat, nlist={nlist}",
            "train s": train_s,
            "add s": time.perf_counter() - start,
            "note": f"k-means on {train_size:,} vectors",
        }
    )
    for nprobe in args.nprobe:
        if nprobe > nlist:
            continue
        ivf.nprobe = nprobe
        found = ivf.search(queries, args.k)[1]
        add_row(
            f"IVF-Flat nlist={nlist}", f"nprobe={nprobe}", found, single_query_latencies(ivf, latency_queries, args.k)
        )
    del ivf

    if not args.skip_hnsw:
        hnsw = FaissIndex(args.dim, kind="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
        start = time.perf_counter()
        hnsw.add(base)
        builds.append(
            {
                "index": f"FAISS HNSW-Flat, M={args.hnsw_m}",
                "train s": 0.0,
                "add s": time.perf_counter() - start,
                "note": f"efConstruction={args.ef_construction}",
            }
        )
        for ef in args.ef_search:
            hnsw.ef_search = ef
            found = hnsw.search(queries, args.k)[1]
            add_row(
                f"HNSW M={args.hnsw_m}", f"efSearch={ef}", found, single_query_latencies(hnsw, latency_queries, args.k)
            )
        del hnsw

    for b in builds:
        b["total s"] = float(b["train s"]) + float(b["add s"])
    record = {
        "conditions": conditions.finish(
            faiss=faiss.__version__, faiss_threads=faiss.omp_get_max_threads(), torch=torch.__version__
        ),
        "arguments": {**bench_records.arguments(args), "nlist": nlist, "train_size": train_size},
        "builds": builds,
        "rows": rows,
    }
    bench_records.keep_then_print(record, args.json, lambda runs: run_section(runs[0]))  # mixture or not
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
