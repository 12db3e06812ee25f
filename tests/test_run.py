"""The papermill runner's argument handling (the notebooks themselves run in test_notebooks.py)."""

import json
import os
import sys

import pytest

from course_utils import run
from course_utils.paths import REPO_ROOT


def test_parse_assignments_reads_json_values():
    assert run.parse_assignments(["dataset=fashion-product-small", "test_size=200", "data_root=null", "lr=1e-4"]) == {
        "dataset": "fashion-product-small",
        "test_size": 200,
        "data_root": None,
        "lr": 1e-4,
    }


def test_a_tuple_reaches_the_notebook_as_a_list_not_as_papermill_s_string():
    """``--set dual_weights=(0.5,)`` passed the runner's type check, then papermill wrote it into the notebook as the
    string "(0.5,)", which notebook 03's check refused as not a list of numbers."""
    from papermill.translators import PythonTranslator

    parsed = run.parse_assignments(["dual_weights=(0.5,)", "nested={'ks': (1, (2, 3))}"])
    assert parsed == {"dual_weights": [0.5], "nested": {"ks": [1, [2, 3]]}}
    assert PythonTranslator.translate(parsed["dual_weights"]) == "[0.5]"


def test_parse_assignments_reads_python_literals_as_the_parameter_cells_write_them():
    """Before, ``tune_encoders=False`` reached the notebook as the string "False", which its ``if`` took as True."""
    assert run.parse_assignments(
        ["tune_encoders=False", "run_asen=True", "test_size=None", "ks=(1, 5)", "query=red dress", "condition=colour"]
    ) == {
        "tune_encoders": False,
        "run_asen": True,
        "test_size": None,
        "ks": [1, 5],  # a list: papermill injects a tuple as the string "(1, 5)"
        "query": "red dress",
        "condition": "colour",
    }
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


def _register_kernel(data_dir, name, interpreter):
    kernel = data_dir / "kernels" / name
    kernel.mkdir(parents=True)
    kernel.joinpath("kernel.json").write_text(
        json.dumps(
            {
                "argv": [interpreter, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": name,
                "language": "python",
            }
        )
    )


def test_check_kernel_explains_a_missing_or_stale_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    _register_kernel(tmp_path, "course-test-stale", "/no/such/checkout/.venv/bin/python")
    _register_kernel(tmp_path, "course-test-good", sys.executable)
    with pytest.raises(SystemExit, match="is not registered; run `make setup`"):
        run.check_kernel("course-test-missing")
    with pytest.raises(SystemExit, match="/no/such/checkout/.venv/bin/python, which does not exist"):
        run.check_kernel("course-test-stale")
    run.check_kernel("course-test-good")  # an existing interpreter passes


@pytest.mark.parametrize("notebook", run.discover(), ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_one_parseable_parameters_cell(notebook, caplog):
    from papermill.translators import PythonTranslator

    cells = json.loads(notebook.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown", "the first cell says what the notebook teaches and needs"
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "committed without outputs"
    source = "".join(tagged[0]["source"])
    parsed = PythonTranslator.inspect({"source": source})
    assigned = [line.split("=")[0].strip() for line in source.splitlines() if line and not line.startswith(("#", " "))]
    assert [p.name for p in parsed] == assigned and "Unable to parse" not in caplog.text, (
        "papermill reads every parameter"
    )


def two_cell_notebook(path, code: str):
    """Write a notebook on the course's kernel at ``path``: a ``parameters`` cell, then one cell of ``code``."""
    import nbformat

    cells = [
        nbformat.v4.new_code_cell("profile = 'ci'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(code),
    ]
    kernelspec = {"name": run.KERNEL, "display_name": run.KERNEL, "language": "python"}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)
    return path


def test_a_cell_past_the_timeout_fails_with_what_to_do(tmp_path):
    notebook = two_cell_notebook(tmp_path / "99_slow.ipynb", "import time\ntime.sleep(30)")
    with pytest.raises(
        run.NotebookFailed,
        match=r"99_slow.ipynb: a cell ran longer than --cell-timeout 2 s .* "
        r"rerun with a larger --cell-timeout",
    ):
        run.execute(notebook, tmp_path / "out.ipynb", {"profile": "ci"}, run.KERNEL, cell_timeout=2)


def test_the_runners_kernels_encrypt_their_sockets_where_the_libraries_can(tmp_path, capfd):
    import nbformat

    if "transport_encryption" not in run.kernel_config().KernelManager:
        pytest.skip("these jupyter_client and pyzmq give kernels no CurveZMQ keys (jupyter_client 8.9 and later do)")
    notebook = two_cell_notebook(
        tmp_path / "99_keys.ipynb",
        "from ipykernel.kernelapp import IPKernelApp\nprint(IPKernelApp.instance().curve_secretkey is not None)",
    )
    run.execute(notebook, tmp_path / "out.ipynb", {"profile": "ci"}, run.KERNEL, cell_timeout=60)
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "True\n"  # the kernel was started with a secret key
    assert "without encryption" not in capfd.readouterr().err


def test_seeds_repeat_the_experiments_and_aggregate_their_records(tmp_path, monkeypatch):
    from course_utils.paths import figures_dir
    from course_utils.results import write_results

    runs = []

    def execute(notebook, output, parameters, kernel, cell_timeout):  # what a notebook's kernel does, in-process
        runs.append((notebook.name[:2], parameters["seed"], figures_dir()))
        write_results(notebook.stem, parameters, {"R@10": 0.5 + parameters["seed"] / 10})
        output.write_text("{}")
        return 1.0

    monkeypatch.setattr(run, "execute", execute)
    monkeypatch.setattr(run, "check_kernel", lambda name: None)
    assert run.main(["--profile", "ci", "--only", "01,07", "--seeds", "0,1,2", "--output-dir", str(tmp_path)]) == 0
    assert [(number, seed) for number, seed, _ in runs] == [("01", 0), ("07", 0), ("01", 1), ("01", 2)]
    assert [figures for *_, figures in runs] == [tmp_path / "figures"] * 2 + [
        tmp_path / "seeds" / f"seed-{seed}" / "figures" for seed in (1, 2)
    ]
    record = json.loads((tmp_path / "results" / "01_baseline_clip.json").read_text())
    assert record["parameters"]["seed"] == 0 and record["seeds"]["values"]["R@10"] == [0.5, 0.6, 0.7]
    assert "seeds" not in json.loads((tmp_path / "results" / "07_retrieval_demo.json").read_text())
    assert "mean over seeds 0, 1, 2" in (tmp_path / "RESULTS.md").read_text()


def test_seeds_are_checked_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path / "outputs"))
    with pytest.raises(SystemExit, match="comma-separated integers"):
        run.parse_seeds("0,one")
    with pytest.raises(SystemExit, match="repeats a seed"):
        run.parse_seeds("1,1")
    with pytest.raises(SystemExit, match="either with --seeds or with --set seed"):
        run.main(["--seeds", "0,1", "--set", "seed=3", "--only", "01"])
    assert not (tmp_path / "outputs").exists()  # refused before the outputs folder was made


def test_seeds_name_the_notebooks_run_once_and_a_record_missing_under_a_further_seed(tmp_path, monkeypatch, capsys):
    from course_utils.results import write_results

    def execute(notebook, output, parameters, kernel, cell_timeout):  # writes its record under seed 0 only
        if parameters["seed"] == 0:
            write_results(notebook.stem, parameters, {"R@10": 0.5})
        output.write_text("{}")
        return 1.0

    monkeypatch.setattr(run, "execute", execute)
    monkeypatch.setattr(run, "check_kernel", lambda name: None)
    assert run.main(["--profile", "ci", "--only", "07", "--seeds", "0,1", "--output-dir", str(tmp_path / "once")]) == 0
    printed = capsys.readouterr().out
    assert "07_retrieval_demo: run under seed 0 only (--seeds repeats 01, 02, 03, 04, 05, 06)" in printed
    assert "records now carry" not in printed and not (tmp_path / "once" / "seeds").exists()
    argv = ["--profile", "ci", "--only", "01", "--seeds", "0,1", "--output-dir", str(tmp_path / "lost")]
    assert run.main(argv) == 1
    missing = tmp_path / "lost" / "seeds" / "seed-1" / "results" / "01_baseline_clip.json"
    assert f"{missing}: rerun `python -m course_utils.run --only 01 --seeds 0,1`" in capsys.readouterr().err


def test_a_notebook_without_a_profile_file_runs_with_its_defaults_and_not_in_the_real_profiles(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(run, "NOTEBOOK_DIR", tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "01_with.json").write_text(json.dumps({"real": {"queries": 5}}))
    with_file, without = tmp_path / "01_with.ipynb", tmp_path / "02_without.ipynb"
    assert run.profile_parameters(without, "ci") == {"profile": "ci"}
    assert run.in_profile([with_file, without], "real-ci") == [with_file]
    assert "02_without.ipynb does not run in the real-ci profile" in capsys.readouterr().out


def test_a_dead_kernel_fails_the_notebook_with_what_to_do(tmp_path, monkeypatch):
    import papermill
    from nbclient.exceptions import DeadKernelError

    def killed(*args, **kwargs):  # what nbclient raises when the kernel process is killed (e.g. out of memory)
        raise DeadKernelError("Kernel died")

    monkeypatch.setattr(papermill, "execute_notebook", killed)
    with pytest.raises(run.NotebookFailed, match=r"01_x.ipynb: its kernel died \(Kernel died\), .*memory.*--only"):
        run.execute(tmp_path / "01_x.ipynb", tmp_path / "out.ipynb", {}, run.KERNEL, cell_timeout=5)


def test_real_profiles_extend_real_and_skip_notebooks_without_a_real_entry(capsys):
    from course_utils.tasks.photo_pretrain import PHOTO_RECIPE

    notebooks = run.discover()
    shared_real, shared_real_ci = run.REAL_SHARED["real"], run.REAL_SHARED["real-ci"]
    for notebook in run.in_profile(notebooks, "real"):
        by_profile = json.loads(run.profile_file(notebook).read_text())
        real, real_ci = run.profile_parameters(notebook, "real"), run.profile_parameters(notebook, "real-ci")
        # Every notebook pretrains the photo recipe's tower on the Kaggle layout: the tower is named once.
        assert (real["model"], real["pretrained"], real["dataset"]) == (
            PHOTO_RECIPE.model,
            "photo",
            "fashion-product-small",
        )
        assert real == {**by_profile["full"], **shared_real, **by_profile["real"], "profile": "real"}  # full's sizes
        assert real_ci == {
            **by_profile["ci"],
            **shared_real,
            **by_profile["real"],
            **shared_real_ci,
            **by_profile.get("real-ci", {}),
            "profile": "real-ci",
        }
    kept = run.in_profile(notebooks, "real-ci")
    assert [n.name[:2] for n in kept] == ["01", "02", "03", "04", "05", "06", "07"]
    assert "08_scaling_out.ipynb does not run in the real-ci profile" in capsys.readouterr().out
    assert run.in_profile(notebooks, "ci") == notebooks
    with pytest.raises(SystemExit, match="runs in the real profile"):
        run.in_profile(run.discover(["08"]), "real")


def test_the_readme_states_the_real_ci_runs_sizes():
    from course_utils.tasks.photo_pretrain import PROFILE_EPOCHS
    from tests.test_real_ci import REAL_CI_PRODUCTS

    readme = (REPO_ROOT / "README.md").read_text()
    assert readme.count(f"first {REAL_CI_PRODUCTS:,} products") == 2
    test_size = run.profile_parameters(run.discover(["01"])[0], "real-ci")["test_size"]
    assert f"with a {PROFILE_EPOCHS['real-ci']}-epoch pretraining and {test_size} test items" in readme


def test_real_profiles_need_a_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    with pytest.raises(SystemExit, match="add --set data_root=/path/to/fashion-product-small"):
        run.main(["--profile", "real", "--only", "01"])
    assert run.profile_environment("real", {"data_root": "/data"}, None)["FASHION_COURSE_OUTPUTS"] == str(
        tmp_path / "real"
    )


@pytest.mark.parametrize(
    "profile, output_dir, expected_outputs, expected_figures",
    [
        ("full", None, ".", None),  # make run: the committed figures/ (None: the repository's)
        ("ci", None, "ci", "ci/figures"),  # a quick run never rewrites figures/ or the full run's records
        ("real-ci", None, "real-ci", "real-ci/figures"),  # real photos' figures stay out of figures/
        ("full", "elsewhere", "elsewhere", "elsewhere/figures"),  # --output-dir takes the figures along
        ("ci", "elsewhere", "elsewhere", "elsewhere/figures"),
    ],
)
def test_only_the_full_profile_writes_the_committed_figures(
    tmp_path, monkeypatch, profile, output_dir, expected_outputs, expected_figures
):
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    monkeypatch.delenv("FASHION_COURSE_FIGURES", raising=False)
    given = tmp_path / output_dir if output_dir else None
    variables = run.profile_environment(profile, {"data_root": "/data"}, given)
    assert variables["FASHION_COURSE_OUTPUTS"] == str((tmp_path / expected_outputs).resolve())
    figures = tmp_path / expected_figures if expected_figures else REPO_ROOT / "figures"
    assert variables["FASHION_COURSE_FIGURES"] == str(figures)


def test_a_figures_variable_set_by_the_user_still_decides(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_FIGURES", str(tmp_path / "mine"))
    variables = run.profile_environment("ci", {}, tmp_path / "run")
    assert variables["FASHION_COURSE_FIGURES"] == str(tmp_path / "mine")


def test_a_relative_figures_variable_names_a_folder_under_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the kernels run in notebooks/, not where the runner started
    monkeypatch.setenv("FASHION_COURSE_FIGURES", "outputs/slides")
    variables = run.profile_environment("ci", {}, tmp_path / "run")
    assert variables["FASHION_COURSE_FIGURES"] == str(REPO_ROOT / "outputs" / "slides")


def test_a_ci_run_writes_its_notebooks_records_and_figures_under_outputs_ci(tmp_path, monkeypatch):
    from course_utils.paths import figures_dir, outputs_dir
    from course_utils.results import write_results

    seen = []

    def execute(notebook, output, parameters, kernel, cell_timeout):  # what a notebook's kernel does, in-process
        seen.append((outputs_dir(), figures_dir()))
        write_results(notebook.stem, parameters, {"R@10": 0.5})
        output.write_text("{}")
        return 1.0

    monkeypatch.setattr(run, "execute", execute)
    monkeypatch.setattr(run, "check_kernel", lambda name: None)
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(tmp_path))
    monkeypatch.delenv("FASHION_COURSE_FIGURES", raising=False)
    assert run.main(["--profile", "ci", "--only", "01"]) == 0
    assert seen == [(tmp_path / "ci", tmp_path / "ci" / "figures")]
    assert sorted(path.name for path in (tmp_path / "ci").iterdir()) == [
        "01_baseline_clip.ipynb",
        "RESULTS.md",
        "figures",
        "results",
        "timings-ci.json",
    ]
    assert not (tmp_path / "results").exists()
    # the run's variables were for its kernels: a second run in this process starts from the same environment
    assert "FASHION_COURSE_FIGURES" not in os.environ and os.environ["FASHION_COURSE_OUTPUTS"] == str(tmp_path)


def test_notebook_settings_are_the_parameter_cell_updated_by_the_profile():
    notebook = run.NOTEBOOK_DIR / "03_cross_modal_attention.ipynb"
    default, full = run.notebook_settings(notebook, "ci"), run.notebook_settings(notebook, "full")
    assert default == {**run.parameter_defaults(notebook), "profile": "ci"}  # 03's ci entry changes nothing
    assert default["mining_k"] == full["mining_k"] == 32 and default["dual_weights"][-1] == 100.0
    assert (default["itm_epochs"], full["itm_epochs"]) == (5, 20) and full["profile"] == "full"
    for other in run.discover():  # every parameter cell holds literals the helper can read
        assert run.notebook_settings(other, "ci")["profile"] == "ci"


def test_a_run_that_stops_leaves_no_earlier_record_timings_or_report_to_pass_for_its_own(tmp_path, monkeypatch):
    """A failed run used to leave the earlier run's record of the failed notebook, its timings file and RESULTS.md,
    which make records then copied as this run's."""
    from course_utils.results import write_results

    def execute(notebook, output, parameters, kernel, cell_timeout):
        if parameters.get("top_k") == 3 and notebook.name.startswith("07"):
            raise run.NotebookFailed(f"{notebook.name} failed in cell 2")
        write_results(notebook.stem, parameters, {"R@10": 0.5})
        output.write_text("{}")
        return 1.0

    monkeypatch.setattr(run, "execute", execute)
    monkeypatch.setattr(run, "check_kernel", lambda name: None)
    argv = ["--profile", "ci", "--only", "01,07", "--output-dir", str(tmp_path)]
    assert run.main(argv) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"timings-ci.json", "RESULTS.md"}
    assert run.main([*argv, "--set", "top_k=3"]) == 1
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["01_baseline_clip.json"]  # this run's
    assert not (tmp_path / "timings-ci.json").exists() and not (tmp_path / "RESULTS.md").exists()


def test_the_report_leaves_out_and_names_records_of_another_profile_in_the_folder(tmp_path, monkeypatch):
    from course_utils.results import write_results

    def execute(notebook, output, parameters, kernel, cell_timeout):
        write_results(notebook.stem, parameters, {"R@10": 0.5})
        output.write_text("{}")
        return 1.0

    monkeypatch.setattr(run, "execute", execute)
    monkeypatch.setattr(run, "check_kernel", lambda name: None)
    assert run.main(["--profile", "ci", "--only", "01", "--output-dir", str(tmp_path)]) == 0
    assert run.main(["--profile", "full", "--only", "07", "--output-dir", str(tmp_path)]) == 0
    report = (tmp_path / "RESULTS.md").read_text()
    assert "Profile: full." in report and "## 07_retrieval_demo" in report and "## 01_baseline_clip" not in report
    assert "Left out, records of another profile in the same folder: 01_baseline_clip (ci)." in report


@pytest.mark.parametrize("folder", ["notebooks", "notebooks/inside", "."])
def test_an_output_dir_that_is_the_course_itself_is_refused(folder, monkeypatch):
    """--output-dir notebooks wrote the executed copies over the source notebooks; '.' wrote into figures/."""
    monkeypatch.setattr(run, "check_kernel", lambda name: pytest.fail("the run went on"))
    with pytest.raises(SystemExit, match="--output-dir .*: the executed notebooks would replace the course's own"):
        run.main(["--profile", "ci", "--only", "01", "--output-dir", str(run.REPO_ROOT / folder)])


@pytest.mark.parametrize(
    ("profile_file", "message"),
    [
        ({"ci": {}, "Ci": {"top_k": 3}}, r"entries \['Ci'\] are no profile; name one of"),
        ({"ci": {"top_kk": 3}}, r"\['top_kk'\] are not parameters of 01_x.ipynb"),
    ],
)
def test_a_profile_file_entry_for_no_profile_or_no_parameter_is_refused(tmp_path, monkeypatch, profile_file, message):
    """papermill injects any name and a misspelt profile is never read: both ran with the defaults and exited 0."""
    monkeypatch.setattr(run, "NOTEBOOK_DIR", tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "01_x.json").write_text(json.dumps(profile_file))
    notebook = two_cell_notebook(tmp_path / "01_x.ipynb", "print(top_k)")
    with pytest.raises(SystemExit, match=message):
        run.check_profile_files([notebook])


def test_a_parameters_cell_that_is_no_literal_names_the_notebook_and_parameter(tmp_path):
    import nbformat

    path = two_cell_notebook(tmp_path / "03_x.ipynb", "print(sizes)")
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[0].source = "sizes = list(range(3))"
    nbformat.write(notebook, path)
    with pytest.raises(SystemExit, match=r"03_x.ipynb: its parameters cell sets sizes = list\(range\(3\)\), which is"):
        run.parameter_defaults(path)
