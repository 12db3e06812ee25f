"""The tested environment, pinned: ``python -m course_utils.lockfile write|check`` (``make lock``, ``make setup``).

``requirements.txt`` says what the course needs, mostly without versions; ``constraints.txt`` pins every
distribution those requirements pull in, at the version the tests passed with, so that a fresh clone installs what CI
passed with rather than whatever was released since (a new scikit-learn, FAISS or open_clip can move a metric; a new
Jupyter package can break a run). ``make setup`` installs the requirements under these constraints.

The pins are found by walking the installed distributions' metadata from the requirements, through each
distribution's own requirements (their environment markers evaluated, the extras asked for followed), so packages
installed by hand beside them are left out. ``write`` pins what this environment has; ``check`` compares it with
``constraints.txt`` and names every difference. :func:`environment_pins`, a cheaper check without the walk, tells
every notebook and benchmark record whether the environment that wrote it had the pins.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .cache import write_atomic
from .paths import REPO_ROOT

REQUIREMENTS = REPO_ROOT / "requirements.txt"
CONSTRAINTS = REPO_ROOT / "constraints.txt"

HEADER = """\
# Every distribution that requirements.txt pulls in, at the version the tests passed with (CPython 3.11, x86_64).
# make setup installs requirements.txt under these constraints, so a fresh clone gets what CI passed with.
# Written by `make lock` (python -m course_utils.lockfile write) from an environment that passed `make test`;
# `make setup CONSTRAINTS=` resolves afresh instead (another Python or platform). Do not edit by hand.
"""


class LockError(ValueError):
    """A requirements or constraints file that cannot be read, or an environment that does not satisfy it."""


def _parsed_lines(path: Path, what: str) -> Iterator[tuple[int, str, Requirement]]:
    """``(line number, text, requirement)`` of each line of a requirements-format file, comments and blank lines
    skipped; :class:`LockError` naming the file and line for one that is not ``what``."""
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise LockError(f"{path}:{number}: {text!r} is not {what} ({error})") from error
        yield number, text, requirement


def read_requirements(path: Path = REQUIREMENTS) -> list[Requirement]:
    """The requirements of a requirements file, in file order.

    Raises :class:`LockError` naming the file and line for anything else (an option such as ``-e``, a URL, a typo).
    """
    return [requirement for _, _, requirement in _parsed_lines(path, "a requirement")]


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    """``{canonical name: version}`` of a constraints file whose every line is ``name==version``.

    Raises :class:`LockError` naming the file and line for any other line, and for a name pinned twice; a missing
    file says to run ``make lock``.
    """
    if not Path(path).is_file():
        raise LockError(f"{path} does not exist: write it with `make lock` in an environment that passed `make test`")
    pins: dict[str, str] = {}
    for number, text, requirement in _parsed_lines(path, "a pin"):
        specifiers = list(requirement.specifier)
        if (
            requirement.url
            or requirement.extras
            or requirement.marker
            or len(specifiers) != 1
            or (specifiers[0].operator != "==")
        ):
            raise LockError(f"{path}:{number}: {text!r} is not a pin of the form name==version: run `make lock`")
        name = canonicalize_name(requirement.name)
        if name in pins:
            raise LockError(f"{path}:{number}: {requirement.name} is pinned twice: run `make lock`")
        pins[name] = specifiers[0].version
    return pins


def _installed(requirement: Requirement, needed_by: str) -> importlib.metadata.Distribution:
    try:
        distribution = importlib.metadata.distribution(requirement.name)
    except importlib.metadata.PackageNotFoundError as error:
        raise LockError(
            f"{needed_by} needs {requirement}, which is not installed in {sys.prefix}: run `make setup`"
        ) from error
    if not requirement.specifier.contains(distribution.version, prereleases=True):
        raise LockError(
            f"{needed_by} needs {requirement}, but {sys.prefix} has {requirement.name} {distribution.version}: "
            "run `make setup`"
        )
    return distribution


def needed_distributions(requirements: list[Requirement], needed_by: str = "requirements.txt") -> dict[str, str]:
    """``{canonical name: installed version}`` of every distribution the requirements pull in, in this environment.

    Walks each installed distribution's own requirements, keeping those whose environment marker holds here (for
    the extras a requirer asked for, and for none); raises :class:`LockError` for one that is missing or whose
    installed version the requirer's specifier refuses.
    """
    found: dict[str, str] = {}
    followed: set[tuple[str, str]] = set()
    pending = [(requirement, needed_by) for requirement in requirements]
    while pending:
        requirement, requirer = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        distribution = _installed(requirement, requirer)
        name = canonicalize_name(distribution.metadata["Name"])
        found[name] = distribution.version
        for extra in {"", *requirement.extras}:
            if (name, extra) in followed:
                continue
            followed.add((name, extra))
            for text in distribution.requires or []:
                dependency = Requirement(text)
                if dependency.marker is None or dependency.marker.evaluate({"extra": extra}):
                    dependency.marker = None  # it held for this extra: not to be evaluated again without it
                    pending.append((dependency, f"{distribution.metadata['Name']} {distribution.version}"))
    return found


def differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """One line per distribution that is pinned but not needed, needed but not pinned, or at another version."""
    lines = []
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            lines.append(f"{name}: pinned {expected[name]}, not needed here")
        elif name not in expected:
            lines.append(f"{name}: {actual[name]} here, not pinned")
        elif expected[name] != actual[name]:
            lines.append(f"{name}: pinned {expected[name]}, {actual[name]} here")
    return lines


def installed_versions() -> dict[str, str]:
    """``{canonical name: version}`` of every distribution this environment has (one pass over the metadata); of
    a name installed twice, the one found first on ``sys.path``, as imports and ``importlib.metadata`` find it."""
    versions: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        versions.setdefault(canonicalize_name(distribution.metadata["Name"]), distribution.version)
    return versions


def environment_pins(path: Path = CONSTRAINTS) -> dict:
    """Whether this environment has the versions a constraints file pins, for a record's ``environment``.

    ``{"file": "constraints.txt", "pins": 169, "unmet": [...]}``, one line in ``unmet`` per pin that is not
    installed or installed at another version (distributions installed beside the pins are not counted: they do
    not compute the course's numbers); ``{"file": ..., "error": ...}`` when the file cannot be read. Cheap enough
    to call for every record (one pass over the installed metadata, no walk of the requirements).
    """
    try:
        pins = read_constraints(path)
    except LockError as error:
        return {"file": Path(path).name, "error": str(error)}
    installed = installed_versions()
    unmet = [
        f"{name}: pinned {version}, " + (f"{installed[name]} here" if name in installed else "not installed")
        for name, version in sorted(pins.items())
        if installed.get(name) != version
    ]
    return {"file": Path(path).name, "pins": len(pins), "unmet": unmet}


def write_constraints(pins: dict[str, str], path: Path = CONSTRAINTS) -> None:
    """Write ``pins`` as a constraints file: the header, then ``name==version`` lines sorted by name."""
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    text = HEADER + "\n".join(lines) + "\n"
    write_atomic(Path(path), lambda handle: handle.write(text.encode()))  # a cut-short file would drop pins unseen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["write", "check"], help="write: pin this environment; check: compare")
    parser.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    parser.add_argument("--constraints", type=Path, default=CONSTRAINTS)
    args = parser.parse_args(argv)
    try:
        needed = needed_distributions(read_requirements(args.requirements), args.requirements.name)
        if args.action == "write":
            write_constraints(needed, args.constraints)
            print(f"{args.constraints}: {len(needed)} distributions pinned")
            return 0
        found = differences(read_constraints(args.constraints), needed)
    except LockError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in found:
        print(line)
    verdict = "differs from" if found else "matches"
    print(f"this environment ({sys.prefix}) {verdict} {args.constraints} ({len(needed)} distributions needed)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
