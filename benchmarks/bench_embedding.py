"""Embedding throughput: the batched pipeline (``cu.embed.encode_images``) vs a per-image loop (the seeds' way)
vs pure model-forward time on pre-processed batches, for the tiny CLIP and for ViT-B-32 (random weights:
timing does not depend on the weights). Each model is timed in ``--rounds`` rounds, the three ways in turn within a
round: a shared machine's speed drifts between minutes, so one timing of each way can rank them wrongly, while a ratio
taken within a round compares them under the same conditions.

    python benchmarks/bench_embedding.py [--images 2000] [--vit-images 96] [--batch-size 64] [--workers 0] [--rounds 5]
    python benchmarks/bench_embedding.py --json results/bench/embedding/<time>.json   # keep the run's record
    python benchmarks/bench_embedding.py --readme     # README › Performance › Embedding from the last kept record

Goals (issue 3): pipeline >= 2x the loop, and >= 85 % of pure model-forward throughput.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import course_utils as cu  # noqa: E402
from course_utils import bench_records  # noqa: E402
from course_utils.checks import whole_number  # noqa: E402

RECORDS = bench_records.BENCH_RECORDS / "embedding"
README_MARKERS = ("<!-- bench-embedding:start -->", "<!-- bench-embedding:end -->")
GOALS = {"pipeline / loop": 2.0, "pipeline / forward-only": 0.85}  # issue 3's goals
# What batching alone gains over the loop: the most the pipeline could reach against the loop.
CEILING = "forward-only / loop"
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


def measure(name: str, bundle, catalogue, batch_size: int, workers: int, rounds: int) -> dict:
    """``rounds`` rounds of the three ways in turn (loop, pipeline, forward only), after one warm-up batch.

    A round's three timings lie seconds apart, so a ratio taken within a round compares the ways under the same
    state of a shared machine; the row reports the median throughput of each way and the median, lowest and highest
    of each ratio over the rounds.
    """
    pipeline(bundle, catalogue.subset(catalogue.ids[:batch_size]), batch_size, workers)  # warm-up
    n = len(catalogue)
    seconds = {"loop": [], "pipeline": [], "forward-only": []}
    for _ in range(rounds):
        seconds["loop"].append(per_image_loop(bundle, catalogue))
        seconds["pipeline"].append(pipeline(bundle, catalogue, batch_size, workers))
        seconds["forward-only"].append(model_forward_only(bundle, catalogue, batch_size))
    # "a / b" is a's throughput over b's: b's seconds over a's, round by round
    ratios = {
        f"{way} / {against}": [theirs / ours for ours, theirs in zip(seconds[way], seconds[against])]
        for way, against in [name.split(" / ") for name in [*GOALS, CEILING]]
    }
    return {
        "model": name,
        "images": n,
        "rounds": rounds,
        **{f"{way} img/s": n / statistics.median(values) for way, values in seconds.items()},
        **{ratio: statistics.median(values) for ratio, values in ratios.items()},
        "per round": {ratio: [round(value, 4) for value in values] for ratio, values in ratios.items()},
        "seconds": {way: [round(value, 4) for value in values] for way, values in seconds.items()},
    }


def ratio_cell(row: dict, ratio: str) -> str:
    """``"2.35 (2.10–2.51)"``: the median ratio and, in brackets, its lowest and highest round."""
    per_round = row["per round"][ratio]
    return f"{row[ratio]:.2f} ({min(per_round):.2f}–{max(per_round):.2f})"


def verdict(row: dict, ratio: str, goal: float) -> str:
    """``"pipeline / loop 2.35 (met by the median; in 4 of 5 rounds)"``: the ratio against its goal, and in how
    many rounds it was met."""
    per_round = row["per round"][ratio]
    return (
        f"{ratio} {row[ratio]:.2f} ({'met' if row[ratio] >= goal else 'not met'} by the median; in "
        f"{sum(value >= goal for value in per_round)} of {len(per_round)} rounds)"
    )


def readme_section(runs: list[dict]) -> str:
    """The last kept run: median throughput per model, each ratio with its range over the rounds, and the two
    against issue 3's goals."""
    run = runs[-1]
    columns = ["model", "images", "loop img/s", "pipeline img/s", "forward-only img/s", *GOALS, CEILING]
    rows = [{**row, **{ratio: ratio_cell(row, ratio) for ratio in [*GOALS, CEILING]}} for row in run["rows"]]
    verdicts = "; ".join(
        f"{row['model']}: " + ", ".join(verdict(row, ratio, goal) for ratio, goal in GOALS.items())
        for row in run["rows"]
    )
    rounds = run["rows"][0]["rounds"]
    loop_goal = GOALS["pipeline / loop"]
    bounded = [row["model"] for row in run["rows"] if row[CEILING] < loop_goal]
    bound = (
        f" For {' and '.join(bounded)}, batching alone gains less than {loop_goal:g}× over the loop on this "
        f"machine ({CEILING} below {loop_goal:g} by the median), so the pipeline, which adds the pre-processing to "
        "that forward pass, cannot reach that goal here at this batch size."
        if bounded
        else ""
    )
    return "\n\n".join(
        [
            bench_records.run_heading(run, RECORDS),
            bench_records.markdown_table(
                rows, columns, lambda value, _: f"{value:.2f}" if isinstance(value, float) else str(value)
            ),
            f"torch {run['conditions']['torch']} on {run['conditions']['torch_threads']} threads, batch "
            f"{run['arguments']['batch_size']} (ViT-B-32: {min(run['arguments']['batch_size'], VIT_MAX_BATCH)}), "
            f"{run['arguments']['workers']} loader workers; {rounds} rounds, each timing the three ways in turn: "
            "throughputs are medians, ratios the median of the rounds' ratios (lowest–highest in brackets); "
            f"{CEILING} is what batching alone gains over the loop, the most the pipeline could reach against it. "
            f"Goals: pipeline ≥ {GOALS['pipeline / loop']:g}× the loop and ≥ "
            f"{GOALS['pipeline / forward-only']:.0%} of model-forward throughput — {verdicts}.{bound}",
        ]
    )


def write_readme(check: bool, readme: Path = bench_records.README, folder: Path = RECORDS) -> int:
    """README › Performance › Embedding from the runs kept in ``folder`` (``check``: compare only)."""
    return bench_records.render_readme(Path(__file__).name, folder, README_MARKERS, readme_section, check, readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=whole_number(1), default=2000, help="images for the tiny model")
    parser.add_argument(
        "--vit-images", type=whole_number(1), default=96, help="images for ViT-B-32 (~10 img/s on 2 cores)"
    )
    parser.add_argument("--batch-size", type=whole_number(1), default=64)
    parser.add_argument("--workers", type=whole_number(0), default=0, help="DataLoader workers of the pipeline")
    parser.add_argument(
        "--rounds",
        type=whole_number(1),
        default=5,
        help="rounds, each timing the loop, the pipeline and forward only in turn",
    )
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
            args.rounds,
        ),
        measure(
            "ViT-B-32 (224 px, random init)",
            cu.models.load_clip("ViT-B-32", None),
            catalogue.subset(catalogue.ids[: args.vit_images]),
            min(args.batch_size, VIT_MAX_BATCH),
            args.workers,
            args.rounds,
        ),
    ]
    record = {
        "conditions": conditions.finish(
            torch=torch.__version__, torch_threads=torch.get_num_threads(), device=str(cu.models.resolve_device("auto"))
        ),
        "arguments": bench_records.arguments(args),
        "rows": rows,
    }
    bench_records.keep_then_print(record, args.json, readme_section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
