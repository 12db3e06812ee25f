"""The README's findings, generated from committed records: ``python -m course_utils.findings [--profile real]``.

``make run`` writes each notebook's record to ``outputs/results/<notebook>.json``; ``make records`` copies the
full-profile ones to ``results/full/`` (committed, a few kB each). This module renders one bullet per notebook from
those records and writes them between the markers ``<!-- findings:start -->`` and ``<!-- findings:end -->`` of
``README.md``; ``--check`` only compares and exits 1 when the README and the records disagree
(``tests/test_findings.py`` runs it), so no hand-typed number can drift from the run that produced it.
``--profile real`` does the same for the real-photo profile's records (``results/real/``, markers
``findings-real``). ``--records DIR --readme FILE`` renders the same bullets from another folder of records into
another file with the same markers (``results/other-hosts/<host>-<profile>/FINDINGS.md``: a profile's records rerun
on another host); ``--hosts`` renders README › Reproducibility's table that sets each such folder against the
committed records (markers ``hosts``). ``update_readme`` serves any README section rendered from records: the
benchmarks' ``--readme`` use it too, through ``course_utils.bench_records``.

Records made with ``--seeds`` (``make run SEEDS=0,1,2``) carry each metric under every seed: the bullets then give
mean ± std over the seeds, and each comparison the course draws is rendered with its verdict — a *finding* only
when the difference has the same sign under every seed and is larger than its standard deviation over them.
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import NamedTuple

from .metrics import signed, without_negative_zero
from .paths import REPO_ROOT
from .results import (
    NOTEBOOK_RECORD_KEYS,
    cpu_generation,
    is_timing_metric,
    load_record,
    markdown_table_text,
    parse_timing_key,
    same_metric_value,
)

RECORDS = REPO_ROOT / "results" / "full"
README = REPO_ROOT / "README.md"
START, END = "<!-- findings:start -->", "<!-- findings:end -->"
# Each profile's records and the README section they fill: the embedded course (full) and real photos (real).
SECTIONS = {
    "full": (RECORDS, START, END),
    "real": (REPO_ROOT / "results" / "real", "<!-- findings-real:start -->", "<!-- findings-real:end -->"),
}
# The make targets that run each profile's notebooks and copy their records into its folder of SECTIONS.
MAKE_TARGETS = {"full": ("make run", "make records"), "real": ("make run-real", "make records-real")}
# Reruns of a profile's experiments on other hosts: one folder of records each, named <maker>-<generation>-<profile>
# (README › Reproducibility's table compares each with the committed records of its profile).
OTHER_HOSTS = REPO_ROOT / "results" / "other-hosts"
HOSTS_START, HOSTS_END = "<!-- hosts:start -->", "<!-- hosts:end -->"
# While verdicts() renders, compare() notes each comparison's verdict here.
_verdicts_drawn: ContextVar[dict | None] = ContextVar("verdicts_drawn", default=None)


def remake_records(profile: str) -> str:
    """``"`make run` then `make records`"``: how ``profile``'s committed records are made again."""
    run, records = MAKE_TARGETS[profile]
    return f"`{run}` then `{records}`"


def read_records(folder: Path, profile: str = "full") -> dict[str, dict]:
    """``{notebook number: record}`` of ``folder/NN_*.json``; ``SystemExit`` for a record of another profile."""
    records = {}
    for path in sorted(folder.glob("[0-9][0-9]_*.json")):
        record = load_record(path, remake_records(profile), NOTEBOOK_RECORD_KEYS)
        found = record.get("parameters", {}).get("profile")
        if found != profile:
            raise SystemExit(
                f"{path}: a record of the {found!r} profile, expected {profile!r}; rerun {remake_records(profile)}"
            )
        records[path.name[:2]] = record
    if not records:
        raise SystemExit(f"no records NN_*.json in {folder}; run {remake_records(profile)}")
    return records


class Spread(float):
    """A metric's mean over seeds that formats as ``mean ± std`` (``format(x, ".3f")`` -> ``"0.745 ± 0.012"``).

    Without a format spec (counts such as the number of queries) both are rounded to whole numbers.
    """

    def __new__(cls, mean: float, std: float) -> Spread:
        spread = super().__new__(cls, mean)
        spread.std = std
        return spread

    def __format__(self, spec: str) -> str:
        spec = spec or ".0f"
        return f"{without_negative_zero(float(self), spec)} ± {format(self.std, spec.replace('+', ''))}"

    def __mul__(self, factor: float) -> Spread:
        return Spread(float(self) * factor, self.std * abs(factor))

    __rmul__ = __mul__


def not_over_seeds(record: dict, name: str) -> SystemExit:
    """The error for a metric that is missing or NaN under some of the record's seeds (``not_aggregated``)."""
    return SystemExit(
        f"{record['notebook']}: {name} is missing or not a number (NaN) under some of seeds "
        f"{record['seeds']['seeds']}, so it has no mean and spread over them; find why in that seed's executed "
        "notebook, then rerun the notebook under every seed"
    )


class NotOverSeeds:
    """A metric of ``not_aggregated``: formatting it (or its multiple) raises :func:`not_over_seeds`, as
    :func:`compare` does for its difference; a bullet that does not show it still renders."""

    def __init__(self, error: SystemExit):
        self.error = error

    def __format__(self, spec: str) -> str:
        raise self.error

    def __float__(self) -> float:
        raise self.error

    def __mul__(self, factor: float) -> NotOverSeeds:
        return self

    __rmul__ = __mul__


def numbers(record: dict) -> dict:
    """The record's metrics; with a ``seeds`` section, each metric that varies over seeds as its :class:`Spread`,
    and each one that is not a number under every seed as :class:`NotOverSeeds` (the first seed's value alone would
    read as every seed's)."""
    seeds = record.get("seeds") or {}
    varying = {name for name, std in seeds.get("std", {}).items() if std > 0}
    missing = set(seeds.get("not_aggregated", []))
    return {
        name: Spread(seeds["mean"][name], seeds["std"][name])
        if name in varying
        else NotOverSeeds(not_over_seeds(record, name))
        if name in missing
        else value
        for name, value in record["metrics"].items()
    }


def compare(
    record: dict, higher: str, lower: str | None = None, scale: float = 1.0, digits: int = 3, unit: str = ""
) -> str:
    """The difference ``higher - lower`` (or ``higher`` alone) over the record's seeds, with its verdict.

    A finding needs the same sign under every seed and a mean larger than the standard deviation over seeds, both
    as printed (rounded to ``digits``); a seed where the two are equal (a difference of exactly 0) has neither
    sign, and the verdict says so.

    Raises:
        SystemExit: ``higher`` or ``lower`` is not a number under every seed (the record's ``not_aggregated``).
    """
    seeds = record.get("seeds")
    if not seeds:
        metrics = record["metrics"]
        difference = scale * (metrics[higher] - (metrics[lower] if lower else 0.0))
        return f"{signed(difference, digits)}{unit}, one seed: not yet checked against the spread over seeds"
    values = seeds["values"]
    for name in (higher, lower):
        if name in seeds.get("not_aggregated", []):
            raise not_over_seeds(record, name)
    differences = [scale * (a - (values[lower][i] if lower else 0.0)) for i, a in enumerate(values[higher])]
    mean, std, n = statistics.fmean(differences), statistics.stdev(differences), len(differences)
    higher_in, lower_in = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    equal_in = n - higher_in - lower_in
    if n in (higher_in, lower_in):
        direction = "higher" if higher_in == n else "lower"
        # judged on the numbers as printed, so a finding never reads "+0.003 ± 0.003"
        beyond = abs(round(mean, digits)) > round(std, digits)
        spread = "by more than the spread: a finding" if beyond else "but within the spread: not a finding"
        verdict = f"{direction} under all {n} seeds {spread}"
    elif equal_in == n:
        verdict = f"equal under all {n} seeds: not a finding"
    else:
        counted = f"higher under {higher_in}" if higher_in else f"lower under {lower_in}"
        # seeds going both ways decide the verdict alone; without them, the equal seeds are why it is no finding
        ties = f", equal under {equal_in}" if equal_in and not (higher_in and lower_in) else ""
        verdict = f"{counted} of {n} seeds{ties}: not a finding"
    drawn = _verdicts_drawn.get()
    if drawn is not None:
        drawn[higher, lower] = verdict.endswith(": a finding")
    return f"{signed(mean, digits)} ± {std:.{digits}f}{unit}, {verdict}"


def verdicts(records: dict[str, dict], profile: str = "full") -> dict[tuple[str, str | None], bool]:
    """``{(higher, lower): is it a finding}`` for every comparison over seeds that the findings draw from
    ``records`` (``{notebook number: record}``), noted as the bullets render, so the list is the bullets' own."""
    drawn: dict[tuple[str, str | None], bool] = {}
    token = _verdicts_drawn.set(drawn)
    try:
        render_findings(records, profile)
    finally:
        _verdicts_drawn.reset(token)
    return drawn


def _01(r: dict) -> str:
    m = numbers(r)
    return (
        f"**01 — zero-shot retrieval and chance.** On {m['gallery_size']} test items, text→image R@1 / R@10 "
        f"{m['t2i_full_R@1']:.3f} / {m['t2i_full_R@10']:.3f} (chance {m['t2i_full_chance_R@1']:.4f} / "
        f"{m['t2i_full_chance_R@10']:.3f}); the same embeddings score R@1 {m['t2i_inbatch_R@1']:.3f} in "
        f"batches of 32 (chance {m['t2i_inbatch_chance_R@1']:.3f}; in-batch minus full-gallery R@1: "
        f"{compare(r, 't2i_inbatch_R@1', 't2i_full_R@1')}). Attribute-match R@10 (same category and colour) "
        f"{m['t2i_attribute_match_model_R@10']:.3f} against exact-item {m['t2i_exact_model_R@10']:.3f}"
        + (
            f"; any item with the query's caption counted as a hit, {m['t2i_same_caption_model_R@10']:.3f}"
            if "t2i_same_caption_model_R@10" in m
            else ""
        )
        + "."
        + (
            f" {m['t2i_train_caption_queries']} of the test queries are word for word a train caption: exact-item "
            f"R@10 {m['t2i_train_caption_R@10']:.3f} on those, {m['t2i_not_train_caption_R@10']:.3f} on the others."
            if "t2i_not_train_caption_R@10" in m
            else ""
        )
    )


def _02(r: dict) -> str:
    m = numbers(r)
    return (
        f"**02 — fine-tuning.** Text→image R@10: zero-shot {m['zero_shot_t2i_R@10']:.3f}, full fine-tuning "
        f"{m['full_finetune_t2i_R@10']:.3f} ({m['full_finetune_steps']} steps), seed 000's two-stage recipe "
        f"{m['two_stage_t2i_R@10']:.3f} ({m['two_stage_head_steps']} head + {m['two_stage_backbone_steps']} "
        f"backbone steps), head only {m['head_only_t2i_R@10']:.3f}; chance {m['chance_t2i_R@10']:.4f}. "
        f"Full fine-tuning minus zero-shot: {compare(r, 'full_finetune_t2i_R@10', 'zero_shot_t2i_R@10')}; "
        f"two-stage minus full fine-tuning: {compare(r, 'two_stage_t2i_R@10', 'full_finetune_t2i_R@10')}."
    )


def _03(r: dict) -> str:
    m = numbers(r)
    return (
        f"**03 — cross-attention re-ranking.** Re-ranking the fine-tuned dual encoder's top-K moves R@1 "
        f"{m['dual/R@1']:.3f} → {m['rerank/R@1']:.3f} ({compare(r, 'rerank/R@1', 'dual/R@1')}; "
        f"{without_negative_zero(100 * m['rerank/R@1_relative_gain'], '+.0f')} % relative) and R@10 "
        f"{m['dual/R@10']:.3f} → {m['rerank/R@10']:.3f}; seed 002's pooled-vector transformer, same budget, "
        f"R@1 {m['seed002_rerank/R@1']:.3f} "
        f"({compare(r, 'seed002_rerank/R@1', 'dual/R@1', unit=' over the dual encoder')}). Latency per query: "
        f"{m['latency_ms/dual']:.1f} ms dual, {m['latency_ms/rerank']:.1f} ms re-ranked, "
        f"{m['latency_ms/full_gallery_cross_encoder']:.0f} ms for the cross-encoder over the whole gallery."
        + _label_rerank(
            r,
            "label_rerank",
            "Re-ranking with the catalogue's labels instead (no pixels: the "
            "query's words against each candidate's labels)",
        )
        + _label_rerank(
            r,
            "photo_label_rerank",
            "The same labels guessed from the photos (the vote of the "
            "nearest train photos in the dual encoder's image space)",
        )
        + _label_rerank(
            r,
            "photo_label_soft_rerank",
            "The same vote kept soft (each value weighted by its share of the vote) instead of one hard guess per "
            "label",
            against=("photo_label_rerank", "the hard guesses"),
        )
    )


def _label_rerank(r: dict, key: str, what: str, against: tuple[str, str] | None = None) -> str:
    """A sentence on one of notebook 03's label re-rankers (``key``: its metrics' prefix), or "" when the record
    predates it; ``against``: another re-ranker's prefix and name, whose R@1 it is also compared with."""
    m = numbers(r)
    if f"{key}/R@1" not in m:
        return ""
    other = "" if against is None else f"; against {against[1]}: {compare(r, f'{key}/R@1', f'{against[0]}/R@1')}"
    return (
        f" {what}: R@1 {m[f'{key}/R@1']:.3f} ({compare(r, f'{key}/R@1', 'dual/R@1')}; "
        f"{without_negative_zero(100 * m[f'{key}/R@1_relative_gain'], '+.0f')} % relative{other})."
    )


def _04(r: dict) -> str:
    m = numbers(r)
    return (
        f"**04 — what pretraining buys.** Text→image R@10: random inits {m['random_init_t2i_R@10']:.3f} "
        f"(open_clip) and {m['normal_init_t2i_R@10']:.3f} (seed 002's N(0, 0.02); chance "
        f"{m['chance_t2i_R@10']:.3f}); after the same {m['training_steps']} steps, from scratch "
        f"{m['scratch_t2i_R@10']:.3f} against {m['finetuned_t2i_R@10']:.3f} pretrained + fine-tuned "
        f"(zero-shot {m['zero_shot_t2i_R@10']:.3f}). Pretrained + fine-tuned minus from scratch: "
        f"{compare(r, 'finetuned_t2i_R@10', 'scratch_t2i_R@10')}; from scratch minus zero-shot: "
        f"{compare(r, 'scratch_t2i_R@10', 'zero_shot_t2i_R@10')}."
    )


def _05(r: dict) -> str:
    m = numbers(r)
    names = {
        "global_clip": "global CLIP",
        "crl_projection": "CRL projection (no training)",
        "crl_stage1": "CRL stage 1",
        "crl_stage2": "CRL stage 2",
        "asen_style": "ASEN-style head",
    }
    rows = [f"{label} {100 * m[f'map/{key}/overall']:.1f}" for key, label in names.items() if f"map/{key}/overall" in m]
    verdicts = [
        f"{label} minus {before}: {compare(r, f'map/{key}/overall', f'map/{base}/overall', 100, 1)}"
        for key, label, base, before in [
            ("crl_stage1", "CRL stage 1", "global_clip", "global CLIP"),
            ("crl_stage2", "stage 2", "crl_stage1", "stage 1"),
        ]
        if f"map/{key}/overall" in m and f"map/{base}/overall" in m
    ]
    return f"**05 — conditional embeddings** (ASEN protocol, overall mAP %): {', '.join(rows)}. {'; '.join(verdicts)}."


LEAK = "target caption (seed 004's test; leaks the answer)"
#: Notebook 06's learned compositors, in its order (its RECIPES).
COMPLEX_ROTATION = "ComplexRotation (ComposeAE)"
LEARNED_COMPOSITORS = ("concat + MLP", "TIRG", COMPLEX_ROTATION, "Combiner (CLIP4Cir)")


def _06(r: dict) -> str:
    m = numbers(r)
    rows = [f"{name} {100 * m[f'{name}/R@10']:.1f}" for name in ["sum", *LEARNED_COMPOSITORS] if f"{name}/R@10" in m]
    points = {"scale": 100, "digits": 1, "unit": " points"}
    test_best = compare(r, "best_minus_sum_R@10", **points)
    if "picked_minus_sum_R@10" in m:  # records since 2026-12-07: the compositor kept is picked on val triplets
        margin = (
            f"the learned compositor kept (picked on the val triplets, {m['n_val_queries']} queries) minus sum: "
            f"{compare(r, 'picked_minus_sum_R@10', **points)}; the test queries' own best minus sum, which a pick "
            f"on them would report: {test_best}"
        )
    else:
        margin = (
            "best learned minus sum (the best picked on these test queries under each seed, so the margin leans "
            f"optimistic; these records predate the pick on val triplets): {test_best}"
        )

    def loss_swap(compositor: str, higher: str, lower: str) -> str:
        """Notebook 06's loss ablation: ``compositor`` trained with loss ``higher`` minus with ``lower`` (R@10)."""
        return compare(r, f"ablation/{compositor} + {higher}/R@10", f"ablation/{compositor} + {lower}/R@10", **points)

    losses = (
        " Swapping the loss: ComplexRotation with ComposeAE's classification loss minus with the soft triplet loss: "
        f"{loss_swap(COMPLEX_ROTATION, 'classification', 'soft_triplet (main recipe)')}; TIRG with its main recipe, "
        f"the classification loss, minus with the soft triplet loss: "
        f"{loss_swap('TIRG', 'classification (main recipe)', 'soft_triplet')}."
    )
    new_value_only = (  # records since 2026-12-07: notebook 06's sum fed only the value the text asks for
        f' The sum fed only the new value ("blue" of "replace red with blue") scores '
        f"{100 * m['sum, new value only/R@10']:.1f}; the learned compositor kept minus it: "
        f"{compare(r, 'picked_minus_sum_new_value_only_R@10', **points)}."
        if "sum, new value only/R@10" in m
        else ""
    )
    return (
        f"**06 — composed retrieval** (R@10 %, reference excluded, {m['n_queries']} queries): "
        f"{', '.join(rows)} (ComplexRotation trained with seed 004's soft triplet loss; ComposeAE used the "
        f"classification loss on Fashion200k); {margin}.{new_value_only}{losses} Seed 004's protocol, the target's "
        f"own caption as the query, scores {100 * m[LEAK + '/R@10']:.1f}: it leaks the answer."
    )


def _07(r: dict) -> str:
    m = numbers(r)
    kinds = ["text", "image", "upload", "conditional", "composed"]
    rows = [f"{kind} {m[f'median_ms_{kind}']:.0f} ms" for kind in kinds if f"median_ms_{kind}" in m]
    return f"**07 — the demo** ({m['gallery_size']}-item gallery), median latency per query: {', '.join(rows)}."


def column_span(table: dict, column: str) -> str:
    """``"207–287"``: the smallest and largest value of one column of a record's table (rounded to whole units)."""
    values = [row[table["columns"].index(column)] for row in table["rows"]]
    low, high = min(values), max(values)
    return f"{low:.0f}" if round(low) == round(high) else f"{low:.0f}–{high:.0f}"


def _08(r: dict) -> str:
    m, p, milvus = numbers(r), r["parameters"], r["tables"]["milvus"]
    # Records written before 2026-12-06 lack the same-steps speed of 1 process and the setting served.
    same_steps = (
        f" ({m['train_images_per_s_1proc_half']:.0f} over the steps the {m['processes']} processes ran, with the "
        "same checkpoint write)"
        if "train_images_per_s_1proc_half" in m
        else ""
    )
    served = (
        f"; the notebook serves nprobe {m['ondisk_served_nprobe']}, the fastest setting within "
        f"{p['recall_tolerance']:g} of that recall: {m['ondisk_served_recall']:.3f} at "
        f"{m['ondisk_served_median_ms']:.2f} ms"
        if "ondisk_served_nprobe" in m
        else ""
    )
    return (
        f"**08 — scaling out** ({m['catalogue_size']}-item catalogue, {m['processes']} gloo processes on the CPU). "
        f"Training: {m['processes']} processes resuming a 1-process checkpoint end {m['weight_max_abs_diff']:.1e} "
        f"(largest weight difference) from the 1-process run, which training moved by {m['weights_moved']:.1e}; "
        f"{m['train_images_per_s_1proc']:.0f} images/s in 1 process{same_steps}, "
        f"{m['train_images_per_s_resumed']:.0f} in "
        f"{m['processes']}. Embedding: the {m['processes']}-rank job's merged shards are "
        f"{'bit-identical' if m['embed_identical'] else 'not identical'} to one process's "
        f"({m['embed_sharded_job_s']:.0f} s for the job, start-up included, against {m['embed_single_s']:.0f} s in "
        f"the kernel). Milvus Lite: top-{p['top_k']} identical to exact search's for "
        f"{100 * m['milvus_topk_agreement']:.0f} % of {p['n_queries']} queries × {len(milvus['rows'])} searches "
        f"(unfiltered and filtered by {p['filter_attribute']}), for "
        f"{100 * m['milvus_reopen_agreement']:.0f} % after closing and reopening (writing the collection "
        f"{m['milvus_build_s']:.1f} s, reopening {m['milvus_reopen_s']:.1f} s); median "
        f"{column_span(milvus, 'Milvus ms')} ms per query against {column_span(milvus, 'exact (numpy) ms')} ms for "
        f"exact search in numpy. On-disk IVF-PQ over {m['ondisk_vectors']:,} vectors: "
        f"{m['ondisk_lists_mb']:.0f} MB of lists, built in {m['ondisk_build_s']:.0f} s, "
        f"recall@{p['top_k']} {m['ondisk_best_recall']:.3f} at "
        f"nprobe {m['ondisk_best_nprobe']} with {p['rerank']} candidates re-ranked, "
        f"{m['ondisk_best_median_ms']:.2f} ms per query (median){served}. The notebook took {m['runtime_s']:.0f} s."
    )


BULLETS: dict[str, Callable[[dict], str]] = {
    "01": _01,
    "02": _02,
    "03": _03,
    "04": _04,
    "05": _05,
    "06": _06,
    "07": _07,
    "08": _08,
}


def shown(path: Path) -> str:
    """``path`` as the README names it: relative to the repository where it lies inside it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def regenerate_command(profile: str, folder: Path, readme: Path = README) -> str:
    """The command that renders ``profile``'s findings from the records in ``folder`` into ``readme`` (its options
    only where they differ from the defaults)."""
    return (
        "python -m course_utils.findings"
        + (f" --profile {profile}" if profile != "full" else "")
        + (f" --records {shown(folder)}" if folder != SECTIONS[profile][0] else "")
        + (f" --readme {shown(readme)}" if readme != README else "")
    )


def bullet(number: str, record: dict, folder: Path, profile: str) -> str:
    """Notebook ``number``'s bullet rendered from its ``record`` (read from ``folder``).

    Raises:
        SystemExit: the record lacks a metric (or parameter, or table) the bullet needs — a record older than its
            notebook — or holds null (NaN) where the bullet needs a number; the message names the record's file,
            what is wrong and how to make it again.
    """
    path = folder / f"{record.get('notebook', number)}.json"
    try:
        return BULLETS[number](record)
    except KeyError as err:
        raise SystemExit(
            f"{path} lacks {err.args[0]!r}, which the findings' {number} bullet needs (a record older than its "
            f"notebook?); run notebook {number} again: {remake_records(profile)}"
        ) from None
    except TypeError:  # a number format applied to null: the notebook recorded NaN
        empty = sorted(name for name, value in record.get("metrics", {}).items() if value is None)
        raise SystemExit(
            f"{path}: the findings' {number} bullet needs numbers, but {empty} are null (NaN in the run); find why "
            f"in that run's executed notebook {number}, then {remake_records(profile)}"
        ) from None


def render_findings(
    records: dict[str, dict],
    profile: str = "full",
    timings: dict[str, float] | None = None,
    folder: Path | None = None,
    readme: Path = README,
) -> str:
    """The findings section's body: one bullet per notebook that has a record and a template, in order, then the
    run's runtimes when its ``timings`` are given. ``folder`` (default: the profile's ``results/<profile>/``) and
    ``readme`` name where the records came from and where the section goes, for the line that says so."""
    folder = folder or SECTIONS[profile][0]
    bullets = [
        f"- {bullet(number, record, folder, profile)}"
        for number, record in sorted(records.items())
        if number in BULLETS
    ]
    seeds = sorted({seed for record in records.values() for seed in record_seeds(record)})
    first_only = [number for number, record in sorted(records.items()) if number in BULLETS and not record.get("seeds")]
    only_first = f" ({', '.join(first_only)} under the first seed only)" if first_only else ""
    spread = (
        f"mean ± standard deviation over the seeds{only_first}; a difference is called a finding only when it "
        "has the same sign under every seed and exceeds its standard deviation, both as printed"
        if len(seeds) > 1
        else "one seed: differences smaller than the spread over seeds are not findings"
    )
    hosts = processors_by_notebook(records)
    return (
        f"Generated by `{regenerate_command(profile, folder, readme)}` "
        f"from the {profile}-profile records in `{shown(folder)}/` "
        f"(seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}; {spread})."
        + (f" The records were written on more than one processor: {hosts}." if hosts else "")
        + "\n\n"
        + "\n".join(bullets)
        + (f"\n\n{render_runtimes(timings)}" if timings else "")
    )


def render_runtimes(timings: dict[str, float]) -> str:
    """One line from a run's ``timings-<profile>.json``: papermill seconds per notebook and the total.

    A run with ``--seeds`` also times each further seed's run (:func:`course_utils.results.timing_key`): given beside
    the first's, as ``01 833 s (seed 1: 790 s)``."""
    runs: dict[str, list[str]] = {}
    for key, seconds in timings.items():
        stem, seed = parse_timing_key(key)
        runs.setdefault(stem[:2], []).append(("" if seed is None else f"seed {seed}: ") + f"{seconds:.0f} s")
    notebooks = ", ".join(
        f"{number} {first}" + (f" ({', '.join(further)})" if further else "")
        for number, (first, *further) in runs.items()
    )
    return (
        f"Runtime of the runs that wrote them (papermill wall time per notebook, kernel start included): {notebooks}; "
        f"{sum(timings.values()) / 60:.1f} min in all."
    )


def record_seeds(record: dict) -> list:
    """The seeds a record holds: all of a record made with ``--seeds``, else its one ``seed`` parameter."""
    return (record.get("seeds") or {}).get("seeds", [record["parameters"].get("seed")])


def values_by_seed(record: dict) -> dict[str, dict[int, object]]:
    """``{metric: {seed: value}}``: a record made with ``--seeds`` under each of its seeds, another under its one."""
    seeds = record.get("seeds")
    if seeds:
        return {name: dict(zip(seeds["seeds"], values)) for name, values in seeds["values"].items()}
    return {name: {seed: value for seed in record_seeds(record)} for name, value in record["metrics"].items()}


# Metrics on the 0-1 scale of retrieval quality (recalls, mAP): the ones whose largest move the hosts' table gives.
RETRIEVAL_QUALITY = re.compile(r"(R@\d+|recall)$|^map/")


class Moved(NamedTuple):
    """How one notebook's values on another host compare with the committed ones."""

    differ: int  # values that differ
    compared: int  # values compared
    largest: tuple[float, str, int, float, float] | None  # (|difference|, metric, seed, committed, rerun) of a recall


def moved_values(reference: dict[str, dict], rerun: dict[str, dict]) -> dict[str, Moved]:
    """``{notebook number: Moved}`` between two folders' records: every metric but the timings
    (:func:`course_utils.results.is_timing_metric`), under every seed that both records hold, of every notebook that
    both folders hold; ``largest``: the largest difference of a recall or mAP (:data:`RETRIEVAL_QUALITY`)."""
    moved = {}
    for number in sorted(reference.keys() & rerun.keys()):
        here, there = values_by_seed(reference[number]), values_by_seed(rerun[number])
        pairs = [
            (name, seed, here[name][seed], there[name][seed])
            for name in sorted(here.keys() & there.keys())
            if not is_timing_metric(name)
            for seed in sorted(here[name].keys() & there[name].keys())
        ]
        differing = [pair for pair in pairs if not same_metric_value(*pair[2:])]
        quality = [
            (abs(b - a), name, seed, a, b)
            for name, seed, a, b in differing
            if RETRIEVAL_QUALITY.search(name) and isinstance(a, float) and isinstance(b, float)
        ]
        moved[number] = Moved(len(differing), len(pairs), max(quality, default=None))
    return moved


def processor(record: dict) -> str:
    """``"Intel(R) Xeon(R) Processor, family 6 model 167, avx512f"``: the processor a record's ``environment``
    names."""
    env = record.get("environment", {})
    return ", ".join(part for part in (env.get("cpu", "processor not recorded"), cpu_generation(env)) if part)


def processors(records: dict[str, dict]) -> str:
    """The processor the records name (several joined by " / ")."""
    return " / ".join(sorted({processor(record) for record in records.values()}))


def processors_by_notebook(records: dict[str, dict]) -> str:
    """``"01, 02: AMD EPYC, …; 08: Intel(R) Xeon(R) Processor, …"`` when the records name more than one processor
    (a notebook rerun alone on another host), else ``""``."""
    notebooks: dict[str, list[str]] = {}
    for number, record in sorted(records.items()):
        notebooks.setdefault(processor(record), []).append(number)
    if len(notebooks) < 2:
        return ""
    return "; ".join(f"{', '.join(numbers)}: {name}" for name, numbers in notebooks.items())


def seeds_run(records: dict[str, dict]) -> str:
    """``"0, 1, 2 (07, 08: 0)"``: the seeds most of the notebooks ran under, and those of the others."""
    by_notebook = {number: ", ".join(map(str, record_seeds(record))) for number, record in sorted(records.items())}
    common = max(by_notebook.values(), key=list(by_notebook.values()).count)
    others: dict[str, list[str]] = {}
    for number, seeds in by_notebook.items():
        if seeds != common:
            others.setdefault(seeds, []).append(number)
    groups = "; ".join(f"{', '.join(numbers)}: {seeds}" for seeds, numbers in others.items())
    return common + (f" ({groups})" if groups else "")


def comparison_name(pair: tuple[str, str | None]) -> str:
    higher, lower = pair
    return f"`{higher}`" + (f" over `{lower}`" if lower else "")


def host_row(
    folder: Path, records: dict[str, dict], drawn: dict, profile: str, committed: tuple[dict, dict] | None = None
) -> list[str]:
    """A row of :func:`render_hosts`: the ``records`` read from ``folder``, with their :func:`verdicts` ``drawn``,
    set against the ``committed`` ones of their profile, given with theirs (``None``: they are the committed
    records)."""
    row = [f"`{shown(folder)}/`", profile, processors(records), seeds_run(records)]
    if committed is None:
        return [*row, "(the committed records)", f"{len(drawn)} comparisons, {sum(drawn.values())} of them findings"]
    committed_records, reference = committed
    moved = moved_values(committed_records, records)
    exact = [number for number, found in moved.items() if found.differ == 0]
    values = "; ".join(
        ([f"{', '.join(exact)}: none"] if exact else [])
        + [f"{number}: {found.differ} of {found.compared}" for number, found in moved.items() if found.differ]
    )
    largest = max((found.largest + (number,) for number, found in moved.items() if found.largest), default=None)
    if largest:
        _, name, seed, before, after, number = largest
        values += (
            f". Largest move of a recall or mAP: {number}'s `{name}` under seed {seed}, {before:.3f} → {after:.3f}"
        )
    shared = sorted(reference.keys() & drawn.keys(), key=str)
    differing = [
        f"{comparison_name(pair)} ({'a finding' if drawn[pair] else 'not a finding'} here, "
        f"{'one' if reference[pair] else 'not one'} on the committed records)"
        for pair in shared
        if reference[pair] != drawn[pair]
    ]
    same = f"{len(shared) - len(differing)} of {len(shared)} the same"
    return [*row, values, same + (f"; {'; '.join(differing)}" if differing else "")]


def render_hosts(other_hosts: Path = OTHER_HOSTS) -> str:
    """README › Reproducibility's table: for each profile, its committed records, then each rerun of them on another
    host (``other_hosts/<name>-<profile>/``): which values came out equal, and which verdicts of the findings."""
    rows = []
    for profile, (folder, _, _) in SECTIONS.items():
        committed = read_records(folder, profile)
        reference = (committed, verdicts(committed, profile))
        rows.append(host_row(folder, committed, reference[1], profile))
        for other in sorted(other_hosts.glob(f"*-{profile}")):
            records = read_records(other, profile)
            rows.append(host_row(other, records, verdicts(records, profile), profile, reference))
    columns = [
        "records",
        "profile",
        "processor",
        "seeds",
        "metric values unlike the committed ones', by notebook (seed by seed; timings left out)",
        "verdicts of the findings",
    ]
    return (
        f"Generated by `python -m course_utils.findings --hosts` from the records in `{shown(other_hosts)}/` and "
        f"{' and '.join(f'`{shown(folder)}/`' for folder, _, _ in SECTIONS.values())}.\n\n"
        + markdown_table_text(columns, rows)
    )


def replace_section(text: str, body: str, start: str = START, end: str = END, document: str = "README") -> str:
    """``text`` with everything between the ``start`` and ``end`` marker lines replaced by ``body``.

    The markers count only as lines of their own, so prose that quotes them (as the README's does) is left alone.
    ``document`` names ``text``'s file in the error raised when it lacks the markers.
    """
    section = re.search(rf"^{re.escape(start)}\n.*?^{re.escape(end)}$", text, flags=re.M | re.S)
    if section is None:
        raise SystemExit(
            f"{document} has no {start} ... {end} lines around the section rendered between them; add them, each on a "
            "line of its own, where the section belongs"
        )
    return f"{text[: section.start()]}{start}\n{body}\n{end}{text[section.end() :]}"


def update_readme(readme: Path, body: str, start: str, end: str, check: bool, source: Path, command: str) -> int:
    """Write ``body`` between the ``start`` and ``end`` lines of ``readme`` (rendered from ``source``); with
    ``check`` only compare, and return 1 when the README differs (``command`` is what renders it)."""
    if not readme.is_file():
        raise SystemExit(f"{readme}: no such file to render the section into; name an existing file holding {start}")
    current = readme.read_text()
    updated = replace_section(current, body, start, end, shown(readme))
    if check:
        if updated != current:
            print(f"{readme}: the section between {start} and {end} differs from {source}; run {command}")
            return 1
        print(f"{readme} agrees with {source}")
        return 0
    readme.write_text(updated)
    print(f"{readme}: the section between {start} and {end} rendered from {source}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.findings", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--profile",
        default="full",
        choices=sorted(SECTIONS),
        help="full: the embedded course's records; real: the real-photo profile's",
    )
    parser.add_argument("--records", type=Path, help="records folder (default: results/<profile>/)")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the README is stale")
    parser.add_argument(
        "--hosts",
        action="store_true",
        help="render README › Reproducibility's table of the reruns on other hosts (results/other-hosts/) instead",
    )
    args = parser.parse_args(argv)
    if args.hosts:
        readme = args.readme.resolve()
        command = "python -m course_utils.findings --hosts" + (f" --readme {shown(readme)}" if readme != README else "")
        return update_readme(readme, render_hosts(), HOSTS_START, HOSTS_END, args.check, OTHER_HOSTS, command)
    default_records, start, end = SECTIONS[args.profile]
    records, readme = (args.records or default_records).resolve(), args.readme.resolve()
    timings = records / f"timings-{args.profile}.json"
    body = render_findings(
        read_records(records, args.profile),
        args.profile,
        load_record(timings, remake_records(args.profile)) if timings.exists() else None,
        records,
        readme,
    )
    command = regenerate_command(args.profile, records, readme)
    return update_readme(readme, body, start, end, args.check, records, command)


if __name__ == "__main__":
    raise SystemExit(main())
