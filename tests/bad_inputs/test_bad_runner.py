"""Issue 15, the runner: an unknown ``--set`` name fails the run before any notebook starts, with close matches,
and an unwritable ``--output-dir`` is one clear line instead of a traceback."""

from __future__ import annotations

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


def test_shipped_profiles_only_name_profiles_and_parameters_of_their_notebook():
    """The runner's guard (every run checks the files of the notebooks it runs) holds for the committed overrides in
    notebooks/profiles/*.json, with the real profiles' shared entries in every notebook that runs in them."""
    run.check_profile_files(run.discover())


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


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--seeds", "0,-1"], "--seeds '0,-1': seed must be a whole number from 0 to 2**32 - 1 (4294967295), got -1"),
        (
            ["--seeds", "4294967296"],
            "--seeds '4294967296': seed must be a whole number from 0 to 2**32 - 1 (4294967295), got 4294967296",
        ),
        (["--set", "seed=-1"], "--set seed=-1: seed must be a whole number from 0 to 2**32 - 1 (4294967295), got -1"),
    ],
)
def test_a_seed_numpy_refuses_is_refused_by_option_before_any_notebook(argv, said, tmp_path, no_notebook_runs):
    """Notebook 01's kernel would otherwise die on NumPy's "Seed must be between 0 and 2**32 - 1"."""
    with pytest.raises(SystemExit) as exit_info:
        run.main([*argv, "--only", "01", "--output-dir", str(tmp_path)])
    assert str(exit_info.value.code) == f"{said}; nothing was run"


def test_the_library_refuses_a_bad_seed_naming_the_parameter_and_its_range():
    from course_utils.seeding import MAX_SEED, check_seed, seed_everything

    for seed in (-1, MAX_SEED + 1, 1.5, True, "3"):
        with pytest.raises(ValueError, match=re.escape("seed must be a whole number from 0 to 2**32 - 1 (4294967295)")):
            seed_everything(seed)
    assert check_seed(0) == 0 and check_seed(MAX_SEED) == MAX_SEED


@pytest.mark.parametrize("value", ["full", "nonsense"])
def test_the_profile_is_not_a_set_parameter(value, tmp_path, no_notebook_runs):
    """``--set profile=full`` would run full's sizes while the records went to the ci profile's folder."""
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--set", f"profile={value}", "--only", "01", "--output-dir", str(tmp_path)])
    assert str(exit_info.value.code).startswith(
        f"--set profile={value}: give the profile with --profile (one of ci, full, real, real-ci)"
    )


@pytest.mark.parametrize("timeout", ["0", "-5", "soon"])
def test_a_cell_timeout_below_one_second_is_refused(timeout, no_notebook_runs, capsys):
    """nbclient takes 0 or a negative timeout as no timeout at all: a hung cell would hang the run."""
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--cell-timeout", timeout, "--only", "01"])
    assert exit_info.value.code == 2
    assert f"argument --cell-timeout: must be a whole number of at least 1, got '{timeout}'" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "example"), [("--only", "01,02"), ("--seeds", "0,1,2")])
def test_a_selection_that_names_nothing_is_refused_by_option(option, example, tmp_path, no_notebook_runs):
    """``--only ,`` ran every notebook and ``--seeds ,`` ran as if it were not given."""
    with pytest.raises(SystemExit) as exit_info:
        run.main([option, " , ", "--output-dir", str(tmp_path)])
    assert str(exit_info.value.code) == (
        f"{option} ' , ' names nothing: give comma-separated values such as {example}, or leave it out"
    )


def test_spaces_around_the_selected_numbers_and_seeds_are_dropped(tmp_path, monkeypatch):
    ran = []

    def execute(notebook, output, parameters, kernel, cell_timeout):
        ran.append((notebook.name[:2], parameters["seed"]))
        raise run.NotebookFailed("stop after the first notebook")

    monkeypatch.setattr(run, "execute", execute)
    monkeypatch.setattr(run, "check_kernel", lambda name: None)
    assert run.main(["--only", " 01, 07 ", "--seeds", "3, 4", "--output-dir", str(tmp_path)]) == 1
    assert ran == [("01", 3)]
    assert [n.name[:2] for n in run.discover(run.comma_list(" 01, 07 ", "--only", "01,02"))] == ["01", "07"]


def test_text_that_reads_as_a_number_is_refused_with_how_to_quote_it():
    """``--set text_query=1984`` is parsed as a number; the message said only that the parameter is a string."""
    notebooks = run.discover(["07"])
    with pytest.raises(SystemExit) as refused:
        run.check_parameter_types(notebooks, run.parse_assignments(["text_query=1984"]))
    assert "text_query is a string (quote text that reads as a number: --set 'text_query=\"...\"')" in str(
        refused.value.code
    )
    with pytest.raises(SystemExit) as refused:  # not a number: no advice to quote it
        run.check_parameter_types(notebooks, run.parse_assignments(["text_query=True"]))
    assert "text_query is a string (its default" in str(refused.value.code)
    assert run.parse_assignments(['text_query="1984"']) == {"text_query": "1984"}  # the quoted form is text
