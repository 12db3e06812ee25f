"""The package's shape: every import points down the layers drawn in ``course_utils/README.md``, never up."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "course_utils"

# Lowest layer first; a module may import from its own layer or any layer below it.
LAYERS = [
    {"paths", "seeding", "errors", "cache", "json_files", "file_digests", "checks", "lockfile"},
    {"data"},
    {"models"},
    {
        "embed",
        "metrics",
        "index",
        "index_ondisk",
        "losses",
        "train",
        "distributed",
        "viz",
        "results",
        "cli",
        "embed_shards",
    },
    {"tasks"},
    {"retriever", "vector_db"},
    {"demo"},
    {
        "widgets",
        "run",
        "evaluate",
        "serve",
        "classroom",
        "findings",
        "bench_records",
        "golden",
        "handouts",
        "train_contrastive",
    },
]


def layer_of(top: str) -> int:
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f"course_utils.{top} is in no layer: add it to LAYERS and to course_utils/README.md")


def top_level(module: Path) -> str:
    parts = module.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def package_imports(module: Path) -> list[tuple[int, str]]:
    """``(line, top-level course_utils module)`` of every import of the package in ``module``, at any depth."""
    parts = module.relative_to(PACKAGE).with_suffix("").parts
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = []
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[: len(package) - (node.level - 1)]) if node.level > 1 else list(package)
            target = base + (node.module.split(".") if node.module else [])
            names = [target] if node.module else [target + [alias.name] for alias in node.names]
            found += [(node.lineno, t[0]) for t in names if t]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("course_utils"):
            found.append((node.lineno, node.module.split(".")[1] if "." in node.module else node.names[0].name))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("course_utils.")]
    return found


LAYER_NAMES = ["base", "data", "models", "blocks", "tasks", "retrieval", "demo", "interfaces"]


@pytest.mark.parametrize("readme", ["README.md", "course_utils/README.md"])
def test_the_readmes_layer_tables_list_the_layers_modules(readme):
    """Each README's table of layers names the modules of ``LAYERS``, layer by layer, so the docs cannot drift."""
    rows = {}
    for line in (PACKAGE.parent / readme).read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in LAYER_NAMES:
            rows[cells[0]] = {name.rstrip("/") for name in re.findall(r"`([a-z_]+/?)`", cells[1])}
    assert rows == dict(zip(LAYER_NAMES, LAYERS)), f"{readme}'s layer table differs from LAYERS"


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(module):
    own = layer_of(top_level(module))
    upward = [(line, name) for line, name in package_imports(module) if layer_of(name) > own]
    assert not upward, f"{module.relative_to(PACKAGE)} imports from a higher layer: {upward}"


def test_models_are_modules_only():
    """``models/`` builds and loads modules: it never trains, samples, caches or evaluates."""
    for module in (PACKAGE / "models").glob("*.py"):
        imported = {name for _, name in package_imports(module)}
        assert not imported & {"train", "embed", "metrics", "cache", "tasks", "losses"}, module.name


# Libraries imported inside the functions that use them, so that every process importing the package (a notebook's
# kernel, each torchrun rank, the demo server) does not pay for them: scikit-learn (with SciPy) is for notebook 03's
# label re-rankers and the PCA bases of 05 and the demo page; open_clip, FAISS, Milvus and papermill for the code
# paths that build models, indexes and collections or run notebooks.
IMPORTED_WHERE_USED = ("sklearn", "scipy", "open_clip", "faiss", "pymilvus", "papermill")


def test_importing_the_package_leaves_task_specific_libraries_unloaded():
    probe = f"import sys, course_utils; print(sorted(m for m in {IMPORTED_WHERE_USED!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"import course_utils loads {loaded}: import them inside the functions that use them"
