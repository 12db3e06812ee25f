"""The test suite's golden numbers (``course_utils.golden``): written from a run's records, compared value for value
on the same numerics and by names and parameters on others. The suite's own runs are compared in test_notebooks.py
(ci) and test_real_ci.py (real-ci)."""

import copy
import json

import pytest

from course_utils import golden
from course_utils.json_files import write_json

ENVIRONMENT = {
    "python": "3.11.7",
    "cpu": "AMD EPYC",
    "cpu_signature": "family 25 model 1 stepping 1; avx avx2 fma",
    "kernels": {"faiss": "AVX2"},
    "libraries": {"torch": "2.14.1"},
    "torch_threads": 1,
    "constraints": {"pins": 171, "unmet": []},
}


def record(stem: str, metrics: dict, **environment) -> dict:
    return {
        "notebook": stem,
        "parameters": {"profile": "ci", "seed": 0},  # not data_root: where this checkout keeps the data
        "metrics": metrics,
        "tables": {},
        "notes": "",
        "environment": {**ENVIRONMENT, **environment},
    }


def write_run(folder, *records: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for one in records:
        write_json(folder / f"{one['notebook']}.json", one)
    return folder


@pytest.fixture
def run(tmp_path):
    """A ci run's results folder: two notebooks, each with a timing among its metrics."""
    return write_run(
        tmp_path / "run",
        record("01_baseline", {"t2i_full_R@10": 0.359, "gallery_size": 1000, "nan": None, "runtime_s": 31.5}),
        record("03_rerank", {"rerank/R@1": 0.27, "latency_ms/dual": 0.4}),
    )


def test_written_numbers_hold_the_metrics_but_the_timings_and_match_their_run(run, tmp_path, capsys):
    path = tmp_path / "golden.json"
    assert golden.main(["write", "--records", str(run), "--golden", str(path)]) == 0
    kept = golden.read_golden(path, "ci")
    numerics = {key: ENVIRONMENT[key] for key in golden.NUMERICS}  # not the cpu's name or the pins
    assert kept["notebooks"]["01_baseline"]["metrics"] == {"t2i_full_R@10": 0.359, "gallery_size": 1000, "nan": None}
    assert kept["notebooks"]["03_rerank"] == {
        "numerics": numerics,
        "parameters": {"profile": "ci", "seed": 0},  # not data_root: where this checkout keeps the data
        "metrics": {"rerank/R@1": 0.27},
    }
    capsys.readouterr()
    assert golden.main(["check", "--records", str(run), "--golden", str(path)]) == 0
    assert capsys.readouterr().out == f"the records in {run} match {path}\n"


def test_every_change_is_one_line(run):
    kept = golden.golden_numbers(golden.records_by_notebook(run, "ci"), "ci")
    records = golden.records_by_notebook(run, "ci")
    records["01_baseline"]["metrics"].update({"t2i_full_R@10": 0.36, "runtime_s": 12.0, "new": 1})  # a timing: unseen
    records["01_baseline"]["parameters"]["seed"] = 1
    records["03_rerank"]["parameters"]["data_root"] = "/another/checkout/outputs/data"  # not compared
    del records["03_rerank"]["metrics"]["rerank/R@1"]
    records["04_ablation"] = record("04_ablation", {"R@1": 0.1})
    assert golden.differences(kept, records) == [
        "01_baseline parameter seed: golden 0, this run 1",
        "01_baseline new: new, 1",
        "01_baseline t2i_full_R@10: golden 0.359, this run 0.36",
        "03_rerank rerank/R@1: no longer recorded (golden 0.27)",
        "04_ablation: not in the golden file",
    ]
    del records["03_rerank"]
    assert "03_rerank: no record in this run" in golden.differences(kept, records)


def test_other_numerics_compare_names_and_parameters_not_values(run, tmp_path, capsys):
    path = tmp_path / "golden.json"
    golden.main(["write", "--records", str(run), "--golden", str(path)])
    kept = golden.read_golden(path, "ci")
    other = write_run(
        tmp_path / "other",
        record("01_baseline", {"t2i_full_R@10": 0.4, "gallery_size": 1000, "nan": None}, torch_threads=2),
        record("03_rerank", {"rerank/R@1": 0.3}, torch_threads=2, kernels={"faiss": "AVX2", "scipy": "Haswell"}),
    )
    records = golden.records_by_notebook(other, "ci")
    assert golden.differences(kept, records) == []
    assert golden.numerics_differences(kept, records) == [
        "torch_threads: golden 1, this run 2 (01, 03)",
        "kernels: golden {'faiss': 'AVX2'}, this run {'faiss': 'AVX2', 'scipy': 'Haswell'} (03)",
    ]
    capsys.readouterr()
    assert golden.main(["check", "--records", str(other), "--golden", str(path)]) == 0
    assert "  torch_threads: golden 1, this run 2 (01, 03)" in capsys.readouterr().out
    del records["03_rerank"]["metrics"]["rerank/R@1"]
    assert golden.differences(kept, records) == ["03_rerank rerank/R@1: no longer recorded (golden 0.27)"]
    records["01_baseline"]["environment"]["torch_threads"] = 1  # 01 on the golden numerics again: values compared
    assert "01_baseline t2i_full_R@10: golden 0.359, this run 0.4" in golden.differences(kept, records)


def test_a_changed_value_fails_the_check_naming_it(run, tmp_path, capsys):
    path = tmp_path / "golden.json"
    golden.main(["write", "--records", str(run), "--golden", str(path)])
    moved = json.loads((run / "03_rerank.json").read_text())
    moved["metrics"]["rerank/R@1"] = 0.28
    write_json(run / "03_rerank.json", moved)
    capsys.readouterr()
    assert golden.main(["check", "--records", str(run), "--golden", str(path)]) == 1
    assert capsys.readouterr().out == "03_rerank rerank/R@1: golden 0.27, this run 0.28\n"


def test_records_that_cannot_be_golden_are_refused_by_name(run, tmp_path):
    with pytest.raises(ValueError, match=r"holds no notebook records; run the notebooks first"):
        golden.records_by_notebook(tmp_path / "empty", "ci")
    full = copy.deepcopy(json.loads((run / "03_rerank.json").read_text()))
    full["parameters"]["profile"] = "full"
    write_json(run / "03_rerank.json", full)
    with pytest.raises(ValueError, match=r"run: 03_rerank ran in another profile than ci; give a ci run's records"):
        golden.records_by_notebook(run, "ci")


def test_a_damaged_golden_file_is_named_with_what_to_do(run, tmp_path):
    path = tmp_path / "golden.json"
    path.write_text('{"format": "course_utils.golden/1", "notebooks": {}')
    with pytest.raises(ValueError, match=rf"{path} is missing or not a readable golden numbers file .*make golden"):
        golden.read_golden(path, "ci")
    write_json(path, {"format": "course_utils.golden/0", "profile": "ci", "notebooks": {}})
    with pytest.raises(ValueError, match=r"golden/0"):
        golden.read_golden(path, "ci")
    write_json(path, {"format": "course_utils.golden/1", "profile": "real-ci", "notebooks": {}})
    with pytest.raises(ValueError, match=r"holds the golden numbers of profile real-ci, not ci; write it again"):
        golden.read_golden(path, "ci")
    with pytest.raises(SystemExit, match=r"is missing or not a readable golden numbers file"):
        golden.main(["check", "--records", str(run), "--golden", str(tmp_path / "none.json")])
