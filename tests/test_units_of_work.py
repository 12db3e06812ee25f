"""`make test` runs the suite in two processes with the units of work of ``tests/conftest.py``: a test that reads the
ci notebook run's outputs must be in that run's unit, after it, or it may read them half written."""

import re

from course_utils.paths import REPO_ROOT
from tests.conftest import unit_of

READS_CI_OUTPUTS = re.compile(r'"outputs" / "ci[-"]')  # outputs/ci and outputs/ci-tuned-towers


def test_every_module_that_reads_the_ci_runs_outputs_is_in_its_unit():
    readers = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "tests").rglob("test_*.py")
        if READS_CI_OUTPUTS.search(path.read_text())
    ]
    assert "tests/test_notebooks.py" in readers  # the pattern still finds the run itself
    assert {module: unit_of(f"{module}::test") for module in readers} == dict.fromkeys(
        readers, "tests/test_notebooks.py"
    )


def test_any_other_module_is_a_unit_of_its_own():
    assert unit_of("tests/test_real_ci.py::test_x") == "tests/test_real_ci.py"
    assert unit_of("tests/test_run.py::test_y[a::b]") == "tests/test_run.py"  # a parameter's "::" is not the module's
    # modules of one file name in two folders are two units
    assert unit_of("tests/bad_inputs/test_run.py::test_z") == "tests/bad_inputs/test_run.py"
