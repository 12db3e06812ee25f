"""Results records and the combined report."""

import json

import numpy as np
import pandas as pd

from course_utils.results import build_report, read_results, write_results


def test_records_round_trip_and_report(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    table = pd.DataFrame({"R@1": [0.25, np.float32(0.5)]}, index=pd.Index(["zero-shot", "fine-tuned"], name="model"))
    path = write_results("01_demo", {"profile": "ci", "seed": 0}, {"r1": np.float64(0.25), "nan": float("nan")},
                         {"recall": table}, notes="Demo notes.")
    record = json.loads(path.read_text())
    assert record["metrics"] == {"r1": 0.25, "nan": None}
    assert record["tables"]["recall"] == {"columns": ["model", "R@1"], "rows": [["zero-shot", 0.25], ["fine-tuned", 0.5]]}
    write_results("02_demo", {"profile": "ci"}, {"r10": 0.7})
    assert [r["notebook"] for r in read_results()] == ["01_demo", "02_demo"]
    report = build_report().read_text()
    assert "## 01_demo" in report and "| zero-shot | 0.25 |" in report and "Demo notes." in report
    assert "| r10 | 0.7 |" in report and "Profile: ci" in report
