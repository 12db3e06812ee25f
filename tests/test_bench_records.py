"""The benchmarks' records and the README sections rendered from them (``course_utils.bench_records``)."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import pytest

from course_utils import bench_records, lockfile, results
from tests.conftest import load_benchmark

# Every benchmark whose kept runs fill a README section, with a record of its shape to render.
RENDERED = [
    "bench_ci",
    "bench_classroom",
    "bench_runtimes",
    "bench_exact_search",
    "bench_faiss",
    "bench_embedding",
    "bench_ivfpq_ondisk",
    "bench_milvus",
    "bench_photo_pretrain",
    "bench_rerank",
]
CONDITIONS = {
    "date_utc": "2026-12-02 20:00",
    "commit": "abc1234",
    "command": "bench.py --n 1000",
    "machine": "x86_64, 2 cores, 24 GiB",
    "load_average_before_after": [0.2, 1.4],
}


def test_the_command_line_drops_the_record_path():
    assert (
        bench_records.command_line(["/x/bench_faiss.py", "--n", "1000000", "--json", "r/a.json", "--nprobe", "4"])
        == "bench_faiss.py --n 1000000 --nprobe 4"
    )
    assert bench_records.command_line(["bench.py", "--json=r/a.json", "--q", "a b"]) == "bench.py --q 'a b'"


def test_conditions_name_date_commit_command_machine_libraries_and_load(monkeypatch):
    monkeypatch.setattr("sys.argv", ["bench_x.py", "--n", "5", "--json", "out.json"])
    # /proc/stat's ticks as the run starts and ends (read for real, two calls apart, they can be the same tick: the
    # share is then unmeasured and left out of the record, which made this test flaky)
    readings = iter([(70, 1000), (120, 1200)])
    monkeypatch.setattr(bench_records, "cpu_ticks", lambda: next(readings))
    conditions = bench_records.RunConditions().finish(torch_threads=2, commit="override")
    assert conditions["command"] == "bench_x.py --n 5" and conditions["commit"] == "override"
    assert conditions["torch_threads"] == 2 and len(conditions["load_average_before_after"]) == 2
    assert conditions["machine"].endswith("GiB") and len(conditions["date_utc"]) == len("2026-12-02 20:00")
    assert conditions["cpu_steal_share"] == 0.25  # 50 of 200 ticks
    assert conditions["cpu"] and conditions["libraries"]["torch"] is not None  # what else decides the numbers
    assert conditions["kernels"] == results.kernel_choices()  # the kernels each library picked for the processor
    assert conditions["constraints"] == lockfile.environment_pins()  # and whether every other distribution is as pinned


def test_cpu_generation_is_the_signatures_generation_and_widest_vector_extension():
    assert (
        bench_records.cpu_generation(
            {"cpu_signature": "family 25 model 17 stepping 1; avx avx2 fma avx512f avx512_bf16 avx512_vnni"}
        )
        == "family 25 model 17, avx512f"
    )
    assert bench_records.cpu_generation({"cpu_signature": "family 25 model 1 stepping 1; avx avx2 fma"}) == (
        "family 25 model 1, avx2"
    )
    assert bench_records.cpu_generation({"cpu_signature": "family 6 model 85 stepping 7"}) == "family 6 model 85"
    assert bench_records.cpu_generation({"cpu": "AMD EPYC"}) == ""  # a record kept before the signature was


def test_cpu_steal_is_read_from_proc_stat_and_shown_in_the_heading(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 20 800 5 0 5 70 0 0\ncpu0 50 0 10 400 2 0 2 35 0 0\n")
    assert bench_records.cpu_ticks(stat) == (70, 1000)
    assert bench_records.cpu_ticks(tmp_path / "absent") is None
    assert bench_records.steal_share((70, 1000), (120, 1200)) == 0.25
    assert bench_records.steal_share(None, (120, 1200)) is None and bench_records.steal_share((1, 5), (1, 5)) is None
    run = {"conditions": {**CONDITIONS, "cpu_steal_share": 0.234}}
    assert "load average 0.2 before, 1.4 after, CPU steal 23%; commit abc1234" in bench_records.run_heading(
        run, bench_records.BENCH_RECORDS / "x"
    )
    assert "CPU steal" not in bench_records.run_heading({"conditions": CONDITIONS}, bench_records.BENCH_RECORDS / "x")


def test_the_heading_names_the_processor_where_the_record_has_its_signature():
    signature = "family 25 model 17 stepping 1; avx avx2 fma avx512f"
    run = {"conditions": {**CONDITIONS, "cpu_signature": signature}}
    assert "(x86_64, 2 cores, 24 GiB, family 25 model 17, avx512f, load average 0.2" in bench_records.run_heading(
        run, bench_records.BENCH_RECORDS / "x"
    )
    assert "(x86_64, 2 cores, 24 GiB, load average 0.2" in bench_records.run_heading(
        {"conditions": CONDITIONS}, bench_records.BENCH_RECORDS / "x"
    )


def test_a_printed_run_says_where_it_was_kept_or_that_it_was_not():
    folder = bench_records.BENCH_RECORDS / "x"
    run = {"conditions": CONDITIONS}
    assert bench_records.run_heading(run, folder).endswith("commit abc1234; record in `results/bench/x/`):")
    printed = bench_records.run_heading(bench_records.as_printed(run, None), folder)
    assert printed.endswith("commit abc1234; not kept: `--json FILE` keeps it):")
    kept = bench_records.run_heading(bench_records.as_printed(run, folder / "t.json"), folder)
    assert kept.endswith("commit abc1234; record in `results/bench/x/t.json`):")
    elsewhere = bench_records.run_heading(bench_records.as_printed(run, Path("/tmp/t.json")), folder)
    assert elsewhere.endswith("commit abc1234; record in `/tmp/t.json`):")
    assert "kept_at" not in run  # the record itself is left as it was kept


def test_arguments_leave_out_the_record_options_and_keep_paths_as_text():
    args = argparse.Namespace(n=5, folder=Path("/tmp/x"), json=Path("a.json"), readme=False, check=False)
    assert bench_records.arguments(args) == {"n": 5, "folder": "/tmp/x"}


def test_markdown_table_formats_cells_and_leaves_missing_ones_empty():
    rows = [{"index": "IVF", "recall": 0.98123, "ms": 1234.56, "n": 1000000}, {"index": "HNSW", "recall": 0.5}]
    text = bench_records.markdown_table(rows, ["index", "recall", "ms", "n"])
    assert text.splitlines() == [
        "| index | recall | ms | n |",
        "|---|---|---|---|",
        "| IVF | 0.981 | 1,234.6 | 1,000,000 |",
        "| HNSW | 0.500 |  |  |",
    ]


def test_keep_writes_the_record_and_kept_runs_read_oldest_first(tmp_path):
    for name, date in [("b.json", "2026-12-02 11:00"), ("a.json", "2026-12-02 12:00")]:
        bench_records.keep({"conditions": {**CONDITIONS, "date_utc": date}}, tmp_path / "runs" / name)
    runs = bench_records.read_kept_runs(tmp_path / "runs", "bench.py")
    assert [run["conditions"]["date_utc"] for run in runs] == ["2026-12-02 11:00", "2026-12-02 12:00"]
    with pytest.raises(SystemExit, match="run bench.py with --json"):
        bench_records.read_kept_runs(tmp_path, "bench.py")


def test_a_damaged_kept_run_is_named_with_the_command_that_keeps_one_again(tmp_path):
    bench_records.keep({"conditions": CONDITIONS}, tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"conditions": {"date_utc": "2026-')  # a run killed mid-write
    with pytest.raises(
        SystemExit, match=r"b.json is .*not a readable record .*`python benchmarks/bench.py --json .*b.json`"
    ):
        bench_records.read_kept_runs(tmp_path, "bench.py")
    (tmp_path / "b.json").write_text('{"rows": []}')  # some other JSON file in the records folder
    with pytest.raises(SystemExit, match=r"b.json lacks \['conditions'\], so it is not a record"):
        bench_records.read_kept_runs(tmp_path, "bench.py")


def test_markdown_table_keeps_the_reports_layout():
    assert bench_records.markdown_table([{"a": 1}], ["a", "b"]) == results.markdown_table_text(["a", "b"], [["1", ""]])


def test_render_readme_mends_a_stale_section_and_then_agrees(tmp_path, capsys):
    bench_records.keep({"conditions": CONDITIONS, "value": 3.5}, tmp_path / "runs" / "a.json")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- b:start -->\ntyped: 3.4\n<!-- b:end -->\nrest\n")

    def render(runs):
        return (
            f"{bench_records.run_heading(runs[-1], bench_records.REPO_ROOT / 'results')}\n\nvalue {runs[-1]['value']}"
        )

    args = ("bench.py", tmp_path / "runs", ("<!-- b:start -->", "<!-- b:end -->"), render)
    assert bench_records.render_readme(*args, check=True, readme=readme) == 1
    assert "; run python benchmarks/bench.py --readme\n" in capsys.readouterr().out  # runnable from the root
    assert bench_records.render_readme(*args, check=False, readme=readme) == 0
    assert bench_records.render_readme(*args, check=True, readme=readme) == 0
    text = readme.read_text()
    assert "typed" not in text and "value 3.5" in text and text.endswith("\nrest\n")
    assert (
        "**Measured** 2026-12-02 20:00 UTC by `bench.py --n 1000` (x86_64, 2 cores, 24 GiB, load average 0.2 "
        "before, 1.4 after; commit abc1234; record in `results/`):" in text
    )


def test_exact_search_section_judges_each_size_against_the_goal():
    bench = load_benchmark("bench_exact_search")
    rows = [
        {
            "n": n,
            "method": "ExactIndex float32, 1 query",
            "ms/query": ms,
            "queries/s": 1e3 / ms,
            "bound ms": 10.0,
            "× bound": ms / 10.0,
            "note": "",
        }
        for n, ms in [(100000, 12.0), (1000000, 140.0)]
    ]
    text = bench.readme_section([{"conditions": {**CONDITIONS, "torch": "2.14.1", "torch_threads": 2}, "rows": rows}])
    assert "| 1,000,000 | ExactIndex float32, 1 query | 140.0 |" in text
    assert "100,000: 1.20× (met); 1,000,000: 14.00× (not met)" in text
    assert "For comparison" not in text  # a record kept before the numpy row was timed
    numpy_row = {**rows[1], "method": f"{bench.NUMPY_ONE_SHOT} (scipy-openblas), 1 query", "× bound": 1.5}
    text = bench.readme_section(
        [{"conditions": {**CONDITIONS, "torch": "2.14.1", "torch_threads": 2}, "rows": [*rows, numpy_row]}]
    )
    assert "through numpy's BLAS (`numpy argpartition(gallery @ q)`, its top-k unsorted) against the same" in text
    assert "bound: 1,000,000: 1.50×." in text  # only the sizes numpy was timed at


# bench_faiss.py's arguments as a kept record holds them
FAISS_ARGUMENTS = {
    "n": 1000,
    "dim": 512,
    "centres": 10,
    "spread": 1.5,
    "queries": 50,
    "latency_queries": 20,
    "exact_latency_queries": 5,
    "k": 10,
}


def test_faiss_section_shows_builds_and_the_goal_per_row():
    bench = load_benchmark("bench_faiss")
    run = {
        "conditions": {**CONDITIONS, "faiss": "1.15", "faiss_threads": 2},
        "arguments": FAISS_ARGUMENTS,
        "builds": [{"index": "FAISS Flat", "train s": 0.0, "add s": 0.1, "total s": 0.1}],
        "rows": [
            {
                "index": "IVF",
                "params": "nprobe=4",
                "recall@10": 0.97,
                "median ms/query": 1.2,
                "p90 ms/query": 2.5,
                "goal met": "yes",
            }
        ],
    }
    text = bench.readme_section([run])
    assert (
        "| FAISS Flat | 0.000 | 0.100 | 0.100 |  |" in text
        and "| IVF | nprobe=4 | 0.970 | 1.200 | 2.500 | yes |" in text
    )
    assert "1,000 × 512 unit vectors" in text and "recall@10 ≥ 0.95 at < 2 ms" in text
    assert "Why clustered data" not in text  # no --data gaussian run kept


def test_faiss_section_sets_a_gaussian_run_beside_the_mixture():
    bench = load_benchmark("bench_faiss")

    def run(data: str | None, date: str, recalls: list[float]) -> dict:
        arguments = {**FAISS_ARGUMENTS, **({"data": data} if data else {})}
        rows = [
            {
                "index": index,
                "params": params,
                "recall@10": recall,
                "median ms/query": 1.0,
                "p90 ms/query": 2.0,
                "goal met": "no",
            }
            for (index, params), recall in zip(
                [
                    ("FAISS Flat", "exact"),
                    ("IVF-Flat nlist=126", "nprobe=1"),
                    ("IVF-Flat nlist=126", "nprobe=8"),
                    ("HNSW M=32", "efSearch=16"),
                    ("HNSW M=32", "efSearch=64"),
                ],
                recalls,
            )
        ]
        return {
            "conditions": {**CONDITIONS, "date_utc": date, "faiss": "1.15", "faiss_threads": 2},
            "arguments": arguments,
            "builds": [],
            "rows": rows,
        }

    runs = [
        run(None, "2026-12-01 10:00", [1.0, 0.6, 0.97, 0.9, 0.99]),
        run("gaussian", "2026-12-03 10:00", [1.0, 0.05, 0.3, 0.1, 0.2]),
    ]
    text = bench.readme_section(runs)
    assert (
        "| IVF-Flat nlist=126 | nprobe=8 | 0.970 |" in text and "| IVF-Flat nlist=126 | nprobe=8 | 0.300 |" not in text
    )
    assert (
        "on 1,000 × 512 random Gaussian unit vectors (`--data gaussian`, 2026-12-03 10:00 UTC, commit abc1234, "
        "50 queries) the best recall@10 of each index over the same kind of sweep was IVF-Flat 0.300 (nprobe=8), "
        "HNSW 0.200 (efSearch=64); on the 1,000-vector mixture above, IVF-Flat 0.970 (nprobe=8), HNSW 0.990 "
        "(efSearch=64)."
    ) in text
    with pytest.raises(SystemExit, match="no kept run on the Gaussian mixture"):
        bench.readme_section(runs[1:])


def test_embedding_rounds_take_each_ratio_within_a_round_and_the_section_judges_the_median(monkeypatch):
    bench = load_benchmark("bench_embedding")
    # the warm-up batch, then two rounds of (loop, pipeline, forward-only) seconds; the second round is slower
    timings = iter([0.1, 10.0, 4.0, 3.5, 20.0, 11.0, 7.0])
    for way in ("per_image_loop", "pipeline", "model_forward_only"):
        monkeypatch.setattr(bench, way, lambda *_: next(timings))

    class Catalogue(list):
        ids = list(range(100))

        def subset(self, ids):
            return self[: len(ids)]

    catalogue = Catalogue(range(100))
    row = bench.measure("tiny", None, catalogue, 64, 0, rounds=2)
    assert row["per round"]["pipeline / loop"] == [2.5, round(20 / 11, 4)]
    assert row["per round"]["pipeline / forward-only"] == [0.875, round(7 / 11, 4)]
    assert row["per round"]["forward-only / loop"] == [round(10 / 3.5, 4), round(20 / 7, 4)]
    assert row["pipeline / loop"] == pytest.approx((2.5 + 20 / 11) / 2)  # the median of two rounds
    assert row["loop img/s"] == pytest.approx(100 / 15)  # the median seconds

    run = {
        "conditions": {**CONDITIONS, "torch": "2.14.1", "torch_threads": 2},
        "arguments": {"batch_size": 64, "workers": 0},
        "rows": [row],
    }
    text = bench.readme_section([run])
    assert "| tiny | 100 | 6.67 | 13.33 | 19.05 | 2.16 (1.82–2.50) | 0.76 (0.64–0.88) | 2.86 (2.86–2.86) |" in text
    assert "pipeline / loop 2.16 (met by the median; in 1 of 2 rounds)" in text
    assert "pipeline / forward-only 0.76 (not met by the median; in 1 of 2 rounds)" in text
    assert "batching alone gains less than" not in text  # forward-only / loop 2.86: the goal is within reach
    row[bench.CEILING] = 1.9
    assert "For tiny, batching alone gains less than 2× over the loop" in bench.readme_section([run])


@pytest.mark.parametrize(
    "option, value", [("--images", "-100"), ("--vit-images", "0"), ("--batch-size", "0"), ("--rounds", "0")]
)
def test_embedding_bench_refuses_a_count_below_one_naming_its_option(option, value, monkeypatch, capsys):
    """``catalogue.ids[:-100]`` would have timed another number of images than asked, silently."""
    bench = load_benchmark("bench_embedding")
    monkeypatch.setattr(bench, "measure", lambda *a: pytest.fail("timed a count below one"))
    with pytest.raises(SystemExit):
        bench.main([option, value])
    assert f"{option}: must be a whole number of at least 1, got '{value}'" in capsys.readouterr().err


def ivfpq_run(n: int, date: str, recall: float, reader: str | None = None, file_mb: float = 300.0) -> dict:
    """A bench_ivfpq_ondisk record: two settings at nprobe 4, the second re-ranked (its recall given)."""
    memory = {"VmRSS": 410.0 + file_mb, "RssFile": file_mb, "VmHWM": 720.0}
    arguments = {"n": n, "dim": 512, "nlist": 1024, "pq_m": 64, "train_size": 40960, "queries": 1000, "k": 10}
    return {
        "conditions": {**CONDITIONS, "date_utc": date},
        "arguments": arguments if reader is None else {**arguments, "rows_reader": reader},
        "build": {
            "train s": 58.0,
            "add shards s": 131.0,
            "merge s": 0.2,
            "ground truth s": 37.0,
            "build s (train + add + merge)": 189.2,
            "build peak RSS MB": 1900.0,
            "lists file MB": 72.0,
            "shards MB": 80.0,
            "vectors.f16 MB": 1024.0,
        },
        "opened": {"before open": {"VmRSS": 624.0}},
        "rows": [
            {"nprobe": 4, "rerank": 0, "recall": 0.6, "median ms": 0.44, "p90 ms": 1.4, "memory": memory},
            {"nprobe": 4, "rerank": 100, "recall": recall, "median ms": 0.98, "p90 ms": 4.0, "memory": memory},
        ],
    }


def test_ivfpq_section_has_a_table_per_size_and_names_the_settings_that_meet_every_goal():
    bench = load_benchmark("bench_ivfpq_ondisk")
    text = bench.readme_section(
        [
            ivfpq_run(5000000, "2026-12-01 10:00", 0.95),
            ivfpq_run(1000000, "2026-12-01 09:00", 0.5),
            ivfpq_run(1000000, "2026-12-02 09:00", 0.996),
        ]
    )
    assert text.index("**1,000,000 × 512**") < text.index("**5,000,000 × 512**")
    assert "| 4 | — | 0.600 | 0.44 | 1.40 | 710 MB |" in text and "| 4 | 100 | 0.996 |" in text
    assert "| 4 | 100 | 0.500 |" not in text  # the older 1M run is not shown
    assert "Build 189 s (train 58 s, add 131 s, merge 0.2 s) plus 37 s" in text
    assert (
        text.count("met by 1 of 2 settings, the fastest nprobe 4 with 100 candidates re-ranked (0.98 ms median).") == 2
    )
    assert "Why `pread`" not in text  # no memmap run kept


def test_ivfpq_section_compares_a_memmap_run_with_the_pread_run_of_its_size():
    bench = load_benchmark("bench_ivfpq_ondisk")
    runs = [
        ivfpq_run(1000000, "2026-12-02 09:00", 0.996),
        ivfpq_run(1000000, "2026-12-03 09:00", 0.996, "memmap", 990.0),
        ivfpq_run(5000000, "2026-12-01 10:00", 0.95, "pread"),
    ]
    text = bench.readme_section(runs)
    assert text.count("| 4 | 100 | 0.996 |") == 1  # the memmap run has no table of its own: the 1M table is pread's
    assert (
        "**Why `pread`:** the same 1,000,000-vector index searched with `--rows-reader memmap` (2026-12-03 09:00 "
        "UTC, commit abc1234, the same 2 settings of 1,000 queries each): after the sweep the search process's "
        "file-backed resident memory was 990 MB (1,400 MB in all) against 300 MB (710 MB) with `pread`. Both count "
        "the libraries and the mapped lists file; the memory map adds the pages of the 1,024 MB vectors "
        "file"
    ) in text
    assert text.index("Why `pread`") < text.index("**5,000,000 × 512**")  # right after the 1M table
    differing = bench.readme_section([runs[0], {**runs[1], "arguments": {**runs[1]["arguments"], "queries": 300}}])
    assert "arguments differing in queries of 300 queries each" in differing
    memmap_only = bench.readme_section([ivfpq_run(2000000, "2026-12-03 10:00", 0.9, "memmap", 990.0)])
    assert "**2,000,000 × 512**" in memmap_only and "Why `pread`" not in memmap_only  # shown, not dropped


def test_ivfpq_section_sets_a_cold_run_beside_the_warm_table_of_its_size():
    bench = load_benchmark("bench_ivfpq_ondisk")
    warm = ivfpq_run(1000000, "2026-12-02 09:00", 0.996)
    cold = ivfpq_run(1000000, "2026-12-06 01:30", 0.996)
    cold["arguments"]["page_cache"] = "cold"
    cold["rows"][1] |= {"median ms": 8.1, "p90 ms": 11.9}
    text = bench.readme_section([warm, cold])
    assert text.count("**1,000,000 × 512**") == 1  # the cold run has no table of its own: the table is the warm run's
    assert "met by 1 of 2 settings, the fastest nprobe 4 with 100 candidates re-ranked (0.98 ms median)." in text
    assert "**Cold reads** (`--page-cache cold`" in text and "searched on 2026-12-06 01:30 UTC by" in text
    assert "| 4 | — | 0.44 | 0.44 | 1.40 | 0.600 |" in text and "| 4 | 100 | 0.98 | 8.10 | 11.90 | 0.996 |" in text
    assert text.endswith("Cold, 1 of 2 settings keep recall@10 ≥ 0.9 within 10 ms per query (median).")
    cold["conditions"] = {**cold["conditions"], "cpu_signature": "family 6 model 167 stepping 1; avx2 avx512f"}
    assert "The warm run above was on another host (processor not recorded, against family 6 model 167, avx512f)" in (
        bench.readme_section([warm, cold])
    )
    cold["rows"][1]["median ms"] = 10.5
    assert "Cold, 0 of 2 settings keep" in bench.readme_section([warm, cold])
    assert "**1,000,000 × 512**" in bench.readme_section([cold])  # kept only cold: shown, not dropped


def test_ivfpq_section_gives_a_run_on_other_data_its_own_table_after_the_default_datas():
    bench = load_benchmark("bench_ivfpq_ondisk")
    default = ivfpq_run(1000000, "2026-12-02 09:00", 0.996)
    harder = ivfpq_run(1000000, "2026-12-06 09:00", 0.93)
    harder["arguments"] |= {"centres": 100, **{k: v for k, v in bench.DEFAULT_DATA.items() if k != "centres"}}
    harder["rows"].append({**harder["rows"][1], "nprobe": 1, "recall": 0.5})
    text = bench.readme_section([default, harder])
    assert "| 4 | 100 | 0.996 |" in text and "| 4 | 100 | 0.930 |" in text  # the later run replaced nothing
    assert text.index("**1,000,000 × 512**, IVF") < text.index(
        "**1,000,000 × 512**, clustered around 100 centres (latent 32-d of norm 0.8, noise 0.3), IVF"
    )
    assert text.endswith(
        "On these data nprobe matters: with 100 candidates re-ranked, recall@10 by nprobe: 0.500 at 1, 0.930 at 4."
    )
    assert bench.readme_section([default]) == bench.data_section([default], nprobe_matters=False)  # as before


@pytest.mark.parametrize("option", [{"page_cache": "cold"}, {"rows_reader": "memmap"}])
def test_ivfpq_section_shows_a_run_on_other_data_kept_only_cold_or_through_a_memory_map(option):
    bench = load_benchmark("bench_ivfpq_ondisk")
    other = ivfpq_run(1000000, "2026-12-06 09:00", 0.93)
    other["arguments"] |= {**bench.DEFAULT_DATA, "centres": 100, **option}
    text = bench.readme_section([ivfpq_run(1000000, "2026-12-02 09:00", 0.996), other])
    assert "clustered around 100 centres (latent 32-d of norm 0.8, noise 0.3)" in text and "| 4 | 100 | 0.930 |" in text
    assert text.endswith("nprobe matters: with 100 candidates re-ranked, recall@10 by nprobe: 0.930 at 4.")


def test_ivfpq_build_times_the_float16_write_apart_from_the_ground_truth(tmp_path, monkeypatch):
    bench = load_benchmark("bench_ivfpq_ondisk")

    class SlowRows(bench.NpyRows):
        def write(self, start, rows):
            time.sleep(0.2)  # a slow disk: the write's time must not land in the ground truth's
            super().write(start, rows)

    monkeypatch.setattr(bench, "NpyRows", SlowRows)
    sizes = {"n": 2000, "dim": 16, "chunk": 1000, "queries": 5, "k": 3, "nlist": 4, "pq_m": 4, "train_size": 2000}
    args = argparse.Namespace(**sizes, **bench.DEFAULT_DATA, seed=0)
    timings = bench.build(args, tmp_path)
    assert timings["float16 write s"] >= 0.4 and timings["ground truth s"] < 0.4  # two chunks of 0.2 s written
    run = ivfpq_run(1000000, "2026-12-02 09:00", 0.996)  # kept before the two were timed apart
    assert "plus 37 s of streamed ground truth and float16 vector writes (timed together);" in bench.run_table(run)
    run["build"]["float16 write s"] = 4.0
    assert "plus 37 s of streamed ground truth and 4 s writing the float16 vectors;" in bench.run_table(run)


def test_ivfpq_cold_reads_need_pread():
    bench = load_benchmark("bench_ivfpq_ondisk")
    with pytest.raises(SystemExit):
        bench.main(["--page-cache", "cold", "--rows-reader", "memmap", "--n", "1000"])


def test_photo_pretrain_section_judges_each_run_pairs_the_attribute_term_and_shows_curves():
    bench = load_benchmark("bench_photo_pretrain")

    def run(seed: int, weight: float, exact: list[float], attribute: list[float], minutes: list[float], **others):
        rows = [
            others
            | {
                "epoch": 5 * (i + 1),
                "training min": m,
                "exact R@1": 0.1,
                "exact R@5": 0.3,
                "exact R@10": e,
                "same-title R@10": e + 0.01,
                "attribute-match R@10": a,
                "chance exact R@10": 0.01,
                "chance same-title R@10": 0.011,
                "chance attribute-match R@10": 0.067,
            }
            for i, (e, a, m) in enumerate(zip(exact, attribute, minutes))
        ]
        return {
            "conditions": {**CONDITIONS, "torch_threads": 2},
            "arguments": {
                "model": "photo-clip-resnet18",
                "seed": seed,
                "attribute_weight": weight,
                "epochs": 22,
                "eval_every_epochs": 5 * (len(rows) > 1),
                "threads": 2,
                "lr": 0.002,
            },
            "data": {"train_items": 3475, "gallery": 1000},
            "rows": rows,
        }

    runs = [
        run(0, 1.0, [0.4, 0.63], [0.7, 0.86], [3.5, 13.0]),
        run(0, 0.0, [0.61], [0.82], [13.6]),
        run(
            1,
            1.0,
            [0.64],
            [0.84],
            [13.1],
            **{"attribute-match-others R@10": 0.8, "chance attribute-match-others R@10": 0.05},
        ),
    ]
    text = bench.readme_section(runs)
    assert (
        "| 2026-12-02 20:00 | abc1234 | resnet18 | 0 | 1 | contiguous | 2 | cpu |  | 0.20/1.40 |  | 10 | 13.00 | 0.100 "
        "| 0.300 | 0.630 | 0.640 | 0.860 |  | yes |"  # a record kept before attribute-match-others: blank
    ) in text
    assert "| 0.840 | 0.800 | no (attribute-match R@10) |" in text  # seed 1 misses the attribute-match goal
    assert (
        "(`attribute-match-others`), over the 1 kept runs that measured it: attribute-match R@10 0.800 (chance 0.050), "
        "against 0.840 with it and exact R@10 0.640." in text
    )
    assert "attribute-match-others`)" not in bench.readme_section(runs[:2])  # no run measured it: no sentence
    assert (
        bench.goals_verdict({**runs[0]["rows"][-1], "training min": 15.5, "exact R@10": 0.4})
        == "no (exact R@10, training min)"
    )
    assert (
        "- seed 0, W = 1 against W = 0: attribute-match R@10 +0.040, exact R@10 +0.020, training minutes 13.00 "
        "against 13.60" in text
    )
    assert text.count("- seed") == 1  # seed 1 has no run without the term
    elsewhere = {
        **runs[0],
        "conditions": {**runs[0]["conditions"], "cpu": "AMD EPYC", "libraries": {"torch": "2.14.1"}},
    }
    assert bench.attribute_term_effects([elsewhere, runs[1]]) == []  # another machine trains other weights
    another_host = {**runs[0], "conditions": {**runs[0]["conditions"], "cpu_signature": "family 25 model 17"}}
    assert bench.attribute_term_effects([another_host, runs[1]]) == []  # same generic model name, other processor
    assert bench.final_row(another_host)["CPU"] == "family 25 model 17"
    assert bench.final_row(runs[0])["CPU"] == ""  # kept before the signature was
    another_tower = {**runs[0], "arguments": {**runs[0]["arguments"], "model": "photo-clip-regnetx002"}}
    assert bench.final_row(another_tower)["tower"] == "regnetx002"
    assert bench.attribute_term_effects([another_tower, runs[1]]) == []  # another tower: not a pair
    channels_last = {**runs[0], "arguments": {**runs[0]["arguments"], "channels_last": True}}
    assert bench.final_row(channels_last)["layout"] == "channels-last"
    assert bench.attribute_term_effects([channels_last, runs[1]]) == []  # another layout: other weights
    contiguous = {**runs[0], "arguments": {**runs[0]["arguments"], "channels_last": False}}  # named, as runs are now
    assert bench.attribute_term_effects([contiguous, runs[1]]) == bench.attribute_term_effects(runs[:2])
    on_a_gpu = {**runs[0], "conditions": {**runs[0]["conditions"], "device": "NVIDIA H200"}}
    assert bench.final_row(on_a_gpu)["goals met"] == "not judged (GPU)"  # the goals are for 2 CPU cores
    assert text.count("**Learning curve**") == 1 and "3,475 training photos" in text
    assert (
        "| 5 | 3.50 | 0.100 | 0.300 | 0.400 | 0.410 | 0.700 |" in text
        and "| chance |  |  |  | 0.010 | 0.011 | 0.067 |" in text
    )


def test_rerank_section_gives_the_dual_encoder_its_mistakes_and_each_arm_against_the_goal():
    bench = load_benchmark("bench_rerank")
    run = {
        "conditions": {**CONDITIONS, "torch_threads": 2},
        "recipe": {"itm_epochs": 12},
        "rerank_k": 20,
        "dual_weights": [0.0, 1.0],
        "dual_R@1": {"train": 0.437, "val": 0.238, "test": 0.2},
        "test_items": 996,
        "first_item_mistakes": {"wrong": 800, "brand (first word of the title)": 720, "articleType": 312},
        "rows": [
            {"arm": "train pairs", "seed": 0, "pairs": 3475, "train_s": 59.4, "R@1": [0.116, 0.25]},
            {"arm": "val pairs", "seed": 0, "pairs": 529, "train_s": 7.2, "R@1": [0.07, 0.19]},
        ],
    }
    text = bench.readme_section([run])
    assert "dual encoder photo-clip-resnet18, matcher recipe {'itm_epochs': 12}, top-20):" in text
    assert "dual encoder photo-clip-resnet10t," in bench.readme_section([{**run, "model": "photo-clip-resnet10t"}])
    assert "train 0.437 (trained on), val 0.238, test 0.200 (996 items)" in text
    assert (
        "wrong for 800 test queries; it differs from the query's item in brand (first word of the title) 90%, "
        "articleType 39%." in text
    )
    assert "| train pairs | 0 | 3,475 | 59 | 0.116 | 0.250 | +25.0% |" in text
    assert "| val pairs | 0 | 529 | 7 | 0.070 | 0.190 | -5.0% |" in text
    assert "reached by 1 of 2 rows." in text
    assert "querybank" not in text  # a record from before the querybank arm renders as it did
    assert "Unseen against seen" not in text  # nor one from before the control arm


def rerank_run(bench, same_size_R1: float | None = None) -> dict:
    """A bench_rerank record's set-up, rows aside: the dual encoder's R@1 on each split (and on the train draw as
    large as val, ``bench.SAME_SIZE``, when given) and its mistakes."""
    dual = {"train": 0.481, "val": 0.255, "test": 0.2} | ({bench.SAME_SIZE: same_size_R1} if same_size_R1 else {})
    return {
        "conditions": {**CONDITIONS, "torch_threads": 2},
        "recipe": {},
        "rerank_k": 20,
        "dual_weights": [0.0, 1.0],
        "dual_R@1": dual,
        "test_items": 996,
        "first_item_mistakes": {"wrong": 800},
    }


def test_rerank_section_sets_unseen_pairs_against_as_many_seen_ones_seed_by_seed():
    bench = load_benchmark("bench_rerank")
    row = {"pairs": 529, "train_s": 8.0}
    run = {
        **rerank_run(bench, same_size_R1=0.6),
        "rows": [
            {**row, "arm": bench.UNSEEN_ARM, "seed": 0, "R@1": [0.05, 0.21]},
            {**row, "arm": bench.UNSEEN_ARM, "seed": 1, "R@1": [0.06, 0.19]},
            {**row, "arm": bench.SAME_SIZE_ARM, "seed": 0, "R@1": [0.04, 0.2]},
            {**row, "arm": bench.SAME_SIZE_ARM, "seed": 1, "R@1": [0.22, 0.195]},
        ],
    }
    assert (
        "Unseen against seen pairs, 529 of each: trained on val, the matcher's best test R@1 is 0.210, 0.190; "
        "trained on a random draw of as many train pairs, 0.200, 0.220 (seeds 0, 1). Unseen minus seen: "
        "-0.010 ± 0.028, higher under 1 of 2 seeds: not a finding (README's rule for findings). Over those pairs "
        "themselves the dual encoder's R@1 is 0.255 on val and 0.600 on the train draw." in bench.readme_section([run])
    )
    assert "Towers tuned" not in bench.readme_section([run])  # a run without the tuned arm


def test_rerank_section_sets_the_tuned_towers_against_the_frozen_ones_with_their_training_time():
    bench = load_benchmark("bench_rerank")
    run = {
        **rerank_run(bench),
        "rows": [
            {"arm": bench.NOTEBOOK_ARM, "seed": 0, "pairs": 3475, "train_s": 26.0, "R@1": [0.1, 0.19]},
            {"arm": bench.NOTEBOOK_ARM, "seed": 1, "pairs": 3475, "train_s": 30.0, "R@1": [0.1, 0.18]},
            {"arm": bench.TUNED_ARM, "seed": 0, "pairs": 3475, "train_s": 438.0, "R@1": [0.14, 0.2]},
            {"arm": bench.TUNED_ARM, "seed": 1, "pairs": 3475, "train_s": 420.0, "R@1": [0.21, 0.2]},
        ],
    }
    text = bench.readme_section([run])
    assert (
        "Towers tuned with the matcher against frozen ones, all train pairs: the best test R@1 is 0.200, 0.210 with "
        "tuned towers; with frozen ones, 0.190, 0.180 (seeds 0, 1). Tuned minus frozen: +0.020 ± 0.014, higher under "
        "all 2 seeds by more than the spread: a finding (README's rule for findings). Training took 7.3 min at most "
        "per seed tuned, 0.5 frozen." in text
    )
    assert "Unseen against seen" not in text  # a run without the control arm


def test_rerank_section_of_a_one_seed_run_gives_each_difference_without_a_spread():
    """``--seeds 0`` records one matcher seed: no standard deviation over seeds, so each comparison is the difference
    alone, not yet judged (it raised statistics.StatisticsError after the run, before its record was kept)."""
    bench = load_benchmark("bench_rerank")
    row = {"pairs": 529, "train_s": 60.0}
    run = {
        **rerank_run(bench, same_size_R1=0.6),
        "rows": [
            {**row, "arm": bench.UNSEEN_ARM, "seed": 0, "R@1": [0.05, 0.21]},
            {**row, "arm": bench.SAME_SIZE_ARM, "seed": 0, "R@1": [0.04, 0.2]},
            {**row, "arm": bench.NOTEBOOK_ARM, "seed": 0, "R@1": [0.1, 0.19]},
            {**row, "arm": bench.TUNED_ARM, "seed": 0, "R@1": [0.14, 0.2]},
        ],
    }
    text = bench.readme_section([run])
    assert (
        "trained on val, the matcher's best test R@1 is 0.210; trained on a random draw of as many train pairs, "
        "0.200 (seed 0). Unseen minus seen: +0.010, one seed: not yet checked against the spread over seeds" in text
    )
    assert "Tuned minus frozen: +0.010, one seed: not yet checked against the spread over seeds" in text


def test_querybank_normalisation_takes_a_hubs_edge_away():
    bench = load_benchmark("bench_rerank")
    import torch

    query = torch.tensor([[0.9, 0.8]])  # the query scores photo 0 a little higher ...
    bank = torch.tensor([[0.9, 0.1], [0.9, 0.1]])  # ... but photo 0 is close to every bank query: a hub
    scores = bench.querybank_normalised(query, bank, beta=10.0)
    # 10 * 0.9 - log(2 e^9) = -log 2 ; 10 * 0.8 - log(2 e^1) = 7 - log 2
    assert torch.allclose(scores, torch.tensor([[-0.6931472, 6.3068528]]))
    assert bench.first_item_counts(torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]])).tolist() == [2, 0, 0]


def test_querybank_arm_picks_beta_on_val_and_counts_first_items_on_test():
    bench = load_benchmark("bench_rerank")
    import torch

    # Caption i's photo is column i. Photo 0 is close to one bank caption (max 0.9, mean 0.45), photo 1 to both a
    # little (0.6): a small beta subtracts the bank's mean score, a large one its max, and only the max makes
    # caption 1 find photo 1.
    scores = torch.tensor([[0.9, 0.1], [0.5, 0.4]])
    bank = torch.tensor([[0.9, 0.6], [0.0, 0.6]])
    arm = bench.querybank_arm({"val": scores, "test": scores}, {"val": bank, "test": bank}, betas=(0.01, 100.0))
    assert arm["val_R@1"] == [0.5, 1.0] and arm["picked_beta"] == 100.0
    assert arm["test_R@1"] == [0.5, 1.0]
    assert arm["test_first_item_most_queries"] == 2 and arm["test_never_first_share"] == 0.5
    rows = [
        {"dual_seed": 0, "test_items": 2, "bank_captions": 3475, "dual_test_R@1": 0.5, **arm},
        {**arm, "dual_seed": 1, "test_items": 4, "bank_captions": 3517, "dual_test_R@1": 0.9},
    ]
    text = bench.querybank_section({"querybank": rows})
    assert "beta in {0.01, 100} picked on val" in text
    assert "| 0 | 2 | 3,475 | 0.500 | 100 | 1.000 | +100.0% | 0.500–1.000 | 2 | 50% (25%) |" in text
    assert "| 1 | 4 | 3,517 | 0.900 | 100 | 1.000 | +11.1% | 0.500–1.000 | 2 | 50% (32%) |" in text
    assert "reached for 1 of 2 dual encoders." in text
    # the first version's records kept seed 0's arm alone, as a dict; their dual R@1 and test size are the run's
    legacy = {"querybank": {**arm, "bank_captions": 3475}, "dual_R@1": {"test": 0.5}, "test_items": 2}
    assert "| 0 | 2 | 3,475 | 0.500 | 100 | 1.000 | +100.0% |" in bench.querybank_section(legacy)


def test_photo_colour_features_read_the_product_pixels_not_the_white_background():
    bench = load_benchmark("bench_rerank")
    import numpy as np
    from PIL import Image

    pixels = np.full((80, 60, 3), 255, dtype=np.uint8)
    pixels[20:60, 15:45] = (255, 0, 0)  # a red product on a quarter of a white photo
    features = bench.photo_colour_features(Image.fromarray(pixels))
    histogram, mean_rgb, share = features[:192], features[192:195], features[195]
    # hue 0 (red), saturation and value 1 (their last bins): bin 0 * 16 + 3 * 4 + 3 = 15 holds every product pixel
    assert histogram[15] == 1.0 and histogram.sum() == 1.0
    assert mean_rgb.tolist() == [1.0, 0.0, 0.0] and share == 0.25
    blank = bench.photo_colour_features(Image.fromarray(np.full((80, 60, 3), 255, dtype=np.uint8)))
    assert blank[192:195].tolist() == [1.0, 1.0, 1.0] and blank[195] == 0.0  # no product: every pixel read


def test_a_share_of_the_colour_guess_mistakes_is_corrected_from_the_catalogue():
    bench = load_benchmark("bench_rerank")
    import numpy as np

    guesses, truths = ["Red", "Blue", "Black", "Grey"], ["Red", "Navy Blue", "White", None]
    draws = np.array([0.1, 0.2, 0.6, 0.1])
    assert bench.with_mistakes_corrected(guesses, truths, draws, 0.5) == ["Red", "Navy Blue", "Black", "Grey"]
    assert bench.with_mistakes_corrected(guesses, truths, draws, 0.0) == guesses


def test_the_photo_colour_arm_tells_apart_photos_the_dual_encoder_cannot():
    bench = load_benchmark("bench_rerank")
    import math
    from types import SimpleNamespace

    import numpy as np
    import torch

    from course_utils.data.records import ArrayImage, Item

    colours = {"Red": (220, 20, 20), "Blue": (20, 20, 220), "Green": (20, 160, 20), "Black": (10, 10, 10)}
    names = list(colours)
    generator = torch.Generator().manual_seed(0)

    def split(name: str, pairs: int):
        # pair j: two photos of different colours with one embedding, so the dual encoder ties them
        photo_colours = [names[(i // 2 + i % 2) % len(names)] for i in range(2 * pairs)]
        pixels = np.full((2 * pairs, 80, 60, 3), 255, dtype=np.uint8)
        for i, colour in enumerate(photo_colours):
            pixels[i, 20:60, 15:45] = colours[colour]
        items = [
            Item(f"{name}{i}", (f"a {c.lower()} shirt",), ("title",), {"baseColour": c}, name, ArrayImage(pixels, i))
            for i, c in enumerate(photo_colours)
        ]
        embedding = torch.nn.functional.normalize(torch.randn(pairs, 8, generator=generator), dim=1)
        return items, embedding.repeat_interleave(2, dim=0)

    made = {name: split(name, pairs) for name, pairs in (("train", 12), ("val", 4), ("test", 4))}
    embeddings = bench.SeedEmbeddings(
        {name: items for name, (items, _) in made.items()},
        {name: [item.captions[0] for item in items] for name, (items, _) in made.items()},
        {name: vectors for name, (_, vectors) in made.items()},
        {name: vectors.clone() for name, (_, vectors) in made.items()},
    )
    dual = SimpleNamespace(model=SimpleNamespace(logit_scale=torch.tensor(math.log(10.0))))
    photos = bench.photo_label_features(embeddings)
    arm = bench.photo_label_arm(embeddings, photos, dual, rerank_k=4, seed=0, label="baseColour")
    assert arm["dual_test_R@1"] == 0.5 and arm["labels_in_train"] == 4 and arm["test_items"] == 8
    assert arm["guesser_C"] in bench.GUESSER_CS
    val_right = arm["guesser_val_right"]  # every C's share of right val guesses; the picked C's is the largest
    assert list(val_right) == [f"{c:g}" for c in bench.GUESSER_CS]
    assert val_right[f"{arm['guesser_C']:g}"] == max(val_right.values())
    guess = arm["rows"][0]
    assert guess["source"] == "guessed from the photo" and guess["right_on_test"] == 1.0
    assert guess["test_R@1"] == 1.0  # the colour named by the caption breaks every tie the right way
    assert [row["source"] for row in arm["rows"][1:]] == [
        "the guess, 25% of its mistakes corrected",
        "the guess, 50% of its mistakes corrected",
        "the guess, 75% of its mistakes corrected",
        "the catalogue's",
    ]
    text = bench.photo_label_section({"photo_labels": [arm]})
    picked = f" (C picked on val from {{0.001, 0.01, 0.1, 1}}: baseColour seed 0 {arm['guesser_C']:g})"
    assert "labels in train: baseColour 4)" in text and picked in text
    assert "| baseColour | 0 | guessed from the photo | 100% |" in text and "| 0.500 | 1.000 | +100.0% |" in text
    assert "baseColour: reached by the guess from the photo for 1 of 1 dual encoders" in text
    assert "the least share of right labels among the rows that reach it: seed 0: 100%." in text
    grid = "w in {0.03, 0.1, 0.3, 1, 3, 10, 30, 100} picked on val"
    assert arm["dual_weights"] == list(bench.LABEL_DUAL_WEIGHTS) and grid in text
    # a record from before the brand arm kept its colour arms under "colour", each row's source under "colour"; nor
    # did it name its grids of dual weights (the earlier one) and of C
    old_keys = ("label", "labels_in_train", "guesser_C", "guesser_val_right", "dual_weights")
    legacy_arm = {key: value for key, value in arm.items() if key not in old_keys}
    legacy_rows = [{**{k: v for k, v in row.items() if k != "source"}, "colour": row["source"]} for row in arm["rows"]]
    legacy = {"colour": [{**legacy_arm, "colours": 4, "rows": legacy_rows}]}
    earlier_grid = "w in {0.03, 0.1, 0.3, 1, 3, 10} picked on val"
    assert bench.photo_label_section(legacy) == text.replace(picked, "").replace(grid, earlier_grid)


def test_the_brand_is_the_titles_first_word_whatever_its_case():
    bench = load_benchmark("bench_rerank")
    from types import SimpleNamespace

    assert bench.title_brand("ADIDAS Men Black Sandals") == bench.title_brand("Adidas Women Blue Top") == "adidas"
    assert bench.title_brand("United Colors of Benetton Men Shirt") == "united" and bench.title_brand("") is None
    items = [SimpleNamespace(attributes={"baseColour": "Black"}), SimpleNamespace(attributes={})]
    embeddings = SimpleNamespace(splits={"test": items}, captions={"test": ["Puma Men Black Shoes", "FILA Cap"]})
    assert bench.catalogue_labels(embeddings, "brand") == {"test": ["puma", "fila"]}
    assert bench.catalogue_labels(embeddings, "baseColour") == {"test": ["Black", None]}


def test_milvus_bench_filters_as_the_engine_does_and_exact_search_keeps_only_allowed_rows():
    bench = load_benchmark("bench_milvus")
    import torch

    attributes = bench.row_attributes(205)
    assert attributes[123] == {"tenth": "3", "hundredth": "23"}
    assert bench.allowed_rows(attributes, {"hundredth": "4"}).nonzero().flatten().tolist() == [4, 104, 204]
    gallery = torch.eye(4)
    allowed = torch.tensor([False, True, True, False])
    assert bench.exact_search(gallery, torch.tensor([1.0, 0.5, 0.2, 0.9]), allowed, 2).tolist() == [1, 2]
    assert bench.exact_search(gallery, torch.tensor([1.0, 0.5, 0.2, 0.9]), allowed, 3).tolist() == [1, 2]
    assert bench.exact_search(gallery, torch.tensor([1.0, 0.5, 0.2, 0.9]), None, 2).tolist() == [0, 3]


def test_milvus_bench_summary_reads_every_ratio_from_the_record():
    bench = load_benchmark("bench_milvus")
    assert bench.value_range([9.31, 23.6]) == "9.3–24×" and bench.value_range([40.2, 39.8], " %") == "40 %"
    rows = [
        {"n": 10, "filter": "none", "Milvus median ms": 2.0, "Milvus / exact": 20.0, "same top-k": 1.0},
        {"n": 10, "filter": "1 row in 10", "Milvus median ms": 1.0, "Milvus / exact": 5.0, "same top-k": 0.5},
        {"n": 10, "filter": "none, before the seal", "Milvus median ms": 30.0},
    ]
    text = bench.summary({"rows": rows, "costs": [{"n": 10, "count ms, sealed": 1.5}]})
    assert "one Milvus Lite search took 5.0–20× as long as exact" in text
    assert "returned exact search's top-k for not every query" in text
    assert "Before the seal an unfiltered search took 15× as long as after it" in text
    assert "A sealed count took 75 % of an unfiltered search's time" in text


def test_milvus_bench_finds_exact_search_top_k_with_every_filter_and_renders_its_run(tmp_path, capsys):
    bench = load_benchmark("bench_milvus")
    record = tmp_path / "run.json"
    arguments = ["--sizes", "300", "--dim", "8", "--queries", "4", "--growing-queries", "2", "--json", str(record)]
    assert bench.main(arguments) == 0
    run = json.loads(record.read_text())
    assert [(row["filter"], row["matching rows"]) for row in run["rows"]] == [
        ("none", 300),
        ("1 row in 10", 30),
        ("1 row in 100", 3),
        ("none, before the seal", 300),
    ]
    assert [row.get("same top-k") for row in run["rows"]] == [1.0, 1.0, 1.0, None]  # 3 rows for k = 10: all 3
    assert run["costs"][0]["n"] == 300 and run["costs"][0]["on disk MB"] > 0
    assert run["conditions"]["milvus_lite"] and run["arguments"]["dim"] == 8
    text = bench.readme_section([run])
    assert "| 300 | 1 row in 100 | 3 |" in text and "| 100% |" in text
    assert "8-d vectors, k = 10; single queries, 4 per row (2 before the seal)" in text
    assert text.split("\n\n")[1] in capsys.readouterr().out  # the printed table is the README's


@pytest.mark.parametrize(
    "name, arguments",
    [
        ("bench_milvus", ["--sizes", "300", "--dim", "8", "--queries", "2", "--growing-queries", "1"]),
        ("bench_exact_search", ["--sizes", "1000", "--dim", "8", "--repeats", "1", "--naive-items", "100"]),
    ],
)
def test_a_run_is_kept_before_its_section_is_rendered(name, arguments, tmp_path, monkeypatch):
    """A render that fails (as bench_rerank's did under one seed) must not lose the run it would have printed."""
    bench = load_benchmark(name)

    def broken_render(runs):
        raise RuntimeError("the section failed to render")

    monkeypatch.setattr(bench, "readme_section", broken_render)
    record = tmp_path / "run.json"
    with pytest.raises(RuntimeError, match="failed to render"):
        bench.main([*arguments, "--json", str(record)])
    assert json.loads(record.read_text())["rows"]


def test_keep_then_print_writes_the_record_then_prints_the_rendered_run(tmp_path, capsys):
    path = tmp_path / "run.json"
    bench_records.keep_then_print({"conditions": CONDITIONS}, path, lambda runs: f"kept at {runs[0]['kept_at'].name}")
    assert json.loads(path.read_text()) == {"conditions": CONDITIONS}  # the record as measured, without kept_at
    assert capsys.readouterr().out == f"record kept: {path}\nkept at run.json\n"


@pytest.mark.parametrize("name", RENDERED)
def test_the_readme_agrees_with_each_benchmarks_kept_runs(name):
    bench = load_benchmark(name)
    if not list(bench.RECORDS.glob("*.json")):
        pytest.skip(f"no kept runs in {bench.RECORDS}: run benchmarks/{name}.py with --json")
    assert bench.write_readme(check=True) == 0, f"run benchmarks/{name}.py --readme"


def test_every_rendered_benchmark_is_checked():
    scripts = {
        path.stem
        for path in (bench_records.REPO_ROOT / "benchmarks").glob("bench_*.py")
        if "README_MARKERS" in path.read_text()
    }
    assert scripts == set(RENDERED)
    assert all(json.loads(path.read_text())["conditions"] for path in (bench_records.BENCH_RECORDS).rglob("*.json"))


def test_ivfpq_bench_refuses_to_empty_a_folder_it_did_not_make(tmp_path, monkeypatch):
    bench = load_benchmark("bench_ivfpq_ondisk")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "mine.jpg").write_bytes(b"a user's file")
    monkeypatch.setattr(bench, "build", lambda *a: pytest.fail("built in a folder of someone else's files"))
    with pytest.raises(SystemExit, match=r"--folder .*photos holds files this benchmark did not write"):
        bench.main(["--n", "1000", "--folder", str(tmp_path / "photos")])
    assert (tmp_path / "photos" / "mine.jpg").read_bytes() == b"a user's file"
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / ".bench_ivfpq_ondisk").touch()
    (tmp_path / "earlier" / "lists.ivfdata").write_bytes(b"an earlier run's")
    left_at_build = []

    def look_then_stop(args, folder):
        left_at_build.extend(p.name for p in folder.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "build", look_then_stop)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--n", "1000", "--folder", str(tmp_path / "earlier")])
    assert left_at_build == [".bench_ivfpq_ondisk"]  # an earlier run's folder is emptied and marked again


def test_a_dirty_commit_names_the_files_that_differ_from_it(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "bench.py").write_text("n = 1\n")
    (tmp_path / "notes.md").write_text("kept\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    assert bench_records.uncommitted_files(tmp_path) == []
    (tmp_path / "bench.py").write_text("n = 2\n")
    (tmp_path / "new.txt").write_text("untracked: not part of the commit's code\n")
    assert bench_records.uncommitted_files(tmp_path) == ["bench.py"]
    assert bench_records.uncommitted_files(tmp_path / "absent") == []  # no checkout: nothing to name


def test_conditions_name_the_uncommitted_files_only_for_a_dirty_commit(monkeypatch):
    monkeypatch.setattr(bench_records, "source_commit", lambda: "abc1234-dirty")
    monkeypatch.setattr(bench_records, "uncommitted_files", lambda: ["benchmarks/bench_x.py"])
    assert bench_records.RunConditions().finish()["uncommitted"] == ["benchmarks/bench_x.py"]
    monkeypatch.setattr(bench_records, "source_commit", lambda: "abc1234")
    assert "uncommitted" not in bench_records.RunConditions().finish()


def test_the_rerank_rerun_with_wider_grids_moves_one_row_and_picks_nothing_at_an_edge():
    """benchmarks/README.md › bench_rerank.py: the record of 2026-12-06 10:54 picked at the edges of three grids that
    stopped short; the last record reruns it with the grids widened. What the README says of the two is checked here."""
    bench = load_benchmark("bench_rerank")
    folder = bench_records.BENCH_RECORDS / "rerank"
    before, last = (json.loads((folder / name).read_text()) for name in ("20261206T1054.json", "20261206T1753.json"))
    assert max(folder.glob("*.json")).name == "20261206T1753.json"
    # before: three of four guessed labels at the label grid's largest weight, five of ten matcher rows' best
    # columns at 10, the smallest C for three of four guessers
    before_arms, last_arms = bench.photo_label_arms(before), bench.photo_label_arms(last)
    assert sum(arm["rows"][0]["dual_weight"] == max(bench.EARLIER_LABEL_DUAL_WEIGHTS) for arm in before_arms) == 3
    assert sum(row["R@1"].index(max(row["R@1"])) == len(before["dual_weights"]) - 1 for row in before["rows"]) == 5
    assert sum(arm["guesser_C"] == 0.01 for arm in before_arms) == 3
    # the rerun: wider grids, every number shared with the record before the same but the colour guessed for seed 1
    assert (
        last["dual_weights"][: len(before["dual_weights"])] == before["dual_weights"]
        and max(last["dual_weights"]) == 100
    )
    assert [row["R@1"][: len(before["dual_weights"])] for row in last["rows"]] == [row["R@1"] for row in before["rows"]]
    assert last["querybank"] == before["querybank"] and last["dual_R@1"] == before["dual_R@1"]
    moved = [
        (arm["label"], arm["dual_seed"], row_before, row)
        for arm_before, arm in zip(before_arms, last_arms)
        for row_before, row in zip(arm_before["rows"], arm["rows"])
        if row != row_before
    ]
    assert [(label, seed, row["source"]) for label, seed, _, row in moved] == [
        ("baseColour", 1, "guessed from the photo")
    ]
    _, _, row_before, row = moved[0]
    assert row["dual_weight"] > row_before["dual_weight"] and row["test_R@1"] < row_before["test_R@1"]
    assert [arm["guesser_C"] for arm in last_arms] == [arm["guesser_C"] for arm in before_arms]
    # nothing at an edge now, but the catalogue's brand under seed 0 (a yardstick); nothing nearer the goal
    for arm in last_arms:
        guess, catalogue = arm["rows"][0], arm["rows"][-1]
        assert min(arm["dual_weights"]) < guess["dual_weight"] < max(arm["dual_weights"])
        assert min(map(float, arm["guesser_val_right"])) < arm["guesser_C"] < max(map(float, arm["guesser_val_right"]))
        at_smallest = catalogue["dual_weight"] == min(arm["dual_weights"])
        assert at_smallest == (arm["label"] == "brand" and arm["dual_seed"] == 0)
        assert catalogue["test_R@1"] / arm["dual_test_R@1"] - 1 > bench.GOAL  # the yardstick: far above the goal
    assert all(row["R@1"].index(max(row["R@1"])) < len(last["dual_weights"]) - 2 for row in last["rows"])
    gains = [row["test_R@1"] / arm["dual_test_R@1"] - 1 for arm in last_arms for row in arm["rows"]]
    gains_before = [row["test_R@1"] / arm["dual_test_R@1"] - 1 for arm in before_arms for row in arm["rows"]]
    assert all(gain <= gain_before for gain, gain_before in zip(gains, gains_before))
