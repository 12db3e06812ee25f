"""Results records and the combined report."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from course_utils.json_files import write_json
from course_utils.lockfile import environment_pins
from course_utils.results import (
    aggregate_seeds,
    build_report,
    cpu_model,
    cpu_signature,
    kernel_choices,
    library_versions,
    load_record,
    main,
    markdown_table_text,
    merge_timings,
    parse_timing_key,
    read_results,
    table_record,
    timing_key,
    write_results,
)


def test_records_round_trip_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    table = pd.DataFrame({"R@1": [0.25, np.float32(0.5)]}, index=pd.Index(["zero-shot", "fine-tuned"], name="model"))
    path = write_results(
        "01_demo",
        {"profile": "ci", "seed": 0},
        {"r1": np.float64(0.25), "nan": float("nan")},
        {"recall": table},
        notes="Demo notes.",
    )
    record = json.loads(path.read_text())
    assert record["metrics"] == {"r1": 0.25, "nan": None}
    assert record["tables"]["recall"] == {
        "columns": ["model", "R@1"],
        "rows": [["zero-shot", 0.25], ["fine-tuned", 0.5]],
    }
    environment = record["environment"]  # what the numbers depend on besides the code and the seeds
    assert environment["libraries"]["numpy"] == np.__version__ and environment["cpu"]
    assert environment["cpu_signature"] == cpu_signature()
    assert environment["kernels"] == kernel_choices()
    assert environment["torch_threads"] == torch.get_num_threads()
    assert environment["constraints"] == environment_pins()  # whether the other distributions are those pinned
    write_results("02_demo", {"profile": "ci"}, {"r10": 0.7})
    assert [r["notebook"] for r in read_results()] == ["01_demo", "02_demo"]
    report = build_report().read_text()
    assert "## 01_demo" in report and "| zero-shot | 0.25 |" in report and "Demo notes." in report
    assert "| r10 | 0.7 |" in report and "Profile: ci" in report


def test_the_environment_names_the_cpu_model_and_each_librarys_version(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 9654 96-Core Processor"
    assert cpu_model(tmp_path / "absent")  # elsewhere: platform's processor or the architecture
    versions = library_versions(["numpy", "pandas", "no-such-distribution-here"])
    assert versions == {"numpy": np.__version__, "pandas": pd.__version__, "no-such-distribution-here": None}


def test_the_cpu_signature_tells_apart_processors_of_one_generic_model_name(tmp_path):
    def cpuinfo(name: str, family: int, model: int, flags: str):
        block = f"processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: {family}\nmodel\t\t: {model}\n"
        path = tmp_path / name
        path.write_text(f"{block}stepping\t: 1\nflags\t\t: fpu sse avx avx2 fma {flags}\n\n{block}")
        return path

    milan = cpu_signature(cpuinfo("milan", 25, 1, ""))
    genoa = cpu_signature(cpuinfo("genoa", 25, 17, "avx512f avx512_bf16 avx512_vnni"))
    assert milan == "family 25 model 1 stepping 1; avx avx2 fma"
    assert genoa == "family 25 model 17 stepping 1; avx avx2 fma avx512f avx512_bf16 avx512_vnni"
    assert cpu_signature(tmp_path / "absent") is None


def test_the_kernels_are_those_each_library_picked_in_the_process():
    """FAISS and each BLAS pick their kernels by their own reading of the processor, which the environment variables
    FAISS_SIMD_LEVEL and OPENBLAS_CORETYPE override for a process; a record names what they picked."""
    pytest.importorskip("faiss")
    script = "import json; from course_utils.results import kernel_choices; print(json.dumps(kernel_choices()))"
    forced = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "FAISS_SIMD_LEVEL": "AVX2", "OPENBLAS_CORETYPE": "Haswell"},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    kernels = json.loads(forced.stdout.splitlines()[-1])
    openblas = [name for name in kernels if name.startswith("libopenblas ")]  # the one inside faiss-cpu
    assert kernels["faiss"] == "AVX2" and openblas and all(kernels[name] == "Haswell" for name in openblas)
    assert set(kernels) <= set(kernel_choices())  # this process may have loaded more BLAS libraries


def _record(folder, stem, seed, metrics):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(
        json.dumps(
            {"notebook": stem, "parameters": {"profile": "full", "seed": seed}, "metrics": metrics, "tables": {}}
        )
    )


def test_aggregate_seeds_keeps_the_first_run_and_adds_values_mean_and_std(tmp_path, monkeypatch):
    folders = {seed: tmp_path / f"seed-{seed}" for seed in (0, 1, 2)}
    for seed, folder in folders.items():
        _record(
            folder,
            "01_demo",
            seed,
            {"r10": 0.5 + seed / 10, "nan": None, "label": "x", **({"only_first": 1.0} if seed == 0 else {})},
        )
    _record(folders[0], "07_once", 0, {"ms": 3.0})  # run under the first seed only: left as it is
    for seed, folder in folders.items():  # records of an earlier run, not asked for: left as they are
        _record(folder, "02_earlier", seed, {"r10": 0.1})
    assert aggregate_seeds(folders, ["01_demo"]) == [folders[0] / "01_demo.json"]
    assert "seeds" not in json.loads((folders[0] / "02_earlier.json").read_text())
    record = json.loads((folders[0] / "01_demo.json").read_text())
    assert record["metrics"]["r10"] == 0.5
    seeds = record["seeds"]
    assert seeds["seeds"] == [0, 1, 2] and seeds["values"]["r10"] == [0.5, 0.6, 0.7]
    assert np.isclose(seeds["mean"]["r10"], 0.6) and np.isclose(seeds["std"]["r10"], 0.1)
    assert seeds["not_aggregated"] == ["nan", "label", "only_first"]
    assert "seeds" not in json.loads((folders[0] / "07_once.json").read_text())
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    report = build_report(folders[0], tmp_path / "RESULTS.md").read_text()
    assert "| metric | seed 0 | mean over seeds 0, 1, 2 | std |" in report and "| r10 | 0.5 | 0.6 | 0.1 |" in report


def test_aggregate_seeds_refuses_a_record_of_another_seed(tmp_path):
    folders = {0: tmp_path / "a", 1: tmp_path / "b"}
    _record(folders[0], "01_demo", 0, {"r10": 0.5})
    _record(folders[1], "01_demo", 0, {"r10": 0.5})
    with pytest.raises(ValueError, match=r"b/01_demo.json was produced with seed 0, not 1"):
        aggregate_seeds(folders)


def test_aggregate_seeds_rewrites_nothing_when_a_later_record_is_of_another_seed(tmp_path):
    """The seed check ran notebook by notebook, after the earlier notebooks' records had been rewritten: a refusal
    left the first seed's folder half aggregated."""
    folders = {0: tmp_path / "a", 1: tmp_path / "b"}
    for stem in ("01_demo", "02_demo"):
        _record(folders[0], stem, 0, {"r10": 0.5})
        _record(folders[1], stem, 0 if stem == "02_demo" else 1, {"r10": 0.6})
    with pytest.raises(ValueError, match=r"b/02_demo.json was produced with seed 0, not 1"):
        aggregate_seeds(folders, ["01_demo", "02_demo"])
    assert "seeds" not in json.loads((folders[0] / "01_demo.json").read_text())


def test_timing_keys_name_further_seeds_and_read_back():
    assert timing_key("03_cross_modal_attention") == "03_cross_modal_attention"
    assert timing_key("03_cross_modal_attention", 1) == "03_cross_modal_attention (seed 1)"
    for stem, seed in [("01_baseline_clip", None), ("01_baseline_clip", 12), ("my (seed) notes", 3)]:
        assert parse_timing_key(timing_key(stem, seed)) == (stem, seed)


def test_aggregate_seeds_names_every_record_missing_under_a_seed_and_rewrites_nothing(tmp_path):
    folders = {seed: tmp_path / f"seed-{seed}" for seed in (0, 1, 2)}
    for seed, folder in folders.items():
        _record(folder, "01_demo", seed, {"r10": 0.5})
        if seed != 1:  # 03 ran under seed 1 without writing its record
            _record(folder, "03_demo", seed, {"r10": 0.5})
    with pytest.raises(
        ValueError, match=r"seed-1/03_demo.json: rerun `python -m course_utils.run --only 03 --seeds 0,1,2`"
    ):
        aggregate_seeds(folders, ["01_demo", "03_demo"])
    assert "seeds" not in json.loads((folders[0] / "01_demo.json").read_text())


def test_aggregate_seeds_names_a_damaged_record(tmp_path):
    folders = {seed: tmp_path / f"seed-{seed}" for seed in (0, 1)}
    _record(folders[0], "02_demo", 0, {"r10": 0.5})
    folders[1].mkdir()
    (folders[1] / "02_demo.json").write_text('{"notebook": "02_demo", "metr')  # a run killed mid-write
    with pytest.raises(SystemExit, match=r"seed-1/02_demo.json is .*not a readable record .*--only 02 --seeds 0,1"):
        aggregate_seeds(folders, ["02_demo"])


def test_a_damaged_or_non_object_record_is_named_with_the_command_that_writes_it_again(tmp_path):
    damaged, listed = tmp_path / "01_demo.json", tmp_path / "02_demo.json"
    damaged.write_text('{"metrics": {"r1": 0.')
    listed.write_text("[1, 2]")
    with pytest.raises(
        SystemExit, match=r"01_demo.json is .*not a readable record \(JSONDecodeError.*; write it again with `make x`"
    ):
        load_record(damaged, "`make x`")
    with pytest.raises(SystemExit, match=r"02_demo.json is a JSON array, not a record; write it again with `make x`"):
        load_record(listed, "`make x`")
    with pytest.raises(
        SystemExit, match=r"01_demo.json is .*not a readable record .*`python -m course_utils.run --only 01`"
    ):
        read_results(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda record: record.pop("tables"), r"lacks \['tables'\]"),
        (lambda record: record.update(parameters=[]), r"parameters is \[\], not a JSON object"),
        (lambda record: record.update(metrics=[1, 2]), r"metrics is \[1, 2\], not a JSON object"),
        (lambda record: record.update(tables={"t": {"columns": []}}), r"table 't' lacks \['rows'\]"),
        (lambda record: record.update(tables={"t": [1]}), r"table 't' is a JSON array, not a table"),
        (lambda record: record.update(seeds={"seeds": []}), r"seeds lacks \['mean', 'std'\]"),
        (lambda record: record.update(seeds={"seeds": [], "mean": {}, "std": {}}), r"seeds lists no seed"),
    ],
)
def test_a_record_edited_into_another_shape_is_named_not_a_traceback(tmp_path, edit, message):
    """Before, the report failed with KeyError 'tables' or 'rows', AttributeError 'list' ... 'get' or IndexError,
    naming no file."""
    _record(tmp_path, "01_demo", 0, {"r10": 0.5})
    record = json.loads((tmp_path / "01_demo.json").read_text())
    edit(record)
    (tmp_path / "01_demo.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match=rf"01_demo.json:? {message}.*--only 01"):
        build_report(tmp_path)


def test_a_json_object_that_is_no_notebook_record_is_named_not_a_key_error(tmp_path):
    (tmp_path / "retrieval.json").write_text('{"task": "retrieval", "metrics": {"R@1": 0.2}}')  # evaluate --output
    with pytest.raises(
        SystemExit, match=r"retrieval.json lacks \['notebook', 'parameters', 'tables'\], so it is not a record"
    ):
        build_report(tmp_path)


def test_a_meaningful_index_is_kept_and_nested_or_non_finite_numbers_are_plain_json(tmp_path, monkeypatch):
    values = {"R@1": [0.25, 0.5]}
    assert table_record(pd.DataFrame(values))["columns"] == ["R@1"]  # the default 0, 1, ... says nothing
    named = pd.DataFrame(values, index=pd.RangeIndex(2, name="epoch"))
    assert table_record(named) == {"columns": ["epoch", "R@1"], "rows": [[0, 0.25], [1, 0.5]]}
    shifted = pd.DataFrame(values, index=pd.RangeIndex(1, 3))  # e.g. rows 1 and 2 of a longer table
    assert table_record(shifted) == {"columns": ["index", "R@1"], "rows": [[1, 0.25], [2, 0.5]]}
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    parameters = {"weights": [np.float32(0.5), 1], "limits": {"low": np.float64(-np.inf)}, "pair": (np.int64(3), 4)}
    metrics = {"ratio": float("inf"), "curve": [0.5, float("nan")]}
    path = write_results("01_demo", parameters, metrics)
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text  # standard JSON, readable outside Python
    record = json.loads(text)
    assert record["parameters"] == {"weights": [0.5, 1], "limits": {"low": None}, "pair": [3, 4]}
    assert record["metrics"] == {"ratio": None, "curve": [0.5, None]}


def test_markdown_table_text_lays_out_header_separator_and_rows():
    assert markdown_table_text(["a", "b"], [["1", ""], ["x", "2.5"]]) == ("| a | b |\n|---|---|\n| 1 |  |\n| x | 2.5 |")


def test_a_partial_runs_timings_replace_only_its_notebooks_timings(tmp_path):
    """make records copied a run's timings file over the kept one: after `--only 08`, 01-07's runtimes were gone."""
    kept, run = tmp_path / "kept" / "timings-full.json", tmp_path / "timings-full.json"
    write_json(kept, {"01_baseline_clip": 131.0, "01_baseline_clip (seed 1)": 143.0, "08_scaling_out": 70.0})
    write_json(run, {"08_scaling_out": 67.0})
    main(["merge-timings", str(run), str(kept)])
    assert json.loads(kept.read_text()) == {
        "01_baseline_clip": 131.0,
        "01_baseline_clip (seed 1)": 143.0,
        "08_scaling_out": 67.0,
    }
    write_json(run, {"01_baseline_clip": 120.0})  # 01 rerun under one seed: its seed-1 timing goes too
    assert merge_timings(run, kept) == {"08_scaling_out": 67.0, "01_baseline_clip": 120.0}
    fresh = tmp_path / "new" / "timings-full.json"  # nothing kept yet: the run's timings
    assert merge_timings(run, fresh) == {"01_baseline_clip": 120.0} == json.loads(fresh.read_text())
