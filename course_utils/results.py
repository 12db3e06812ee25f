"""Results are records: each notebook writes one JSON; the report only reads those records.

``write_results`` stores a notebook's parameters, metrics and tables in ``outputs/results/<notebook>.json``;
``build_report`` gathers every record into ``outputs/RESULTS.md``, a report an instructor can project.
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import pandas as pd

from .paths import outputs_dir


def results_dir() -> Path:
    path = outputs_dir() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(value):
    """Make NumPy / torch scalars JSON-friendly (NaN becomes null)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def table_record(frame: pd.DataFrame) -> dict:
    """A DataFrame as ``{"columns": [...], "rows": [[...], ...]}`` (index kept as the first column)."""
    frame = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    return {"columns": [str(c) for c in frame.columns], "rows": [[_plain(v) for v in row] for row in frame.itertuples(index=False)]}


def write_results(notebook: str, parameters: dict, metrics: dict, tables: dict[str, pd.DataFrame] | None = None,
                  notes: str = "") -> Path:
    """Write one notebook's record.

    Args:
        notebook: notebook stem, e.g. ``"01_baseline_clip"``.
        parameters: the parameters that produced the numbers (the papermill parameters cell).
        metrics: flat ``name -> number`` dict (what later notebooks and the report compare).
        tables: named DataFrames to show in the report.
        notes: one or two sentences for the report.
    """
    import torch

    record = {
        "notebook": notebook,
        "parameters": {k: _plain(v) for k, v in parameters.items()},
        "metrics": {k: _plain(v) for k, v in metrics.items()},
        "tables": {name: table_record(frame) for name, frame in (tables or {}).items()},
        "notes": notes,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "device": "cuda" if torch.cuda.is_available() else "cpu"},
    }
    path = results_dir() / f"{notebook}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def read_results(directory: Path | None = None) -> list[dict]:
    """All records, ordered by notebook name."""
    directory = directory or results_dir()
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def _markdown_table(columns: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def build_report(directory: Path | None = None, out: Path | None = None, title: str = "Results") -> Path:
    """Gather every notebook record into one markdown report (``outputs/RESULTS.md`` by default)."""
    records = read_results(directory)
    profile = {r["parameters"].get("profile") for r in records} - {None}
    parts = [f"# {title}", "", f"Profile: {', '.join(sorted(profile)) or 'n/a'}. One section per notebook; "
             "numbers are read from `outputs/results/*.json`.", ""]
    for record in records:
        parts += [f"## {record['notebook']}", ""]
        if record.get("notes"):
            parts += [record["notes"], ""]
        for name, table in record["tables"].items():
            parts += [f"**{name}**", "", _markdown_table(table["columns"], table["rows"]), ""]
        if record["metrics"]:
            parts += ["**metrics**", "", _markdown_table(["metric", "value"], [[k, v] for k, v in record["metrics"].items()]), ""]
    out = out or outputs_dir() / "RESULTS.md"
    out.write_text("\n".join(parts))
    return out
