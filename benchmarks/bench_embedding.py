"""Embedding throughput: the batched pipeline (``cu.embed.encode_images``) vs a per-image loop (the seeds' way)
vs pure model-forward time on pre-processed batches, for the tiny CLIP and for ViT-B-32 (random weights:
timing does not depend on the weights).

    python benchmarks/bench_embedding.py [--images 2000] [--vit-images 96] [--batch-size 64] [--workers 0]
    python benchmarks/bench_embedding.py --json results/bench/embedding/<time>.json   # keep the run's record
    python benchmarks/bench_embedding.py --readme     # README › Performance › Embedding from the last kept record

Goals (issue 3): pipeline >= 2x the loop, and >= 85 % of pure model-forward throughput.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import course_utils as cu  # noqa: E402
from course_utils import bench_records  # noqa: E402

RECORDS = bench_records.BENCH_RECORDS / "embedding"
README_MARKERS = ("<!-- bench-embedding:start -->", "<!-- bench-embedding:end -->")
GOALS = {"pipeline / loop": 2.0, "pipeline / forward-only": 0.85}  # issue 3's goals
VIT_MAX_BATCH = 32  # ViT-B-32 runs in batches of at most this many images


def per_image_loop(bundle, catalogue) -> float:
    """Seeds 001/003: preprocess one image, encode it alone, normalise, repeat."""
    start = time.perf_counter()
    with torch.inference_mode():
        for item in catalogue:
            features = bundle.model.encode_image(bundle.preprocess(item.image)[None].to(bundle.device))
            features / features.norm(dim=-1, keepdim=True)
    return time.perf_counter() - start


def pipeline(bundle, catalogue, batch_size: int, workers: int) -> float:
    start = time.perf_counter()
    cu.embed.encode_images(
        bundle, catalogue, batch_size=batch_size, num_workers=workers, use_cache=False, progress=False
    )
    return time.perf_counter() - start


def model_forward_only(bundle, catalogue, batch_size: int) -> float:
    """The floor: model forward on batches that are already pre-processed and stacked."""
    batches = [
        torch.stack([bundle.preprocess(item.image) for item in catalogue[i : i + batch_size]])
        for i in range(0, len(catalogue), batch_size)
    ]
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            bundle.model.encode_image(batch.to(bundle.device))
    return time.perf_counter() - start


def measure(name: str, bundle, catalogue, batch_size: int, workers: int) -> dict:
    pipeline(bundle, catalogue.subset(catalogue.ids[:batch_size]), batch_size, workers)  # warm-up
    n = len(catalogue)
    loop = per_image_loop(bundle, catalogue)
    piped = pipeline(bundle, catalogue, batch_size, workers)
    floor = model_forward_only(bundle, catalogue, batch_size)
    return {
        "model": name,
        "images": n,
        "loop img/s": n / loop,
        "pipeline img/s": n / piped,
        "forward-only img/s": n / floor,
        "pipeline / loop": loop / piped,
        "pipeline / forward-only": floor / piped,
    }


def readme_section(runs: list[dict]) -> str:
    """The last kept run: throughput per model and each ratio against issue 3's goal."""
    run = runs[-1]
    verdicts = "; ".join(
        f"{row['model']}: "
        + ", ".join(
            f"{name} {row[name]:.2f} ({'met' if row[name] >= goal else 'not met'})" for name, goal in GOALS.items()
        )
        for row in run["rows"]
    )
    return "\n\n".join(
        [
            bench_records.run_heading(run, RECORDS),
            bench_records.markdown_table(
                run["rows"],
                list(run["rows"][0]),
                lambda value, _: f"{value:.2f}" if isinstance(value, float) else str(value),
            ),
            f"torch {run['conditions']['torch']} on {run['conditions']['torch_threads']} threads, batch "
            f"{run['arguments']['batch_size']} (ViT-B-32: {min(run['arguments']['batch_size'], VIT_MAX_BATCH)}), "
            f"{run['arguments']['workers']} loader workers. Goals: pipeline ≥ "
            f"{GOALS['pipeline / loop']:g}× the loop and ≥ {GOALS['pipeline / forward-only']:.0%} of model-forward "
            f"throughput — {verdicts}.",
        ]
    )


def write_readme(check: bool, readme: Path = bench_records.README, folder: Path = RECORDS) -> int:
    """README › Performance › Embedding from the runs kept in ``folder`` (``check``: compare only)."""
    return bench_records.render_readme(Path(__file__).name, folder, README_MARKERS, readme_section, check, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images for the tiny model")
    parser.add_argument("--vit-images", type=int, default=96, help="images for ViT-B-32 (~10 img/s on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the pipeline")
    bench_records.add_record_options(parser, "Performance › Embedding")
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme(args.check)
    conditions = bench_records.RunConditions()

    torch.manual_seed(0)
    catalogue = cu.data.load_catalogue("synthetic", size="ci").split("pretrain")  # 4,000 images
    if max(args.images, args.vit_images) > len(catalogue):
        parser.error(f"at most {len(catalogue)} images (the ci catalogue's pretrain split)")
    rows = [
        measure(
            "tiny-fashion-clip (64 px)",
            cu.models.load_clip("tiny-fashion-clip", None),
            catalogue.subset(catalogue.ids[: args.images]),
            args.batch_size,
            args.workers,
        ),
        measure(
            "ViT-B-32 (224 px, random init)",
            cu.models.load_clip("ViT-B-32", None),
            catalogue.subset(catalogue.ids[: args.vit_images]),
            min(args.batch_size, VIT_MAX_BATCH),
            args.workers,
        ),
    ]
    record = {
        "conditions": conditions.finish(
            torch=torch.__version__, torch_threads=torch.get_num_threads(), device=str(cu.models.resolve_device("auto"))
        ),
        "arguments": bench_records.arguments(args),
        "rows": rows,
    }
    print(readme_section([record]))
    bench_records.keep(record, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
