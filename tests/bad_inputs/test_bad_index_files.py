"""Issue 15, index files: saving where the parent is a file or cannot be written, and loading a corrupt index or a
FAISS file that disagrees with its settings, give an error naming the path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch.nn.functional as F
from torch import Generator, randn

from course_utils.index import ExactIndex, FaissIndex, build_index
from tests.conftest import flip_a_tensor_byte

KINDS = ["exact", "flat", "hnsw"]


def filled(kind: str, ids: bool = False, d: int = 4):
    index = build_index(kind, d)
    vectors = F.normalize(randn(10, d, generator=Generator().manual_seed(0)), dim=1)
    index.add(vectors, ids=np.arange(100, 110) if ids else None)
    return index


def load(kind: str, path):
    return ExactIndex.load(path) if kind.startswith("exact") else FaissIndex.load(path)


@pytest.mark.parametrize("kind", KINDS)
def test_saving_under_a_file_names_the_file(kind, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match=rf"cannot save the index to {blocker}/sub/i.idx: {blocker} is a file"):
        filled(kind).save(blocker / "sub" / "i.idx")


@pytest.mark.parametrize("kind", KINDS)
def test_saving_onto_a_folder_names_it(kind, tmp_path):
    with pytest.raises(IsADirectoryError, match=rf"cannot save the index to {tmp_path}: it is a folder"):
        filled(kind).save(tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_saving_into_an_unwritable_folder_names_the_path(kind, unwritable_dir):
    target = unwritable_dir / "i.idx"
    with pytest.raises(OSError, match=rf"cannot write the index to {target}: .*; choose a writable folder"):
        filled(kind).save(target)


@pytest.mark.parametrize("kind", KINDS)
def test_saving_into_a_missing_folder_creates_it_and_round_trips(kind, tmp_path):
    index = filled(kind, ids=True)
    path = tmp_path / "new" / "deeper" / "i.idx"
    index.save(path)
    query = F.normalize(randn(2, 4, generator=Generator().manual_seed(1)), dim=1)
    np.testing.assert_array_equal(load(kind, path).search(query, 3)[1], index.search(query, 3)[1])


@pytest.mark.parametrize("kind", KINDS)
def test_loading_a_missing_file_names_it(kind, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/nothing.idx"):
        load(kind, tmp_path / "nothing.idx")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_loading_a_corrupt_index_names_the_file(kind, damage, tmp_path):
    path = tmp_path / "i.idx"
    filled(kind).save(path)
    data = path.read_bytes()
    path.write_bytes(b"garbage" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(
        ValueError,
        match=rf"{path} is not a readable (ExactIndex|FAISS index) file .*delete it, "
        "rebuild the index and save it again",
    ) as err:
        load(kind, path)
    assert "weights_only" not in str(err.value) and err.value.__suppress_context__


def test_a_faiss_file_whose_dimension_disagrees_with_its_settings_names_both(tmp_path):
    path = tmp_path / "i.idx"
    filled("flat").save(path)
    settings = json.loads((tmp_path / "i.idx.json").read_text())
    (tmp_path / "i.idx.json").write_text(json.dumps({**settings, "dim": 8}))
    with pytest.raises(ValueError, match=rf"{path} holds a IndexFlatIP of d=4 but {path}.json says kind='flat', dim=8"):
        FaissIndex.load(path)


def test_a_faiss_file_whose_kind_disagrees_with_its_settings_is_refused(tmp_path):
    path = tmp_path / "i.idx"
    filled("flat").save(path)
    settings = json.loads((tmp_path / "i.idx.json").read_text())
    (tmp_path / "i.idx.json").write_text(json.dumps({**settings, "kind": "hnsw"}))
    with pytest.raises(ValueError, match=r"holds a IndexFlatIP of d=4 but .* says kind='hnsw'"):
        FaissIndex.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"format": "course_utils.Fa', r"is missing or not a readable FaissIndex settings file \(JSONDecodeError"),
        ('["course_utils.FaissIndex/1"]', "is a JSON array, not a FaissIndex settings file"),
        ('{"format": "course_utils.ExactIndex/1"}', r"is not a FaissIndex settings file of format .*'course_utils"),
        ('{"format": "course_utils.FaissIndex/1"}', r"lacks \['dim', "),
    ],
)
def test_a_corrupt_faiss_settings_file_names_it(tmp_path, content, message):
    path = tmp_path / "i.idx"
    filled("flat").save(path)
    (tmp_path / "i.idx.json").write_text(content)
    with pytest.raises(ValueError, match=rf"{path}.json {message}"):
        FaissIndex.load(path)


def test_missing_or_mismatched_faiss_ids_name_the_ids_file(tmp_path):
    path, ids = tmp_path / "i.idx", tmp_path / "i.idx.ids.npy"
    filled("flat", ids=True).save(path)
    np.save(ids, np.arange(3))
    with pytest.raises(ValueError, match=rf"{ids} is not the file i.idx.json was saved with \(its SHA-256 differs\)"):
        FaissIndex.load(path)
    np.savez(ids.with_suffix(".npz"), ids=np.arange(10))
    ids.with_suffix(".npz").replace(ids)  # another kind of numpy file: refused by its checksum before it is read
    with pytest.raises(ValueError, match=rf"{ids} is not the file i.idx.json was saved with"):
        FaissIndex.load(path)
    settings = json.loads((tmp_path / "i.idx.json").read_text())
    del settings["ids_sha256"]  # settings saved before checksums were recorded: the ids are checked as read
    (tmp_path / "i.idx.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=rf"{ids} is not a readable FaissIndex ids file"):
        FaissIndex.load(path)
    np.save(ids, np.arange(3))
    with pytest.raises(ValueError, match=rf"{ids} holds \(3,\) int64 ids but the index has 10 vectors"):
        FaissIndex.load(path)
    ids.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{ids} not found"):
        FaissIndex.load(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"dim": "4"}, r'dim is "4", not a JSON integer'),
        ({"nlist": None}, r"nlist is null, not a JSON integer"),
        ({"custom_ids": False}, r"says custom_ids is false but records the SHA-256 of an ids file"),
    ],
)
def test_faiss_settings_edited_into_another_shape_are_refused(tmp_path, edit, message):
    """Before, a string dim or a null nlist gave a TypeError naming no file, and custom_ids switched off returned
    row positions instead of the saved ids."""
    path = tmp_path / "i.idx"
    filled("flat", ids=True).save(path)
    settings = json.loads((tmp_path / "i.idx.json").read_text())
    (tmp_path / "i.idx.json").write_text(json.dumps({**settings, **edit}))
    with pytest.raises(ValueError, match=rf"{path}.json:? .*{message}"):
        FaissIndex.load(path)


def test_an_exact_index_file_with_a_changed_vector_byte_is_refused(tmp_path):
    """It still unpickles; before, the changed vector was searched without a word."""
    path = tmp_path / "exact.pt"
    filled("exact").save(path)
    flip_a_tensor_byte(path)
    with pytest.raises(ValueError, match=rf"{path}: its numbers differ from the digest saved with them"):
        ExactIndex.load(path)


def test_an_exact_index_file_of_another_format_is_refused(tmp_path):
    import torch

    path = tmp_path / "other.pt"
    torch.save({"format": "something else"}, path)
    with pytest.raises(ValueError, match=rf"{path} is not an ExactIndex file written by ExactIndex.save"):
        ExactIndex.load(path)
