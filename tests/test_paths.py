"""Where caches, outputs and figures go: the environment variables are read against the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_utils import paths
from course_utils.paths import REPO_ROOT


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a folder that is not the repository root (a notebook's kernel runs in notebooks/)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_relative_value_names_a_folder_under_the_repository_root_wherever_python_runs(elsewhere, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", "outputs/mine")
    monkeypatch.setenv("FASHION_COURSE_FIGURES", "outputs/mine/slides")
    monkeypatch.setenv("FASHION_COURSE_SHARED_DATA", "../shared/data")
    assert paths.outputs_dir(create=False) == REPO_ROOT / "outputs" / "mine"
    assert paths.env_path("FASHION_COURSE_FIGURES", REPO_ROOT / "unused") == REPO_ROOT / "outputs" / "mine" / "slides"
    assert paths.shared_data_dir() == REPO_ROOT / ".." / "shared" / "data"


def test_a_home_relative_value_is_expanded(elsewhere, monkeypatch):
    monkeypatch.setenv("HOME", str(elsewhere / "home"))
    monkeypatch.setenv("FASHION_COURSE_CACHE", "~/course-cache")
    assert paths.cache_dir() == elsewhere / "home" / "course-cache"
    assert (elsewhere / "home" / "course-cache").is_dir()
    assert not (elsewhere / "~").exists()


def test_an_absolute_value_is_used_as_given(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_COURSE_FIGURES", str(tmp_path / "figs"))
    assert paths.figures_dir() == tmp_path / "figs"


def test_an_empty_value_counts_as_unset(elsewhere, monkeypatch):
    for name in ("FASHION_COURSE_OUTPUTS", "FASHION_COURSE_FIGURES", "FASHION_COURSE_SHARED_DATA"):
        monkeypatch.setenv(name, "")
    assert paths.outputs_dir(create=False) == REPO_ROOT / "outputs"
    assert paths.env_path("FASHION_COURSE_FIGURES", Path("default")) == Path("default")
    assert paths.shared_data_dir() == REPO_ROOT.parent / "shared" / "data"


@pytest.mark.parametrize(
    ("variable", "folder"),
    [
        ("FASHION_COURSE_CACHE", paths.cache_dir),
        ("FASHION_COURSE_OUTPUTS", paths.outputs_dir),
        ("FASHION_COURSE_FIGURES", paths.figures_dir),
    ],
)
def test_a_folder_variable_naming_a_file_says_which_variable_to_change(variable, folder, tmp_path, monkeypatch):
    """Before, ``mkdir``'s bare ``FileExistsError`` came out of deep inside a load or a save."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv(variable, str(blocker))
    with pytest.raises(FileExistsError) as refused:
        folder()
    assert str(refused.value) == (
        f"{variable}: cannot create the folder {blocker} (it is a file, not a folder); "
        f"point {variable} at a writable folder"
    )


def test_the_figures_folder_under_an_unusable_outputs_folder_names_the_outputs_variable(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("FASHION_COURSE_OUTPUTS", str(blocker))
    monkeypatch.delenv("FASHION_COURSE_FIGURES", raising=False)
    with pytest.raises(
        NotADirectoryError, match=rf"^FASHION_COURSE_OUTPUTS: cannot create the folder {blocker}/figures"
    ):
        paths.figures_dir()


def test_a_catalogue_load_with_a_file_for_its_cache_names_the_variable(tmp_path, monkeypatch):
    from course_utils.data import load_catalogue

    blocker = tmp_path / "cache"
    blocker.write_text("x")
    monkeypatch.setenv("FASHION_COURSE_CACHE", str(blocker))
    with pytest.raises(OSError, match="point FASHION_COURSE_CACHE at a writable folder"):
        load_catalogue("synthetic", size="ci")
