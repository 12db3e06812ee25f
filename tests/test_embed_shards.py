"""Sharded embedding (notebook 08): ranks encode slices, the merge equals one process bit for bit."""

from __future__ import annotations

import json

import pytest
import torch

from course_utils import embed_shards
from course_utils.embed import encode_images, weights_digest
from course_utils.embed_shards import embed_shard, main, merge_shards, shard_rows
from course_utils.models.clip_loader import weights_file_label


def test_shard_rows_are_whole_batches_that_tile_the_catalogue():
    # 10 items in batches of 3 -> 4 batches [0,3) [3,6) [6,9) [9,10); 3 ranks get 1, 1 and 2 of them.
    assert [shard_rows(10, 3, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [shard_rows(2, 4, r, 3) for r in range(3)] == [(0, 0), (0, 0), (0, 2)]  # more ranks than batches
    with pytest.raises(ValueError, match="rank"):
        shard_rows(10, 3, 3, 3)


@pytest.fixture(scope="module")
def gallery(small_catalogue):
    return small_catalogue.split("test")  # 160 items


def test_merged_shards_equal_the_single_process_embeddings(tiny_bundle, gallery, tmp_path):
    reference = encode_images(tiny_bundle, gallery, batch_size=32, use_cache=False, progress=False)
    for rank in range(3):
        embed_shard(tiny_bundle, gallery, tmp_path, rank, 3, batch_size=32)
    merged = merge_shards(tmp_path, gallery)
    assert torch.equal(merged, reference)
    manifest = json.loads((tmp_path / "shard-00001-of-00003.json").read_text())
    assert (manifest["start"], manifest["stop"], manifest["n_items"]) == (32, 96, 160)


def test_merge_names_missing_ranks_and_corrupt_shards(tiny_bundle, gallery, tmp_path):
    embed_shard(tiny_bundle, gallery, tmp_path, 0, 2, batch_size=64)
    with pytest.raises(FileNotFoundError, match=r"ranks \[1\]"):
        merge_shards(tmp_path)
    embed_shard(tiny_bundle, gallery, tmp_path, 1, 2, batch_size=64)
    shard = tmp_path / "shard-00001-of-00002.pt"
    state = torch.load(shard, weights_only=True)
    state["embeddings"][0, 0] += 1.0
    torch.save(state, shard)
    with pytest.raises(ValueError, match="checksum"):
        merge_shards(tmp_path)


def test_merge_refuses_shards_encoded_with_another_batch_size(tiny_bundle, gallery, tmp_path):
    # 160 items on 2 ranks: batches of 64 and of 32 both give rank 1 the rows [64, 160), so the rows still tile
    # the catalogue; only the manifests' batch_size tells the shards apart.
    embed_shard(tiny_bundle, gallery, tmp_path, 0, 2, batch_size=64)
    embed_shard(tiny_bundle, gallery, tmp_path, 1, 2, batch_size=32)
    manifest = json.loads((tmp_path / "shard-00001-of-00002.json").read_text())
    assert (manifest["start"], manifest["stop"]) == (64, 160)
    with pytest.raises(ValueError, match=r"batch_size \(32: shard-00001-of-00002\.json; 64: shard-00000-of-00002"):
        merge_shards(tmp_path)


def test_merge_refuses_another_catalogue(tiny_bundle, gallery, tmp_path):
    embed_shard(tiny_bundle, gallery, tmp_path, 0, 1, batch_size=64)
    with pytest.raises(ValueError, match="different catalogue"):
        merge_shards(tmp_path, gallery.subset(gallery.ids[:-1]))


def test_empty_shards_of_surplus_ranks_merge_to_the_single_process_embeddings(tiny_bundle, gallery, tmp_path):
    # 160 items in batches of 64 -> 3 batches over 4 ranks: rank 0 gets none, ranks 1-3 one batch each.
    reference = encode_images(tiny_bundle, gallery, batch_size=64, use_cache=False, progress=False)
    for rank in range(4):
        embed_shard(tiny_bundle, gallery, tmp_path, rank, 4, batch_size=64)
    empty = json.loads((tmp_path / "shard-00000-of-00004.json").read_text())
    assert (empty["start"], empty["stop"], empty["dim"]) == (0, 0, tiny_bundle.embed_dim)
    assert torch.equal(merge_shards(tmp_path, gallery), reference)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda text: text[: len(text) // 2],
            r"shard-00000-of-00001\.json is missing or not a readable shard manifest \(JSONDecodeError",
        ),
        (
            lambda text: text.replace('"world_size"', '"worldsize"'),
            r"shard-00000-of-00001\.json lacks \['world_size'\], so it is not a shard manifest",
        ),
        (
            lambda text: text.replace('"shard": "shard-00000-of-00001.pt"', '"shard": null'),
            r"shard-00000-of-00001\.json: shard is null, not a JSON string",
        ),
        (
            lambda text: text.replace("embed_shards/1", "embed_shards/0"),
            r"is not a shard manifest of format course_utils\.embed_shards/1 \(its format: '.*embed_shards/0'\)",
        ),
    ],
)
def test_a_damaged_manifest_is_named(tiny_bundle, gallery, tmp_path, damage, message):
    embed_shard(tiny_bundle, gallery.subset(gallery.ids[:8]), tmp_path, 0, 1, batch_size=8)
    manifest = tmp_path / "shard-00000-of-00001.json"
    manifest.write_text(damage(manifest.read_text()))
    with pytest.raises(ValueError, match=message + ".*rerun the rank that wrote it"):
        merge_shards(tmp_path)


def test_command_line_embeds_on_the_ranks_gpu(monkeypatch):
    """Under torchrun on a GPU machine, rank with LOCAL_RANK=1 must embed on cuda:1, as train_contrastive trains."""
    devices = []

    def record_device(args, device="cpu"):
        devices.append(device)
        raise KeyboardInterrupt  # stop before loading anything

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(embed_shards, "bundle_from_args", record_device)
    with pytest.raises(KeyboardInterrupt):
        main(["--out", "unused", "--rank", "1", "--world-size", "2"])
    assert devices == ["cuda:1"]


def test_command_line_ranks_then_merge(tiny_bundle, small_catalogue, tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save(tiny_bundle.model.state_dict(), weights)
    data = ["--size", json.dumps({"pretrain": 40, "train": 160, "val": 20, "test": 160}), "--split", "test"]
    common = [*data, "--seed", "3", "--weights", str(weights), "--batch-size", "64", "--out", str(tmp_path / "s")]
    for rank in range(2):
        main([*common, "--rank", str(rank), "--world-size", "2"])
    with pytest.raises(ValueError, match="different catalogue.*give --merge the ranks' data options"):
        main(["--merge", *data, "--seed", "4", "--out", str(tmp_path / "s")])  # another catalogue than the ranks'
    main(["--merge", *data, "--seed", "3", "--out", str(tmp_path / "s")])
    merged = torch.load(tmp_path / "s" / "embeddings.pt", weights_only=True)
    test_split = small_catalogue.split("test")
    reference = encode_images(tiny_bundle, test_split, batch_size=64, use_cache=False, progress=False)
    assert torch.equal(merged["embeddings"], reference)
    assert merged["item_ids"] == test_split.ids
    manifest = json.loads(next((tmp_path / "s").glob("shard-*.json")).read_text())
    assert merged["model"] == manifest["model"] and merged["model"].endswith(weights_file_label(weights))
    assert merged["weights_digest"] == manifest["weights_digest"] == weights_digest(tiny_bundle.model)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--merge", "--weights", "other.pt"], "--merge loads no model: the shards' manifests name the model"),
        (["--merge", "--model", "ViT-B-32"], "--merge loads no model"),
        (["--rank", "2", "--world-size", "2"], "--rank 2 is not one of the 2 ranks of --world-size"),
        (["--batch-size", "0"], "argument --batch-size: must be a whole number of at least 1, got '0'"),
        (["--world-size", "0"], "argument --world-size: must be a whole number of at least 1"),
        # numpy's "expected non-negative integer" came out of the catalogue's split
        (["--seed", "-1"], "argument --seed: must be a whole number from 0 to 4294967295, got '-1'"),
    ],
)
def test_command_line_mistakes_are_refused_before_any_model_loads(tmp_path, monkeypatch, capsys, arguments, message):
    """A merge took --weights and ignored it (shards of other weights merged without a word); a rank outside the
    world size or a batch of 0 ended in a traceback after the model had loaded."""
    monkeypatch.setattr(embed_shards, "bundle_from_args", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "s"), *arguments])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("merge", [[], ["--merge"]], ids=["embed", "merge"])
def test_a_catalogue_that_cannot_load_is_one_line_naming_it(tmp_path, merge):
    """The loaders' errors name the dataset and what to do; the command said them in a traceback."""
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(tmp_path / "s"), "--catalogue", "bogus", *merge])
    said = "cannot load the catalogue: " if merge else "cannot load the catalogue and model: "
    assert str(refused.value.code).startswith(f"{said}unknown dataset 'bogus'; choose one of [")
