"""Embedding throughput: the batched pipeline (``cu.embed.encode_images``) vs a per-image loop (the seeds' way)
vs pure model-forward time on pre-processed batches, for the tiny CLIP and for ViT-B-32 (random weights:
timing does not depend on the weights).

    python benchmarks/bench_embedding.py [--images 2000] [--vit-images 96] [--batch-size 64] [--workers 0]

Goals (issue 3): pipeline >= 2x the loop, and >= 85 % of pure model-forward throughput.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import course_utils as cu


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
    cu.embed.encode_images(bundle, catalogue, batch_size=batch_size, num_workers=workers, use_cache=False, progress=False)
    return time.perf_counter() - start


def model_forward_only(bundle, catalogue, batch_size: int) -> float:
    """The floor: model forward on batches that are already pre-processed and stacked."""
    batches = [torch.stack([bundle.preprocess(item.image) for item in catalogue[i : i + batch_size]])
               for i in range(0, len(catalogue), batch_size)]
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
    return {"model": name, "images": n, "loop img/s": n / loop, "pipeline img/s": n / piped,
            "forward-only img/s": n / floor, "pipeline / loop": loop / piped, "pipeline / forward-only": floor / piped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="images for the tiny model")
    parser.add_argument("--vit-images", type=int, default=96, help="images for ViT-B-32 (~10 img/s on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the pipeline")
    args = parser.parse_args()

    torch.manual_seed(0)
    catalogue = cu.data.load_catalogue("synthetic", size="ci").split("pretrain")  # 4,000 images
    if max(args.images, args.vit_images) > len(catalogue):
        parser.error(f"at most {len(catalogue)} images (the ci catalogue's pretrain split)")
    rows = [measure("tiny-fashion-clip (64 px)", cu.models.load_clip("tiny-fashion-clip", None), catalogue.subset(catalogue.ids[: args.images]),
                    args.batch_size, args.workers),
            measure("ViT-B-32 (224 px, random init)", cu.models.load_clip("ViT-B-32", None), catalogue.subset(catalogue.ids[: args.vit_images]),
                    min(args.batch_size, 32), args.workers)]
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, device {rows and cu.models.resolve_device('auto')}")
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
