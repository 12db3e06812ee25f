"""An index bigger than RAM: IVF-PQ with on-disk inverted lists (``course_utils.index_ondisk``), at millions of vectors.

Data: CLUSTERED unit vectors with local structure, generated chunk by chunk from a per-chunk seed (never all in RAM):
``normalise(centre_c + z B_c + noise)`` with ``--centres`` random unit centres, for each cluster its own random
``(--latent, d)`` basis ``B_c`` (``z`` standard normal, offset norm about ``--latent-norm``: the points of a cluster
spread along a low-dimensional subspace of their own, as real embeddings of one kind of item do) and isotropic
noise of norm ``--noise``. Queries are drawn from the
same mixture with another seed. Never plain Gaussian noise: it has no neighbourhood structure in 512 dimensions.

One streaming pass over the chunks (1) adds each chunk as an independent IVF-PQ shard, (2) writes it as float16 to
``vectors.f16`` (the "vectors at hand" for exact re-ranking, read back row by row) and (3) updates the exact top-k of
every query (ground truth by streaming). Shards are merged into one on-disk lists file. The search runs in a fresh
child process, so its resident memory (VmRSS, peak VmHWM) is the searcher's alone: centroids and codebooks in RAM,
lists memory-mapped.

Printed: build time by phase, file sizes, then per (nprobe, re-rank candidates): recall@k against exact, median and
90th-percentile latency of single-query searches, resident memory of the search process.
``--rows-reader memmap`` reads the re-ranking rows through ``numpy.memmap`` instead of ``pread``, to show what a
memory map adds to the search process's resident memory (README › Scaling out compares it with the ``pread`` run).
The files are written just before the search, and by default (``--page-cache warm``) each setting's queries run
once untimed before the timed pass, so every timed read is served from the page cache. ``--page-cache cold`` evicts
the float16 vectors file from this machine's page cache before each timed query (``posix_fadvise(DONTNEED)``), so
every re-ranked candidate is a read from the disk; the lists file, which FAISS memory-maps, stays cached once
touched (mapped pages are not evicted), and the virtual disk's host may cache too.

``--json`` keeps the run's record; ``--readme`` renders README › Scaling out's tables from the records kept in
``results/bench/ivfpq_ondisk/`` (the last per ``--n``; a run on other data than the default mixture, such as
``--centres 100``, in a table of its own after them).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ivfpq_ondisk.py --json results/bench/ivfpq_ondisk/<time>-1M.json
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_ivfpq_ondisk.py --n 5000000 > ivfpq-5M.txt 2>&1 &
    .venv/bin/python benchmarks/bench_ivfpq_ondisk.py --readme
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils import bench_records  # noqa: E402
from course_utils.index import ExactIndex  # noqa: E402
from course_utils.index_ondisk import (  # noqa: E402
    NpyRows,
    RerankedIndex,
    add_shard,
    merge_shards,
    open_ondisk,
    train_ivfpq,
)
from course_utils.paths import cache_dir  # noqa: E402


class Mixture:
    """The clustered distribution; ``sample(n, stream, i)`` is the same array on every call (seeded by its
    arguments)."""

    def __init__(self, dim: int, centres: int, latent: int, latent_norm: float, noise: float, seed: int) -> None:
        rng = np.random.default_rng([seed, 0])
        self.centres = rng.standard_normal((centres, dim), dtype=np.float32)
        self.centres /= np.linalg.norm(self.centres, axis=1, keepdims=True)
        # each cluster spreads along its own random `latent`-dimensional subspace: (centres, latent, d)
        scale = latent_norm / math.sqrt(latent * dim)
        self.bases = rng.standard_normal((centres, latent, dim), dtype=np.float32) * np.float32(scale)
        self.dim, self.noise, self.seed = dim, noise, seed

    def sample(self, n: int, stream: int, index: int) -> np.ndarray:
        """(n, d) float32 unit vectors from the random stream (seed, stream, index)."""
        rng = np.random.default_rng([self.seed, stream, index])
        labels = rng.integers(0, len(self.centres), n)
        latent = rng.standard_normal((n, self.bases.shape[1]), dtype=np.float32)
        x = rng.standard_normal((n, self.dim), dtype=np.float32) * np.float32(self.noise / math.sqrt(self.dim))
        x += self.centres[labels]
        for label in np.unique(labels):  # one small matmul per cluster present in the chunk
            rows = np.flatnonzero(labels == label)
            x[rows] += latent[rows] @ self.bases[label]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, n)) for start in range(0, n, chunk)]


def merge_topk(best: tuple[np.ndarray, np.ndarray] | None, scores: np.ndarray, ids: np.ndarray, k: int):
    """Keep the k best of the running (q, k) and a chunk's (q, k) candidates."""
    if best is None:
        return scores, ids
    all_scores, all_ids = np.concatenate([best[0], scores], 1), np.concatenate([best[1], ids], 1)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_scores, order, 1), np.take_along_axis(all_ids, order, 1)


def memory_mb() -> dict[str, float]:
    """Resident memory of this process from /proc (MB): total, peak, anonymous and file-backed (mapped files)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def build(args: argparse.Namespace, folder: Path) -> dict:
    """Train, add shards, write vectors, stream the ground truth, merge; returns timings (each phase apart) and
    sizes."""
    mixture = Mixture(args.dim, args.centres, args.latent, args.latent_norm, args.noise, args.seed)
    queries = mixture.sample(args.queries, stream=1, index=0)
    np.save(folder / "queries.npy", queries)
    bounds = chunk_bounds(args.n, args.chunk)
    timings = {}

    start = time.perf_counter()
    sample_chunks = math.ceil(args.train_size / args.chunk)
    sample = np.concatenate([mixture.sample(b - a, 0, i) for i, (a, b) in enumerate(bounds[:sample_chunks])])
    train_ivfpq(sample[: args.train_size], folder, nlist=args.nlist, pq_m=args.pq_m)
    del sample
    timings["train s"] = time.perf_counter() - start

    vectors = NpyRows.create(folder / "vectors.f16.npy", (args.n, args.dim), np.float16)
    add_seconds = write_seconds = truth_seconds = 0.0
    best = None
    for i, (a, b) in enumerate(bounds):
        chunk = mixture.sample(b - a, 0, i)
        t0 = time.perf_counter()
        add_shard(folder, i, chunk, ids=np.arange(a, b))
        t1 = time.perf_counter()
        vectors.write(a, chunk)
        t2 = time.perf_counter()
        exact = ExactIndex(args.dim, chunk_size=8192)
        exact.add(chunk)
        scores, positions = exact.search(queries, args.k)
        best = merge_topk(best, scores, positions + a, args.k)
        add_seconds += t1 - t0
        write_seconds += t2 - t1
        truth_seconds += time.perf_counter() - t2
        if i % max(1, len(bounds) // 10) == 0:
            print(
                f"  chunk {i + 1}/{len(bounds)}: add {add_seconds:.0f} s, float16 write {write_seconds:.0f} s, "
                f"ground truth {truth_seconds:.0f} s, RSS {memory_mb()['VmRSS']:.0f} MB",
                flush=True,
            )
    vectors.close()
    np.save(folder / "truth.npy", best[1])
    timings["add shards s"], timings["ground truth s"] = add_seconds, truth_seconds
    timings["float16 write s"] = write_seconds

    start = time.perf_counter()
    merge_shards(folder)
    timings["merge s"] = time.perf_counter() - start
    shard_bytes = sum(p.stat().st_size for p in folder.glob("shard-*.index"))
    for shard in [*folder.glob("shard-*.index"), *folder.glob("shard-*.json")]:
        shard.unlink()  # merged: the shards (and their records) are no longer needed
    timings["build s (train + add + merge)"] = timings["train s"] + add_seconds + timings["merge s"]
    timings["build peak RSS MB"] = memory_mb()["VmHWM"]
    timings["lists file MB"] = (folder / "lists.ivfdata").stat().st_size / 1e6
    timings["shards MB"] = shard_bytes / 1e6
    timings["vectors.f16 MB"] = (folder / "vectors.f16.npy").stat().st_size / 1e6
    return timings


def search(args: argparse.Namespace, folder: Path) -> None:
    """Child process: open the on-disk index, sweep nprobe x re-rank candidates, print one JSON line per setting."""
    import faiss

    faiss.omp_set_num_threads(1)
    before = memory_mb()
    index = open_ondisk(folder)
    path = folder / "vectors.f16.npy"
    # re-ranking reads candidate rows with pread (nothing mapped), or through numpy.memmap to compare the two
    vectors = NpyRows(path) if args.rows_reader == "pread" else np.load(path, mmap_mode="r")
    queries, truth = np.load(folder / "queries.npy"), np.load(folder / "truth.npy")
    # --page-cache cold: advice on a descriptor of our own reaches the file's pages whoever reads them
    cold_fd = os.open(path, os.O_RDONLY) if args.page_cache == "cold" else None
    if cold_fd is not None:
        os.fsync(cold_fd)  # written by the parent: only clean pages can be evicted

    def evict_rows() -> None:
        """Before a timed query: nothing of the vectors file left in the page cache (``--page-cache cold``)."""
        if cold_fd is not None:
            os.posix_fadvise(cold_fd, 0, 0, os.POSIX_FADV_DONTNEED)

    print(json.dumps({"opened": True, "memory": memory_mb(), "before open": before}), flush=True)
    for nprobe in args.nprobe:
        index.nprobe = nprobe
        for candidates in args.rerank:
            searcher = RerankedIndex(index, vectors, candidates) if candidates else index
            # warm: one untimed pass over every query first, so that each timed read hits the page cache (the
            # build's files need not all have stayed there: at 10M the first re-ranked setting read from the disk)
            for q in range(len(queries) if args.page_cache == "warm" else 1):
                searcher.search(queries[q : q + 1], args.k)
            times, found = np.empty(len(queries)), np.empty((len(queries), args.k), dtype=np.int64)
            for q in range(len(queries)):
                evict_rows()
                t0 = time.perf_counter()
                found[q] = searcher.search(queries[q : q + 1], args.k)[1][0]
                times[q] = time.perf_counter() - t0
            recall = np.mean([len(set(f) & set(t)) / args.k for f, t in zip(found, truth, strict=True)])
            print(
                json.dumps(
                    {
                        "nprobe": nprobe,
                        "rerank": candidates,
                        "recall": float(recall),
                        "median ms": 1000 * float(np.median(times)),
                        "p90 ms": 1000 * float(np.percentile(times, 90)),
                        "memory": memory_mb(),
                    }
                ),
                flush=True,
            )


RECORDS = bench_records.BENCH_RECORDS / "ivfpq_ondisk"
README_MARKERS = ("<!-- bench-ivfpq-ondisk:start -->", "<!-- bench-ivfpq-ondisk:end -->")
# Issue 16's goals for an index bigger than RAM: search RSS, recall@10, latency, build time on 2 cores.
GOALS = {"rss_mb": 2000, "recall": 0.90, "median_ms": 10.0, "build_s": 30 * 60}
# The mixture's defaults. On it, 1,000 centres for about 1,024 lists, a centre's points mostly share a list, so
# recall hardly depends on nprobe; a run with other data (e.g. --centres 100: k-means splits each cluster over
# several lists) gets its own table after the default data's.
DEFAULT_DATA = {"centres": 1000, "latent": 32, "latent_norm": 0.8, "noise": 0.3}


def setting(row: dict) -> list:
    """A sweep row's first two cells: its nprobe and its re-rank candidates ("—" for none)."""
    return [row["nprobe"], row["rerank"] or "—"]


def table_rows(columns: list[str], cells: list[list]) -> list[dict]:
    """Rows of cells as the dicts ``bench_records.markdown_table`` reads."""
    return [dict(zip(columns, row, strict=True)) for row in cells]


def data_of(run: dict) -> dict:
    """The run's mixture parameters (:data:`DEFAULT_DATA`'s keys)."""
    return {name: run["arguments"].get(name, default) for name, default in DEFAULT_DATA.items()}


def run_table(run: dict) -> str:
    """One kept run: its data and build, the nprobe x re-rank sweep, and the settings that meet every goal."""
    a, build, opened = run["arguments"], run["build"], run["opened"]
    data = data_of(run)
    other_data = (
        f", clustered around {data['centres']:,} centres (latent {data['latent']}-d of norm {data['latent_norm']}, "
        f"noise {data['noise']})"
        if data != DEFAULT_DATA
        else ""
    )
    columns = [
        "nprobe",
        "re-rank candidates",
        f"recall@{a['k']}",
        "median ms/query",
        "p90 ms/query",
        "search process RSS",
    ]
    table = table_rows(
        columns,
        [
            [*setting(row), f"{row['recall']:.3f}", f"{row['median ms']:.2f}", f"{row['p90 ms']:.2f}"]
            + [f"{row['memory']['VmRSS']:,.0f} MB"]
            for row in run["rows"]
        ],
    )
    meeting = [
        row
        for row in run["rows"]
        if row["recall"] >= GOALS["recall"]
        and row["median ms"] <= GOALS["median_ms"]
        and row["memory"]["VmRSS"] <= GOALS["rss_mb"]
    ]
    build_s = build["build s (train + add + merge)"]
    met = meeting and build_s <= GOALS["build_s"]
    fastest = min(meeting, key=lambda row: row["median ms"]) if meeting else None
    return "\n\n".join(
        [
            f"**{a['n']:,} × {a['dim']}**{other_data}, IVF{a['nlist']},PQ{a['pq_m']} trained on "
            f"{a['train_size']:,} vectors, "
            f"{a['queries']:,} held-out queries. " + bench_records.run_heading(run, RECORDS, lead="Measured", end="."),
            bench_records.markdown_table(table, columns),
            f"Build {build_s:,.0f} s (train {build['train s']:,.0f} s, add {build['add shards s']:,.0f} s, merge "
            f"{build['merge s']:.1f} s) plus {ground_truth(build)}; peak RSS while "
            f"building {build['build peak RSS MB']:,.0f} MB; on disk {build['lists file MB']:,.0f} MB of lists and "
            f"{build['vectors.f16 MB']:,.0f} MB of float16 vectors for re-ranking "
            f"({build['shards MB']:,.0f} MB of shards, deleted after the merge). "
            f"The search process holds {opened['before open']['VmRSS']:,.0f} MB before opening "
            f"the index (Python, numpy, torch, faiss). Goals (search RSS ≤ {GOALS['rss_mb']:,} MB, recall@{a['k']} ≥ "
            f"{GOALS['recall']}, ≤ {GOALS['median_ms']:g} ms per query, build ≤ {GOALS['build_s'] // 60} min): "
            + (
                f"met by {len(meeting)} of {len(run['rows'])} settings, the fastest nprobe {fastest['nprobe']} with "
                f"{fastest['rerank']} candidates re-ranked ({fastest['median ms']:.2f} ms median)."
                if met
                else "not met."
            ),
        ]
    )


def ground_truth(build: dict) -> str:
    """``"37 s of streamed ground truth and 4 s writing the float16 vectors"``; a record kept before the two were
    timed apart gives their sum, and says so."""
    truth = f"{build['ground truth s']:,.0f} s"
    if "float16 write s" not in build:
        return f"{truth} of streamed ground truth and float16 vector writes (timed together)"
    return f"{truth} of streamed ground truth and {build['float16 write s']:,.0f} s writing the float16 vectors"


def rows_reader(run: dict) -> str:
    """How the run's re-ranking read candidate rows (runs kept before ``--rows-reader`` existed used pread)."""
    return run["arguments"].get("rows_reader", "pread")


def memmap_comparison(memmap_run: dict, pread_run: dict) -> str:
    """What reading the re-ranking rows through ``numpy.memmap`` costs against ``pread`` on the same index: the
    search process's file-backed and total resident memory after the last setting of each sweep."""
    a, mapped, read = memmap_run["arguments"], memmap_run["rows"][-1]["memory"], pread_run["rows"][-1]["memory"]
    differing = [name for name in a if name != "rows_reader" and a[name] != pread_run["arguments"].get(name)]
    settings = (
        f"the same {len(memmap_run['rows'])} settings"
        if not differing
        else f"arguments differing in {', '.join(differing)}"
    ) + f" of {a['queries']:,} queries each"
    return (
        f"**Why `pread`:** the same {a['n']:,}-vector index searched with `--rows-reader memmap` "
        f"({memmap_run['conditions']['date_utc']} UTC, commit {memmap_run['conditions']['commit']}, "
        f"{settings}): after the sweep the search process's file-backed resident memory was "
        f"{mapped['RssFile']:,.0f} MB ({mapped['VmRSS']:,.0f} MB in all) against {read['RssFile']:,.0f} MB "
        f"({read['VmRSS']:,.0f} MB) with `pread`. Both count the libraries and the mapped lists file; the memory "
        f"map adds the pages of the {memmap_run['build']['vectors.f16 MB']:,.0f} MB vectors file that the queries "
        "touched, and their neighbours, as the process's own. The machine holds those pages either way (with "
        "`pread`, in its page cache, outside the process's count), and it can drop clean pages of a mapped file as "
        "readily as the page cache's: `pread` keeps the search process's own footprint small, not the machine's."
    )


def page_cache(run: dict) -> str:
    """Whether the run's timed reads were served warm or evicted first (runs kept before ``--page-cache`` were warm)."""
    return run["arguments"].get("page_cache", "warm")


def cold_comparison(cold_run: dict, warm_run: dict) -> str:
    """The settings a ``--page-cache cold`` run shares with the warm table above it: median and p90 ms both ways,
    with the goal's verdict on the cold latency."""
    warm = {(row["nprobe"], row["rerank"]): row for row in warm_run["rows"]}
    columns = ["nprobe", "re-rank candidates", "median ms warm", "median ms cold", "p90 ms cold", "recall@k cold"]
    table = table_rows(
        columns,
        [
            [*setting(row), f"{warm[row['nprobe'], row['rerank']]['median ms']:.2f}", f"{row['median ms']:.2f}"]
            + [f"{row['p90 ms']:.2f}", f"{row['recall']:.3f}"]
            for row in cold_run["rows"]
            if (row["nprobe"], row["rerank"]) in warm
        ],
    )
    within = [
        row for row in cold_run["rows"] if row["recall"] >= GOALS["recall"] and row["median ms"] <= GOALS["median_ms"]
    ]
    hosts = [bench_records.processor(run["conditions"]) for run in (warm_run, cold_run)]
    other_host = (
        f" The warm run above was on another host ({hosts[0]}, against {hosts[1]}): the two columns differ by host too."
        if hosts[0] != hosts[1]
        else ""
    )
    return "\n\n".join(
        [
            f"**Cold reads** (`--page-cache cold`: the float16 vectors file evicted from the page cache before each "
            f"query, so every re-ranked candidate is read from the disk; the lists file, memory-mapped by FAISS, "
            f"stays cached once touched): the same {cold_run['arguments']['n']:,}-vector index rebuilt and searched "
            + bench_records.run_heading(cold_run, RECORDS, lead="on", end="."),
            bench_records.markdown_table(table, columns),
            f"Cold, {len(within)} of {len(cold_run['rows'])} settings keep recall@{cold_run['arguments']['k']} ≥ "
            f"{GOALS['recall']} within {GOALS['median_ms']:g} ms per query (median).{other_host}",
        ]
    )


def nprobe_curve(run: dict) -> str:
    """``"with 100 candidates re-ranked, recall@10 by nprobe: 0.363 at 1, 0.559 at 2"``: recall by nprobe at the
    run's largest re-rank setting."""
    most = max(row["rerank"] for row in run["rows"])
    recalls = ", ".join(
        f"{row['recall']:.3f} at {row['nprobe']}"
        for row in sorted(run["rows"], key=lambda row: row["nprobe"])
        if row["rerank"] == most
    )
    reranked = f"with {most} candidates re-ranked" if most else "without re-ranking"
    return f"{reranked}, recall@{run['arguments']['k']} by nprobe: {recalls}"


def readme_section(runs: list[dict]) -> str:
    """The default data's tables, then each other mixture's (:func:`data_section`), their runs' recall by nprobe
    after each of their tables."""
    others: dict[tuple, list[dict]] = {}
    for run in runs:
        if data_of(run) != DEFAULT_DATA:
            others.setdefault(tuple(data_of(run).values()), []).append(run)
    default = data_section([run for run in runs if data_of(run) == DEFAULT_DATA], nprobe_matters=False)
    return "\n\n".join([default, *(data_section(others[data], nprobe_matters=True) for data in sorted(others))])


def data_section(runs: list[dict], nprobe_matters: bool) -> str:
    """The runs on one mixture: the last kept warm ``pread`` run of each size, smallest first, each followed by the
    memmap comparison when a ``--rows-reader memmap`` run of that size was kept, and by the cold-read comparison when
    a ``--page-cache cold`` run was (a size kept only with memmap or only cold gets that run's own table);
    ``nprobe_matters`` (data other than the default mixture): each table followed by its recall by nprobe."""
    last = {run["arguments"]["n"]: run for run in runs if rows_reader(run) == "pread" and page_cache(run) == "warm"}
    mapped = {run["arguments"]["n"]: run for run in runs if rows_reader(run) == "memmap"}
    cold = {run["arguments"]["n"]: run for run in runs if page_cache(run) == "cold"}
    sections = []
    for n in sorted(last.keys() | mapped.keys() | cold.keys()):
        shown = last.get(n) or mapped.get(n) or cold[n]
        sections.append(run_table(shown))
        if nprobe_matters:
            sections.append(f"On these data nprobe matters: {nprobe_curve(shown)}.")
        if n in last and n in mapped:
            sections.append(memmap_comparison(mapped[n], last[n]))
        if n in last and n in cold:
            sections.append(cold_comparison(cold[n], last[n]))
    return "\n\n".join(sections)


def write_readme(check: bool, readme: Path = bench_records.README, folder: Path = RECORDS) -> int:
    """README › Scaling out's on-disk tables from the runs kept in ``folder`` (``check``: compare only)."""
    return bench_records.render_readme(Path(__file__).name, folder, README_MARKERS, readme_section, check, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="indexed vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=100_000, help="vectors generated (and one shard) at a time")
    parser.add_argument("--centres", type=int, default=DEFAULT_DATA["centres"], help="mixture components")
    parser.add_argument("--latent", type=int, default=DEFAULT_DATA["latent"], help="dimension of each cluster's spread")
    parser.add_argument(
        "--latent-norm", type=float, default=DEFAULT_DATA["latent_norm"], help="norm of the in-cluster (latent) offset"
    )
    parser.add_argument("--noise", type=float, default=DEFAULT_DATA["noise"], help="norm of the isotropic noise")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0: 2^round(log2(sqrt(n))))")
    parser.add_argument("--pq-m", type=int, default=64, help="bytes of PQ code per vector")
    parser.add_argument("--train-size", type=int, default=0, help="k-means sample (0: 40 * nlist)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--rerank", type=int, nargs="+", default=[0, 100], help="candidates re-scored (0: none)")
    parser.add_argument(
        "--rows-reader",
        choices=["pread", "memmap"],
        default="pread",
        help="how re-ranking reads candidate rows from vectors.f16.npy: pread (index_ondisk.NpyRows, "
        "the course's way) or numpy.memmap (to see what a memory map adds to the search "
        "process's resident memory)",
    )
    parser.add_argument(
        "--page-cache",
        choices=["warm", "cold"],
        default="warm",
        help="warm: each setting's queries run once untimed, so the timed pass reads from the page cache; cold: "
        "the vectors file is evicted from the page cache before each timed query (needs --rows-reader pread)",
    )
    parser.add_argument(
        "--folder",
        default=None,
        help="where the index is built, emptied first: a new or empty folder, or one an earlier run made "
        "(default: cache/ivfpq-bench-<n>)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder afterwards")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search-only", action="store_true", help=argparse.SUPPRESS)
    bench_records.add_record_options(parser, "Scaling out")
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme(args.check)
    if any(0 < candidates < args.k for candidates in args.rerank):
        parser.error(f"--rerank {args.rerank}: each is 0 (no re-ranking) or at least --k {args.k} candidates")
    if args.page_cache == "cold" and args.rows_reader != "pread":
        parser.error(
            "--page-cache cold evicts the rows pread reads; a memory map keeps its pages: use --rows-reader pread"
        )
    args.nlist = args.nlist or 2 ** round(math.log2(math.sqrt(args.n)))
    args.train_size = args.train_size or min(args.n, 40 * args.nlist)
    folder = Path(args.folder or cache_dir() / f"ivfpq-bench-{args.n}")
    if args.search_only:
        search(args, folder)
        return 0

    conditions = bench_records.RunConditions()
    print(
        f"data: {args.n:,} x {args.dim} clustered unit vectors ({args.centres} centres, latent {args.latent}-d "
        f"of norm {args.latent_norm}, noise {args.noise}); {args.queries:,} held-out queries; k={args.k}"
    )
    print(
        f"index: IVF{args.nlist},PQ{args.pq_m} (inner product), trained on {args.train_size:,} vectors; "
        f"shards of {args.chunk:,}; folder {folder}\n",
        flush=True,
    )
    bench_records.empty_own_folder(folder, "--folder", __file__)
    timings = build(args, folder)
    for key, value in timings.items():
        print(f"{key}: {value:,.1f}")
    print(flush=True)

    child = subprocess.run(
        [
            sys.executable,
            __file__,
            *(argv if argv is not None else sys.argv[1:]),
            "--folder",
            str(folder),
            "--search-only",
        ],
        capture_output=True,
        text=True,
    )
    if child.returncode:
        print(child.stderr)
        raise SystemExit(child.returncode)
    rows = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    opened = rows[0]
    record = {
        "conditions": conditions.finish(omp_num_threads=os.environ.get("OMP_NUM_THREADS")),
        "arguments": {
            name: value for name, value in bench_records.arguments(args).items() if name not in ("folder", "keep")
        },
        "build": timings,
        "opened": opened,
        "rows": rows[1:],
    }
    bench_records.keep_then_print(record, args.json, readme_section)
    if not args.keep:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
