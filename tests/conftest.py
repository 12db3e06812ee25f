"""Shared fixtures and helpers: the real-format samples beside the checkout (``../shared/data``), an isolated cache
for every test, the procedural catalogue and tiny CLIP, a toy CLIP with toy data built in code, and the benchmark
scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from course_utils.data.records import ArrayImage, Catalogue, Item
from course_utils.paths import REPO_ROOT, shared_data_dir


def _require(path: Path) -> Path:
    """``path`` itself, or skip the test when that folder is absent."""
    if not path.is_dir():
        pytest.skip(f"{path} not present: real-format samples live in ../shared/data")
    return path


# `make test` runs the suite in two processes (pytest-xdist, `--dist loadscope`) with this scheduler: a unit of work
# is a test module, so its module fixtures (a browser, a server, an index) start once; the modules that read the ci
# notebook run's outputs join its unit, after it; and the longest units start first, so that neither process is left
# running one alone at the end. (xdist's own `xdist_group` marks do not group on pytest 9, whose node ids xdist 3.8
# cannot suffix.)
JOINS_UNIT_OF = {
    "tests/test_slides.py": "tests/test_notebooks.py",
    "tests/test_solutions.py": "tests/test_notebooks.py",
}
LONGEST_FIRST = ("tests/test_notebooks.py", "tests/test_real_ci.py", "tests/test_browser.py")


def unit_of(nodeid: str) -> str:
    """The unit of work of the test ``nodeid``: its module's path (``tests/data/test_render.py``), or the module
    whose outputs it reads."""
    module = nodeid.split("::", 1)[0]
    return JOINS_UNIT_OF.get(module, module)


@pytest.hookimpl(optionalhook=True)  # pytest without xdist (-p no:xdist, or not installed) runs the suite too
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadscope":
        return None  # xdist's own scheduler for its other modes
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return ByUnit(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):
        return  # not an xdist worker: the collection order stays

    def start_order(item) -> int:  # the scheduler hands out the units in the order of their first test
        unit = unit_of(item.nodeid)
        return LONGEST_FIRST.index(unit) if unit in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=start_order)  # stable: within a unit, and among the rest, the collection order stays


@pytest.fixture(scope="session")  # a path: module fixtures (test_real_ci.py's run) may need it too
def shared_data() -> Path:
    """The shared data folder; skips the test when it is absent (e.g. on a fresh clone)."""
    return _require(shared_data_dir())


@pytest.fixture(scope="session")
def fashion_product_sample(shared_data: Path) -> Path:
    """``../shared/data/fashion-product-small`` (5,000 real rows and images, plus the full original CSV)."""
    return _require(shared_data / "fashion-product-small")


@pytest.fixture
def fashioniq_sample(shared_data: Path) -> Path:
    """``../shared/data/fashioniq`` (the official annotation files, no images)."""
    return _require(shared_data / "fashioniq")


SMALL_SIZES = {"pretrain": 40, "train": 160, "val": 20, "test": 160}


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """No test reads or writes the course's ``data/cache``: the session uses a temporary cache folder.

    Tests that need an empty cache of their own take :func:`isolated_cache`; the notebook and browser runs use
    ``outputs/test-cache`` (see ``test_notebooks.py``).
    """
    folder = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("FASHION_COURSE_CACHE")
    os.environ["FASHION_COURSE_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("FASHION_COURSE_CACHE", None)
    else:
        os.environ["FASHION_COURSE_CACHE"] = previous


@pytest.fixture(autouse=True)
def _restore_course_environment():
    """The runner sets ``FASHION_COURSE_OUTPUTS`` for its kernels (``--output-dir``); no test leaks that to the next."""
    names = ("FASHION_COURSE_OUTPUTS", "FASHION_COURSE_FIGURES", "FASHION_COURSE_CACHE")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _force_cpu(monkeypatch):
    """Tests run on the CPU, whatever the machine has."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


@pytest.fixture(scope="session")
def small_catalogue():
    """A small procedural catalogue (cached in the session's temporary cache)."""
    from course_utils.data import load_catalogue

    return load_catalogue("synthetic", size=SMALL_SIZES, seed=3)


@pytest.fixture(scope="session")
def tiny_bundle():
    """The tiny CLIP with open_clip's random initialisation (no pretraining: fast and deterministic)."""
    import torch

    from course_utils.models import load_clip

    torch.manual_seed(0)
    return load_clip("tiny-fashion-clip", pretrained=None, device="cpu")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Point the course's disk cache at an empty temporary folder."""
    monkeypatch.setenv("FASHION_COURSE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- toy model and data built in code (import them: `from conftest import tiny_clip`) ---------------------------------


def tiny_clip(seed: int = 0) -> nn.Module:
    """An open_clip CLIP small enough to train in milliseconds: 16 px images, 8-token texts, width 32."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=16)
    text = CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    return CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text)


def tokenize(texts: list[str]) -> torch.Tensor:
    """Words -> ids by a fixed hash (no vocabulary file); id 63 ends each text, as CLIP's EOT has the largest id."""
    rows = torch.zeros(len(texts), 8, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [1 + sum(map(ord, word)) % 61 for word in text.split()][:7] + [63]
        rows[i, : len(ids)] = torch.tensor(ids)
    return rows


def preprocess(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def tiny_catalogue(n: int = 24, seed: int = 0) -> Catalogue:
    """``n`` random 16-px images, each with three different captions (so caption draws depend on the epoch)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    words = ["red", "blue", "green", "striped", "plain", "dress", "shirt", "coat"]
    items = [
        Item(
            f"item-{i}",
            tuple(" ".join(rng.choice(words, 3)) for _ in range(3)),
            ("web",) * 3,
            {"colour": words[i % 3]},
            "train",
            ArrayImage(pixels, i),
        )
        for i in range(n)
    ]
    return Catalogue("tiny", items)


def parameters_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class StubBundle:
    """The parts of a ClipBundle the retriever uses, with embeddings a test can predict: an image embeds as its
    normalised mean RGB, a text as the pure colour of its first colour word (red, green or blue; none: grey)."""

    COLOUR_WORDS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}
    embed_dim, identity, device = 3, "stub-rgb", torch.device("cpu")
    model = nn.Module()

    @staticmethod
    def preprocess(image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(images.mean(dim=(2, 3)), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            colours = [self.COLOUR_WORDS[word] for word in text.lower().split() if word in self.COLOUR_WORDS]
            rows.append(torch.tensor(colours[0] if colours else (1.0, 1.0, 1.0)))
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)

    context_length = 12  # words read, as a CLIP tokenizer reads a fixed number of tokens

    def texts_at_context_limit(self, texts: list[str]) -> list[bool]:
        return [len(text.split()) >= self.context_length for text in texts]


def flip_a_tensor_byte(path: Path) -> None:
    """Change one byte in the middle of the largest tensor of a ``torch.save`` file (stored uncompressed in its zip):
    the file still unpickles, as after a bad sector or a damaged copy."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        largest = max((info for info in archive.infolist() if "/data/" in info.filename), key=lambda i: i.file_size)
        data = archive.read(largest)
    raw = bytearray(path.read_bytes())
    offset = raw.find(data) + len(data) // 2
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
