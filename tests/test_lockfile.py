"""``constraints.txt`` pins what ``requirements.txt`` pulls in, and a venv built by ``make setup`` has those pins."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from course_utils import lockfile
from course_utils.paths import REPO_ROOT


def test_every_requirement_is_pinned_at_a_version_it_allows():
    pins = lockfile.read_constraints()
    for requirement in lockfile.read_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, which requirements.txt's {requirement} refuses"
        )


def test_a_venv_built_by_make_setup_has_exactly_the_pinned_versions():
    """The check CI makes on its fresh venv: pip installed every pin, and nothing the lock does not name."""
    stamp = Path(sys.prefix) / ".installed"
    installed_under = stamp.read_text().removeprefix("constraints:").strip() if stamp.is_file() else ""
    if not installed_under:
        pytest.skip(f"{sys.prefix} was not installed by `make setup` under a constraints file (stamp {stamp})")
    pinned = lockfile.read_constraints(REPO_ROOT / installed_under)
    needed = lockfile.needed_distributions(lockfile.read_requirements())
    assert lockfile.differences(pinned, needed) == [], "run `make setup` again, or `make lock` after an upgrade"


def fake_distribution(site: Path, name: str, version: str, requires: list[str]) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    (info / "METADATA").write_text("\n".join(lines + [f"Requires-Dist: {r}" for r in requires]) + "\n")


@pytest.fixture
def fake_site(tmp_path, monkeypatch) -> Path:
    """A folder of made-up installed distributions, searched first by ``importlib.metadata``."""
    fake_distribution(
        tmp_path,
        "lock-top",
        "1.0",
        ["lock-base>=2", 'lock-plus; extra == "plus"', 'lock-old; python_version < "3"'],
    )
    fake_distribution(tmp_path, "lock-base", "2.5", [])
    fake_distribution(tmp_path, "lock-plus", "0.3", [])
    fake_distribution(tmp_path, "lock-old", "9.0", [])
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_the_walk_follows_markers_and_only_the_extras_asked_for(fake_site):
    assert lockfile.needed_distributions([Requirement("lock-top")]) == {"lock-top": "1.0", "lock-base": "2.5"}
    assert lockfile.needed_distributions([Requirement("lock-top[plus]")]) == {
        "lock-top": "1.0",
        "lock-base": "2.5",
        "lock-plus": "0.3",
    }
    assert lockfile.needed_distributions([Requirement('lock-top; python_version < "3"')]) == {}


def test_the_walk_names_who_needs_a_missing_or_refused_distribution(fake_site):
    with pytest.raises(lockfile.LockError, match=r"requirements.txt needs lock-absent, which is not installed"):
        lockfile.needed_distributions([Requirement("lock-absent")])
    fake_distribution(fake_site, "lock-needy", "1.0", ["lock-base>=3"])
    with pytest.raises(lockfile.LockError, match=r"lock-needy 1.0 needs lock-base>=3, but .* has lock-base 2.5"):
        lockfile.needed_distributions([Requirement("lock-needy")])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("numpy>=2", "is not a pin of the form name==version"),
        ("numpy==2.0; python_version > '3'", "is not a pin of the form name==version"),
        ("numpy==", "is not a pin"),
        ("-e .", "is not a pin"),
    ],
)
def test_a_constraints_line_that_is_not_a_pin_is_refused_with_its_line(tmp_path, line, message):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"# header\npillow==13.0.0\n{line}\n")
    with pytest.raises(lockfile.LockError, match=rf"constraints.txt:3: .*{message}"):
        lockfile.read_constraints(constraints)


def test_a_name_pinned_twice_or_a_missing_file_is_refused(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("Jupyter_Client==8.10.0\njupyter-client==8.10.0\n")
    with pytest.raises(lockfile.LockError, match=r"constraints.txt:2: jupyter-client is pinned twice"):
        lockfile.read_constraints(constraints)
    with pytest.raises(lockfile.LockError, match=r"absent.txt does not exist: write it with `make lock`"):
        lockfile.read_constraints(tmp_path / "absent.txt")


def test_a_requirements_line_that_is_not_a_requirement_is_refused_with_its_line(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy  # comment\n\n--index-url https://example.org\n")
    with pytest.raises(lockfile.LockError, match=r"requirements.txt:3: '--index-url https://example.org'"):
        lockfile.read_requirements(requirements)


def test_write_then_check_round_trips_and_check_names_each_difference(fake_site, tmp_path, capsys):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("lock-top[plus]\n")
    constraints = tmp_path / "constraints.txt"
    arguments = ["--requirements", str(requirements), "--constraints", str(constraints)]
    assert lockfile.main(["write", *arguments]) == 0
    assert constraints.read_text().startswith(lockfile.HEADER)
    assert lockfile.read_constraints(constraints) == {"lock-base": "2.5", "lock-plus": "0.3", "lock-top": "1.0"}
    assert lockfile.main(["check", *arguments]) == 0
    constraints.write_text("lock-base==2.4\nlock-top==1.0\nlock-gone==1.0\n")
    capsys.readouterr()
    assert lockfile.main(["check", *arguments]) == 1
    assert capsys.readouterr().out.splitlines()[:3] == [
        "lock-base: pinned 2.4, 2.5 here",
        "lock-gone: pinned 1.0, not needed here",
        "lock-plus: 0.3 here, not pinned",
    ]
    constraints.unlink()
    assert lockfile.main(["check", *arguments]) == 2
    assert "constraints.txt does not exist: write it with `make lock`" in capsys.readouterr().err


def test_environment_pins_names_each_pin_this_environment_does_not_meet(fake_site, tmp_path):
    """What every record's ``environment`` says: pins met or not; distributions installed beside them not counted."""
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("lock-base==2.5\nlock-top==1.0\n")
    assert lockfile.environment_pins(constraints) == {"file": "constraints.txt", "pins": 2, "unmet": []}
    constraints.write_text("Lock_Base==2.4\nlock-top==1.0\nlock-gone==1.0\n")
    assert lockfile.environment_pins(constraints) == {
        "file": "constraints.txt",
        "pins": 3,
        "unmet": ["lock-base: pinned 2.4, 2.5 here", "lock-gone: pinned 1.0, not installed"],
    }
    constraints.write_text("lock-base>=2\n")
    assert lockfile.environment_pins(constraints)["error"].endswith(
        "is not a pin of the form name==version: run `make lock`"
    )
    assert "does not exist" in lockfile.environment_pins(tmp_path / "absent.txt")["error"]


def test_installed_versions_keeps_the_first_of_a_name_installed_twice(fake_site, tmp_path, monkeypatch):
    later = tmp_path / "later"
    later.mkdir()
    fake_distribution(later, "lock-base", "9.9", [])
    monkeypatch.setattr(sys, "path", [*sys.path, str(later)])  # after fake_site's lock-base 2.5
    assert lockfile.installed_versions()["lock-base"] == "2.5"
    assert importlib.metadata.version("lock-base") == "2.5"  # the one imports would find
