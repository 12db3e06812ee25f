"""The papermill runner's argument handling (the notebooks themselves run in test_notebooks.py)."""

import pytest

from course_utils import run


def test_parse_assignments_reads_json_values():
    assert run.parse_assignments(["dataset=fashion-product-small", "test_size=200", "data_root=null", "lr=1e-4"]) == {
        "dataset": "fashion-product-small", "test_size": 200, "data_root": None, "lr": 1e-4}
    with pytest.raises(SystemExit, match="name=value"):
        run.parse_assignments(["oops"])


def test_profiles_inject_profile_and_overrides():
    notebooks = run.discover()
    assert [p.name[:2] for p in notebooks] == sorted(p.name[:2] for p in notebooks) and notebooks
    for notebook in notebooks:
        assert run.profile_parameters(notebook, "ci")["profile"] == "ci"
        assert run.profile_parameters(notebook, "full")["profile"] == "full"
    with pytest.raises(SystemExit, match="unknown profile"):
        run.profile_parameters(notebooks[0], "huge")


def test_only_selects_by_number():
    with pytest.raises(SystemExit, match=r"no notebook numbered \['99'\]"):
        run.discover(["99"])
