"""The one writer and reader of the course's JSON files: atomic writes, and every bad file refused by name."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from course_utils.json_files import read_json_object, write_json


def test_a_written_object_reads_back_with_its_format_and_fields(tmp_path):
    path = tmp_path / "new" / "record.json"  # the folder is created
    write_json(path, {"format": "demo/1", "count": 3, "name": "é"})
    assert path.read_text(encoding="utf-8") == '{\n  "format": "demo/1",\n  "count": 3,\n  "name": "\\u00e9"\n}\n'
    assert read_json_object(path, "demo record", "rerun demo", "demo/1", ("count",))["count"] == 3


def test_every_written_file_is_standard_json_with_nan_and_inf_as_null(tmp_path):
    """A training summary's diverged loss or a benchmark's empty percentile used to be written as a bare NaN token,
    which JavaScript, jq and other JSON readers refuse."""
    path = tmp_path / "summary.json"
    write_json(path, {"loss": float("nan"), "curve": (np.float32(0.5), float("inf")), "step": np.int64(3)})

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"loss": None, "curve": [0.5, None], "step": 3}


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "01_demo.json"
    write_json(path, {"r1": 0.25})

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_json(path, {"r1": 0.5})
    assert json.loads(path.read_text()) == {"r1": 0.25} and sorted(tmp_path.iterdir()) == [path]  # no temp file left


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"is missing or not a readable demo record \(FileNotFoundError: No such file or directory\)"),
        (b'{"format": "demo/1", "co', r"is missing or not a readable demo record \(JSONDecodeError: "),
        (b"\xff\xfe{}", r"is missing or not a readable demo record \(UnicodeDecodeError: "),
        (b'["demo/1"]', r"is a JSON array, not a demo record"),
        (b'{"count": 3}', r"is not a demo record of format demo/1 \(its format: None\)"),
        (b'{"format": "demo/0", "count": 3}', r"is not a demo record of format demo/1 \(its format: 'demo/0'\)"),
        (b'{"format": "demo/1"}', r"lacks \['count'\], so it is not a demo record this reader can use"),
    ],
    ids=["missing", "truncated", "not-utf8", "a-list", "untagged", "another-format", "a-field-missing"],
)
def test_a_bad_file_is_refused_naming_it_what_it_should_be_and_what_to_do(tmp_path, content, message):
    path = tmp_path / "record.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^{path} {message}.*; rerun demo$"):
        read_json_object(path, "demo record", "rerun demo", "demo/1", ("count",))


def test_without_a_format_any_object_with_the_fields_is_read(tmp_path):
    path = tmp_path / "timings.json"
    path.write_text('{"01_baseline_clip": 12.5}')
    assert read_json_object(path, "timings file", "rerun", fields=("01_baseline_clip",)) == {"01_baseline_clip": 12.5}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"32"', r"dim is \"32\", not a JSON integer"),
        ("true", r"dim is true, not a JSON integer"),  # a bool is an int in Python, not in JSON
        ("3.5", r"dim is 3.5, not a JSON integer"),
        ("null", r"dim is null, not a JSON integer"),
    ],
)
def test_a_field_of_another_json_type_is_refused_by_name(tmp_path, value, message):
    path = tmp_path / "settings.json"
    path.write_text(f'{{"dim": {value}, "ids": null, "scale": 1, "custom": false}}')
    fields = {"dim": int, "ids": (list, None), "scale": float, "custom": bool}
    with pytest.raises(ValueError, match=rf"^{path}: {message}, so it is not a demo file .*; redo$"):
        read_json_object(path, "demo file", "redo", fields=fields)


def test_fields_of_their_types_null_where_allowed_and_an_integer_as_a_number_are_read(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"dim": 32, "ids": null, "scale": 1, "custom": false}')
    fields = {"dim": int, "ids": (list, None), "scale": float, "custom": bool}
    assert read_json_object(path, "demo file", "redo", fields=fields)["scale"] == 1
