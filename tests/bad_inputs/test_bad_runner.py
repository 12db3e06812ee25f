"""Issue 15, the runner: an unknown ``--set`` name fails the run before any notebook starts, with close matches,
and an unwritable ``--output-dir`` is one clear line instead of a traceback."""

from __future__ import annotations

import json
import re

import pytest

from course_utils import run


@pytest.fixture
def no_notebook_runs(monkeypatch):
    """Fail the test if the runner gets as far as the kernel or a notebook."""

    def refuse(*args, **kwargs):
        raise AssertionError("the runner went on past its argument checks")

    monkeypatch.setattr(run, "check_kernel", refuse)
    monkeypatch.setattr(run, "execute", refuse)


def test_a_mistyped_set_name_fails_before_any_notebook_with_close_matches(tmp_path, no_notebook_runs, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--set", "top_kk=3", "--set", "seed=1", "--only", "01,07"])
    message = str(exit_info.value.code)
    assert "--set names no parameter of the selected notebooks (01_baseline_clip, 07_retrieval_demo)" in message
    assert "top_kk: did you mean top_k?" in message and "seed:" not in message  # seed is a real parameter
    assert "nothing was run" in message


def test_a_switch_given_anything_but_true_or_false_fails_before_any_notebook(tmp_path, no_notebook_runs, monkeypatch):
    """``--set tune_encoders=no`` would reach the notebook as the string "no", which its ``if`` takes as True."""
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    for value in ("no", "0", "off"):
        with pytest.raises(SystemExit) as exit_info:
            run.main(["--set", f"tune_encoders={value}", "--only", "03"])
        message = str(exit_info.value.code)
        assert "03_cross_modal_attention's tune_encoders is True or False (its default: False)" in message
        assert "nothing was run" in message


@pytest.mark.parametrize(
    ("assignment", "said"),
    [
        ("rerank_k=twenty", "rerank_k is an integer (its default: 20)"),
        ("rerank_k=2.5", "rerank_k is an integer"),
        ("rerank_k=true", "rerank_k is an integer"),
        ("itm_lr=fast", "itm_lr is a number"),
        ("device=1", "device is a string"),
        ("dual_weights=0.5", "dual_weights is a list such as [1, 2]"),
    ],
)
def test_a_value_of_another_kind_than_the_parameters_default_is_refused_by_name(assignment, said):
    notebooks = run.discover(["03"])
    with pytest.raises(SystemExit, match=re.escape(f"03_cross_modal_attention's {said}")):
        run.check_parameter_types(notebooks, run.parse_assignments([assignment]))


def test_values_of_the_defaults_kind_are_accepted():
    accepted = ["tune_encoders=False", "rerank_k=5", "itm_lr=1", "itm_lr=3e-4", "dual_weights=[0, 1]"]
    accepted += ["dual_weights=(0.5,)", "device=cpu", "test_size=300", "test_size=None", "seed=2"]
    run.check_parameter_types(run.discover(["03"]), run.parse_assignments(accepted))


def test_the_kind_a_set_value_must_be_is_the_parameter_cells_whatever_a_profile_overrides(monkeypatch):
    notebooks = run.discover(["03"])
    monkeypatch.setattr(run, "profile_overrides", lambda notebook: {"ci": {"rerank_k": "many"}})
    assert run.notebook_settings(notebooks[0], "ci")["rerank_k"] == "many"
    run.check_parameter_types(notebooks, run.parse_assignments(["rerank_k=5"]))
    with pytest.raises(SystemExit, match="rerank_k is an integer"):
        run.check_parameter_types(notebooks, run.parse_assignments(["rerank_k=many"]))


def test_a_name_with_no_close_match_says_so():
    with pytest.raises(SystemExit, match="zzzzzz: no close match"):
        run.check_parameter_names(run.discover(["01"]), ["zzzzzz"])


def test_a_name_known_to_one_selected_notebook_is_accepted():
    notebooks = run.discover(["01", "07"])
    only_in_07 = sorted(set(run.parameter_defaults(notebooks[1])) - set(run.parameter_defaults(notebooks[0])))
    assert only_in_07, "07 has parameters of its own"
    run.check_parameter_names(notebooks, [only_in_07[0], "seed"])


def test_shipped_profiles_only_name_parameters_of_their_notebook():
    """The same typo guard for the committed overrides in notebooks/profiles/*.json, and for the real profiles'
    shared entries in every notebook that runs in them."""
    real_notebooks = run.in_profile(run.discover(), "real")
    shared = {name for entries in run.REAL_SHARED.values() for name in entries}
    for notebook in run.discover():
        overrides = run.NOTEBOOK_DIR / "profiles" / f"{notebook.stem}.json"
        names = {name for profile in json.loads(overrides.read_text()).values() for name in profile}
        names |= shared if notebook in real_notebooks else set()
        parameters = set(run.parameter_defaults(notebook))
        assert names <= parameters, (notebook.name, names - parameters)


def test_an_output_dir_that_is_a_file_is_one_clear_line(tmp_path, no_notebook_runs, monkeypatch):
    monkeypatch.delenv("FASHION_COURSE_OUTPUTS", raising=False)
    blocker = tmp_path / "results.txt"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--output-dir", str(blocker), "--only", "01"])
    assert str(exit_info.value.code) == (
        f"--output-dir {blocker}: cannot write there (it is a file, not a folder); choose a writable folder"
    )


def test_an_unwritable_output_dir_is_one_clear_line(unwritable_dir, no_notebook_runs, monkeypatch):
    monkeypatch.delenv("FASHION_COURSE_OUTPUTS", raising=False)
    target = unwritable_dir / "outputs"
    with pytest.raises(
        SystemExit, match=rf"--output-dir {target}: cannot write there \(.*\); choose a writable folder"
    ):
        run.main(["--output-dir", str(target), "--only", "01"])


def test_an_unwritable_outputs_variable_is_reported_too(unwritable_dir, no_notebook_runs, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(unwritable_dir / "outputs"))
    with pytest.raises(SystemExit, match=rf"outputs folder {unwritable_dir}/outputs/ci: cannot write there"):
        run.main(["--only", "01"])  # the ci profile's outputs/ci/ under the variable's folder
