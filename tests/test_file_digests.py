"""Content digests of input files: copies keep their digests, edits change them, a damaged index heals."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time

import pytest
from PIL import Image

from course_utils import file_digests
from course_utils.data.records import Catalogue, FileImage, Item
from course_utils.file_digests import content_digest, content_digests, digest_index_path


@pytest.fixture(autouse=True)
def _own_cache(isolated_cache):
    """Each test starts with no digest index (and damages only its own)."""


@pytest.fixture
def reads(monkeypatch):
    """The files :mod:`course_utils.file_digests` reads, in order."""
    seen = []
    real = file_digests.file_sha256

    def counting(path):
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(file_digests, "file_sha256", counting)
    return seen


def photo_folder(folder, colours=("red", "navy", "olive")):
    folder.mkdir()
    for number, colour in enumerate(colours):
        Image.new("RGB", (6, 8), colour).save(folder / f"{number}.jpg")
    return folder


def test_digest_is_the_sha256_of_the_bytes_and_missing_files_are_none(tmp_path):
    assert content_digests([]) == [] and not list(digest_index_path().parent.glob("file-digests*"))
    path = tmp_path / "a.bin"
    path.write_bytes(b"fashion")
    assert content_digest(path) == hashlib.sha256(b"fashion").hexdigest()
    assert content_digests([path, tmp_path / "gone.bin", tmp_path]) == [content_digest(path), None, None]
    with pytest.raises(FileNotFoundError, match="gone.bin"):
        content_digest(tmp_path / "gone.bin")


def test_a_copy_without_its_times_keeps_its_digests_and_catalogue_fingerprint(tmp_path):
    original = photo_folder(tmp_path / "original")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, copy_function=shutil.copy)  # bytes only, as `cp` without -p
    for number, path in enumerate(sorted(copy.iterdir())):
        os.utime(path, ns=(10**18 + number, 10**18 + number))  # and surely other times

    def catalogue(folder):
        items = [Item(p.stem, ("a photo",), ("title",), {}, "test", FileImage(p)) for p in sorted(folder.iterdir())]
        return Catalogue("photos", items)

    assert catalogue(copy).fingerprint() == catalogue(original).fingerprint()
    assert content_digests(sorted(copy.iterdir())) == content_digests(sorted(original.iterdir()))
    Image.new("RGB", (6, 8), "white").save(copy / "1.jpg")
    edited = catalogue(copy).fingerprint()
    assert edited != catalogue(original).fingerprint()
    items = list(catalogue(copy))
    (copy / "2.jpg").unlink()
    assert Catalogue("photos", items).fingerprint() != edited


def test_a_file_is_read_again_only_when_its_size_or_time_changes(tmp_path, reads):
    folder = photo_folder(tmp_path / "photos")
    paths = sorted(folder.iterdir())
    first = content_digests(paths)
    assert reads == ["0.jpg", "1.jpg", "2.jpg"]
    assert content_digests(paths) == first and len(reads) == 3
    Image.new("RGB", (6, 8), "yellow").save(paths[1])
    os.utime(paths[1], ns=(1, 1))
    second = content_digests(paths)
    assert reads[3:] == ["1.jpg"]
    assert second[0] == first[0] and second[2] == first[2] and second[1] != first[1]


def test_a_file_replaced_with_the_same_size_and_time_is_read_again(tmp_path, reads):
    """cp -p, rsync -a or an unzip onto the same path keeps size and modification time: the index kept the old
    digest, so the catalogue's fingerprint, and every model cached for it, stayed those of the replaced photo."""
    folder = photo_folder(tmp_path / "photos")
    paths = sorted(folder.iterdir())
    first = content_digests(paths)
    old = os.stat(paths[1])
    replacement = tmp_path / "replacement.jpg"
    replacement.write_bytes(paths[1].read_bytes()[:-1] + b"\x00")  # other bytes, the same size
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(replacement, paths[1])
    assert (os.stat(paths[1]).st_size, os.stat(paths[1]).st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    second = content_digests(paths)
    assert reads[3:] == ["1.jpg"] and second[1] == hashlib.sha256(paths[1].read_bytes()).hexdigest() != first[1]


def test_a_file_rewritten_in_place_with_its_time_restored_is_read_again(tmp_path, reads):
    """Same inode, size and modification time: only the status-change time tells the edit apart."""
    folder = photo_folder(tmp_path / "photos")
    paths = sorted(folder.iterdir())
    first = content_digests(paths)
    old = os.stat(paths[1])
    time.sleep(0.05)  # past the kernel's coarse clock tick, so the edit gets a later status-change time
    with open(paths[1], "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)[0]
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last ^ 0xFF]))  # another last byte, the same size
    os.utime(paths[1], ns=(old.st_atime_ns, old.st_mtime_ns))
    new = os.stat(paths[1])
    assert (new.st_ino, new.st_size, new.st_mtime_ns) == (old.st_ino, old.st_size, old.st_mtime_ns)
    assert new.st_ctime_ns != old.st_ctime_ns
    second = content_digests(paths)
    assert reads[3:] == ["1.jpg"] and second[1] == hashlib.sha256(paths[1].read_bytes()).hexdigest() != first[1]


@pytest.mark.parametrize(
    "damage",
    [
        b"\x00\xff not json",
        b'{"version": %d, "files": []}' % file_digests.INDEX_VERSION,
        b'{"version": %d, "files": {}}' % (file_digests.INDEX_VERSION - 1),
        b"[1, 2]",
    ],
    ids=["garbage", "files-not-a-mapping", "older-version", "not-an-object"],
)
def test_a_damaged_index_is_named_rebuilt_and_never_trusted(tmp_path, reads, caplog, damage):
    folder = photo_folder(tmp_path / "photos")
    paths = sorted(folder.iterdir())
    expected = [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]
    digest_index_path().write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="course_utils.file_digests"):
        assert content_digests(paths) == expected
    assert str(digest_index_path()) in caplog.text and "rebuilt" in caplog.text
    assert json.loads(digest_index_path().read_text())["version"] == file_digests.INDEX_VERSION
    caplog.clear()
    assert content_digests(paths) == expected and len(reads) == 3 and not caplog.text


def test_a_wrong_entry_is_read_again_and_entries_of_removed_files_are_dropped(tmp_path, reads):
    folder = photo_folder(tmp_path / "photos")
    paths = sorted(folder.iterdir())
    expected = content_digests(paths)
    index = json.loads(digest_index_path().read_text())
    index["files"][os.path.abspath(paths[0])][4] = "not a digest"
    digest_index_path().write_text(json.dumps(index))
    paths[2].unlink()
    assert content_digests(paths) == [expected[0], expected[1], None]
    assert reads[3:] == ["0.jpg"]
    assert set(json.loads(digest_index_path().read_text())["files"]) == {os.path.abspath(p) for p in paths[:2]}


def test_an_index_that_cannot_be_written_is_named_and_the_digests_still_returned(tmp_path, monkeypatch, caplog):
    """A class's read-only cache: the digests are computed all the same; only remembering them fails."""
    paths = sorted(photo_folder(tmp_path / "photos").iterdir())

    def read_only(path, value, indent=2):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(file_digests, "write_json", read_only)
    with caplog.at_level(logging.WARNING, logger="course_utils.file_digests"):
        found = content_digests(paths)
    assert found == [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]
    assert f"file-digest index {digest_index_path()} not written (Permission denied)" in caplog.text


def test_a_write_of_the_index_cut_short_by_a_killed_process_leaves_no_temporary_file(tmp_path):
    """The index's temporaries of a killed writer (`kill -9` mid-write) were never removed; the artefacts' were."""
    index = digest_index_path()
    index.parent.mkdir(parents=True, exist_ok=True)
    leftover = index.parent / f".{index.name}.f8pc5wfp.tmp"
    leftover.write_text('{"version": 2, "fi')
    content_digests(sorted(photo_folder(tmp_path / "photos").iterdir()))
    assert not leftover.exists() and index.exists()
