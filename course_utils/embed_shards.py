"""Embed a catalogue on several processes: each rank encodes its slice into a shard file, a merge joins them
(notebook 08).

One process embeds ~400 tiny-CLIP images per second here; a million product photos through ViT-B-32 take a day.
The standard way out is data parallelism without communication: rank r of N encodes rows ``[start_r, stop_r)``
with :func:`course_utils.embed.encode_images`, writes ``shard-r-of-N.pt`` (the embeddings and their item ids) and
a JSON manifest beside it (rows, batch size, model, catalogue fingerprint, the shard's checksum), and
:func:`merge_shards` checks the manifests and concatenates.
Shard boundaries fall on multiples of ``batch_size``, so every image sits in the same batch as in one process and
the merged embeddings equal the single-process ones bit for bit.

Command line (the rank comes from ``--rank/--world-size`` or from torchrun's ``RANK``/``WORLD_SIZE``; each rank
embeds on ``cuda:<LOCAL_RANK>`` when the machine has GPUs, as ``train_contrastive`` trains)::

    python -m course_utils.embed_shards --catalogue synthetic --size '{"test": 2000}' --split test \\
        --weights tiny.pt --out shards/ --rank 0 --world-size 2
    torchrun --nproc_per_node 2 -m course_utils.embed_shards ... --out shards/
    python -m course_utils.embed_shards --merge --catalogue synthetic --size '{"test": 2000}' --split test \\
        --out shards/

``--merge`` takes the ranks' data options, not their model: it rebuilds that catalogue, checks the shards against it
and against each other, and writes ``embeddings.pt`` as a shard is written, ``{"embeddings": (n, d) float32,
"item_ids": [...], "model": ..., "weights_digest": ...}``, the model and weights named by every shard's manifest.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .cache import file_sha256, torch_save_atomic
from .checks import whole_number
from .cli import add_data_and_model_arguments, bundle_from_args, catalogue_from_args, exit_on_load_errors
from .data.records import Catalogue
from .distributed import process_device
from .embed import encode_images, weights_digest
from .json_files import read_json_object, write_json

MANIFEST_FORMAT = "course_utils.embed_shards/1"
# Manifest fields every shard must share. batch_size is one: it sets the batches each image is encoded in, float32
# results may depend on them, and only equal batches give the single-process embeddings bit for bit.
_MUST_AGREE = ("world_size", "n_items", "dim", "batch_size", "model", "weights_digest", "catalogue_fingerprint")
# Every field embed_shard writes besides "format", with its JSON type; the merge reads them all.
_MANIFEST_FIELDS = {
    **dict.fromkeys(("world_size", "n_items", "dim", "batch_size", "rank", "start", "stop"), int),
    **dict.fromkeys(("model", "weights_digest", "catalogue_fingerprint", "catalogue", "shard", "sha256"), str),
}


def shard_rows(n_items: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``rank``: a contiguous run of whole batches, balanced over ranks."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank must be in [0, world_size) with world_size >= 1; got rank={rank}, world_size={world_size}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_batches = -(-n_items // batch_size)
    first, last = rank * n_batches // world_size, (rank + 1) * n_batches // world_size
    return min(first * batch_size, n_items), min(last * batch_size, n_items)


def _shard_name(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}"


def _read_manifest(path: Path) -> dict:
    """A manifest written by :func:`embed_shard`; an unreadable, foreign or incomplete one raises, naming it."""
    return read_json_object(
        path, "shard manifest", "delete it and rerun the rank that wrote it", MANIFEST_FORMAT, _MANIFEST_FIELDS
    )


def embed_shard(
    bundle,
    catalogue: Catalogue,
    out_dir: str | Path,
    rank: int,
    world_size: int,
    batch_size: int = 256,
    progress: bool = False,
) -> Path:
    """Encode this rank's rows of ``catalogue`` into ``out_dir/shard-r-of-N.pt`` plus its ``.json`` manifest.

    Args:
        bundle: a :class:`~course_utils.models.ClipBundle` (the same weights on every rank).
        catalogue: the whole catalogue, in the same order on every rank.
        out_dir: folder shared by the ranks (a network file system or object store on a cluster).
        rank, world_size: which slice to encode, of how many.
        batch_size: images per forward pass; shard boundaries are multiples of it.
        progress: show a tqdm bar.

    Returns:
        The manifest path. The shard holds ``{"embeddings": (stop - start, d) float32, "item_ids": [...]}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, stop = shard_rows(len(catalogue), batch_size, rank, world_size)
    item_ids = catalogue.ids[start:stop]
    if item_ids:
        part = catalogue.subset(item_ids, name=f"{catalogue.name}[{start}:{stop}]")
        embeddings = encode_images(bundle, part, batch_size=batch_size, use_cache=False, progress=progress)
    else:  # more ranks than batches: an empty shard keeps the manifest set complete
        embeddings = torch.empty(0, bundle.embed_dim)
    shard = out_dir / f"{_shard_name(rank, world_size)}.pt"
    torch_save_atomic({"embeddings": embeddings, "item_ids": item_ids}, shard)
    manifest = shard.with_suffix(".json")
    write_json(
        manifest,
        {
            "format": MANIFEST_FORMAT,
            "rank": rank,
            "world_size": world_size,
            "start": start,
            "stop": stop,
            "n_items": len(catalogue),
            "dim": int(embeddings.shape[1]),
            "batch_size": batch_size,
            "catalogue": catalogue.name,
            "catalogue_fingerprint": catalogue.fingerprint(),
            "model": bundle.identity,
            "weights_digest": weights_digest(bundle.model),
            "shard": shard.name,
            "sha256": file_sha256(shard),
        },
    )
    return manifest


def merge_shards(out_dir: str | Path, catalogue: Catalogue | None = None) -> torch.Tensor:
    """Check the manifests in ``out_dir`` and join the shards into ``(n_items, d)`` embeddings in catalogue order.

    Args:
        out_dir: the folder the ranks wrote to.
        catalogue: when given, the shards must come from this catalogue (same fingerprint and item order).

    Raises:
        FileNotFoundError: no manifest, or a rank's shard is missing (the message names the ranks to rerun).
        ValueError: a manifest that is unreadable, of another format or incomplete (the message names it),
            manifests that disagree (world size, batch size, model, catalogue; the message names each value's
            manifest files), rows that do not tile the catalogue, or a shard whose checksum does not match its
            manifest.
    """
    return _merge(Path(out_dir), catalogue)[0]


def _merge(out_dir: Path, catalogue: Catalogue | None) -> tuple[torch.Tensor, list[str], dict]:
    """:func:`merge_shards`, also returning the ``(n_items,)`` item ids of the rows and the first manifest (its
    ``_MUST_AGREE`` fields, such as the model, are every shard's)."""
    paths = sorted(out_dir.glob("shard-*-of-*.json"))
    manifests = [_read_manifest(p) for p in paths]
    if not manifests:
        raise FileNotFoundError(f"no shard manifests (shard-*-of-*.json) in {out_dir}; run embed_shard on each rank")
    for key in _MUST_AGREE:
        files_by_value: dict[str, list[str]] = {}
        for path, manifest in zip(paths, manifests):
            files_by_value.setdefault(str(manifest[key]), []).append(path.name)
        if len(files_by_value) > 1:
            listing = "; ".join(f"{value}: {', '.join(names)}" for value, names in sorted(files_by_value.items()))
            raise ValueError(
                f"{out_dir}: shard manifests disagree on {key} ({listing}); "
                "delete the stale shards and rerun every rank with the same settings"
            )
    world_size, n_items = manifests[0]["world_size"], manifests[0]["n_items"]
    missing = sorted(set(range(world_size)) - {m["rank"] for m in manifests})
    if missing:
        raise FileNotFoundError(
            f"{out_dir}: shards of ranks {missing} (of {world_size}) are missing; rerun those ranks"
        )
    if catalogue is not None and catalogue.fingerprint() != manifests[0]["catalogue_fingerprint"]:
        raise ValueError(
            f"{out_dir}: the shards were computed from a different catalogue ({manifests[0]['catalogue']!r}, not "
            f"{catalogue.name!r}); re-embed this one (on the command line: give --merge the ranks' data options)"
        )
    manifests.sort(key=lambda m: m["rank"])
    parts, item_ids, expected_start = [], [], 0
    for manifest in manifests:
        if manifest["start"] != expected_start:
            raise ValueError(
                f"{out_dir}: rank {manifest['rank']} starts at row {manifest['start']}, expected "
                f"{expected_start}; the shards do not tile the catalogue"
            )
        shard = out_dir / manifest["shard"]
        if not shard.is_file():
            raise FileNotFoundError(f"{shard} (named by its manifest) is missing; rerun rank {manifest['rank']}")
        if file_sha256(shard) != manifest["sha256"]:
            raise ValueError(
                f"{shard} does not match the checksum in its manifest (corrupt or overwritten); "
                f"rerun rank {manifest['rank']}"
            )
        state = torch.load(shard, weights_only=True)
        parts.append(state["embeddings"])
        item_ids += state["item_ids"]
        expected_start = manifest["stop"]
    if expected_start != n_items:
        raise ValueError(f"{out_dir}: the shards cover rows [0, {expected_start}) of {n_items}")
    if catalogue is not None and item_ids != catalogue.ids:
        raise ValueError(f"{out_dir}: the shards' item ids are not the catalogue's, in order")
    return torch.cat(parts), item_ids, manifests[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Embed one rank's slice of a catalogue, or merge the shards.")
    parser.add_argument("--out", required=True, help="folder of the shards and manifests")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="check the shards against the catalogue the data options name and join them into <out>/embeddings.pt",
    )
    add_data_and_model_arguments(parser)
    parser.add_argument("--batch-size", type=whole_number(1), default=256)
    parser.add_argument("--rank", type=whole_number(0), default=int(os.environ.get("RANK", "0")))
    parser.add_argument("--world-size", type=whole_number(1), default=int(os.environ.get("WORLD_SIZE", "1")))
    args = parser.parse_args(argv)
    if args.merge and (args.weights is not None or args.model != parser.get_default("model")):
        parser.error(
            "--merge loads no model: the shards' manifests name the model and weights they were encoded with (the "
            "merge checks that they agree, and embeddings.pt records them); drop --model and --weights"
        )
    if not args.merge and not 0 <= args.rank < args.world_size:
        parser.error(f"--rank {args.rank} is not one of the {args.world_size} ranks of --world-size (0 to n - 1)")
    if args.merge:
        with exit_on_load_errors("the catalogue"):
            catalogue = catalogue_from_args(args)
        embeddings, item_ids, manifest = _merge(Path(args.out), catalogue)
        torch_save_atomic(
            {
                "embeddings": embeddings,
                "item_ids": item_ids,
                "model": manifest["model"],
                "weights_digest": manifest["weights_digest"],
            },
            Path(args.out) / "embeddings.pt",
        )
        print(
            f"merged {embeddings.shape[0]} x {embeddings.shape[1]} embeddings into {Path(args.out) / 'embeddings.pt'}"
        )
        return
    with exit_on_load_errors("the catalogue and model"):
        bundle, catalogue = bundle_from_args(args, device=process_device()), catalogue_from_args(args)
    manifest = embed_shard(
        bundle,
        catalogue,
        args.out,
        args.rank,
        args.world_size,
        args.batch_size,
    )
    print(f"rank {args.rank}/{args.world_size}: wrote {manifest}")


if __name__ == "__main__":
    main()
