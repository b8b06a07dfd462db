"""From runs to rows: one row per (backbone, dataset, block variant), seeds pooled, each compared
with the baseline block by Welch's test (:mod:`attn_bench.sweeps.stats`)."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from typing import Any, Iterable

from attn_bench.commands.report.collect import is_number
from attn_bench.config import flatten
from attn_bench.models.labels import row_key
from attn_bench.rundir import NO_EFFECT_KEYS, RunRecord
from attn_bench.sweeps.stats import holm, mean, sample_std, welch_compare

GROUP_KEYS = ("backbone", "dataset")
# What may differ between the seeds of one row: the seed and label, and keys that change no number.
POOLABLE_KEYS = NO_EFFECT_KEYS | {"seed", "name"}


def group_of(run: RunRecord) -> tuple[str, str, str]:
    """Runs of one row: same backbone (and timm arguments), dataset, and block variant."""
    return row_key(run.config, run.block, run.placement)


def group_runs(runs: list[RunRecord]) -> dict[tuple[str, str, str], list[RunRecord]]:
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(group_of(run), []).append(run)
    return groups


def _numbers(values: Iterable[Any]) -> list[float]:
    return [v for v in values if is_number(v)]


def _mean_or_none(values: Iterable[Any]) -> float | None:
    numbers = _numbers(values)
    return mean(numbers) if numbers else None


def _std_or_none(values: Iterable[Any]) -> float | None:
    numbers = _numbers(values)
    return sample_std(numbers) if numbers else None


def training_curve(runs: list[RunRecord]) -> list[tuple[int, float, float]]:
    """(epoch, mean, std) of eval top-1 over the runs that reached each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for record in run.history or []:
            if is_number(record.get("eval_top1")):
                by_epoch.setdefault(int(record["epoch"]), []).append(record["eval_top1"])
    return [(epoch, mean(v), sample_std(v)) for epoch, v in sorted(by_epoch.items())]


def summarize(key: tuple[str, str, str], runs: list[RunRecord]) -> dict[str, Any]:
    cost = [run.cost or {} for run in runs]
    top1 = [run.final["top1"] for run in runs]
    return {
        "backbone": key[0], "dataset": key[1], "block": key[2], "n": len(runs),
        "seeds": sorted(run.seed if run.seed is not None else run.config.get("seed") for run in runs),
        "top1": top1, "top1_mean": mean(top1), "top1_std": sample_std(top1),
        "top5_mean": _mean_or_none(run.final.get("top5") for run in runs),
        "top5_std": _std_or_none(run.final.get("top5") for run in runs),
        "params": next(iter(_numbers(run.params for run in runs)), None),  # the same for every seed
        "attn_params": next(iter(_numbers(run.attn_params for run in runs)), None),
        "gmacs": _mean_or_none(c.get("gmacs") for c in cost),
        "latency_ms": _mean_or_none(c.get("latency_ms") for c in cost),
        # a timing taken while the machine was busy is marked, never shown as clean
        "latency_busy": any(c.get("latency_busy") for c in cost),
        "throughput_busy": any(c.get("throughput_busy") for c in cost),
        "throughput_img_per_s": _mean_or_none(c.get("throughput_img_per_s") for c in cost),
        "cost_devices": sorted({str(c["device_name"]) for c in cost if c.get("device_name")}),
        "train_time_s": _mean_or_none(run.train_time_s for run in runs),
        "epochs": sorted({run.epochs for run in runs}, key=str),
        "curve": training_curve(runs),
        "runs": [run.run_dir for run in runs],
        "comparison": None,
    }


def build_rows(runs: list[RunRecord], baseline: str) -> list[dict[str, Any]]:
    """One row per (backbone, dataset, block), the baseline first in each backbone/dataset."""
    groups = group_runs(runs)
    order = sorted(groups, key=lambda k: (k[0], k[1], k[2] != baseline, k[2]))
    rows = [summarize(key, groups[key]) for key in order]
    for row in rows:
        base = next((r for r in rows if (r["backbone"], r["dataset"], r["block"])
                     == (row["backbone"], row["dataset"], baseline)), None)
        if base is not None and base is not row:
            row["comparison"] = welch_compare(row["top1"], base["top1"])
        row["is_baseline"] = base is row
    _adjust_for_multiple_comparisons(rows)
    return rows


def _adjust_for_multiple_comparisons(rows: list[dict[str, Any]]) -> None:
    """Holm over each (backbone, dataset) family: every block compared with that family's baseline."""
    for family in {(r["backbone"], r["dataset"]) for r in rows}:
        members = [r for r in rows if (r["backbone"], r["dataset"]) == family and r["comparison"] is not None]
        for row, p in zip(members, holm([r["comparison"].p_value for r in members])):
            row["comparison"] = replace(row["comparison"], p_holm=p)


def pooling_warnings(runs: list[RunRecord]) -> list[str]:
    """Rows whose seeds differ in more than the seed, or repeat a seed: the statistics would mislead."""
    warnings = []
    for key, members in group_runs(runs).items():
        configs = [{**flatten(run.config), "data files": (run.data or {}).get("fingerprint")} for run in members]
        keys = sorted({k for c in configs for k in c} - POOLABLE_KEYS)
        differing = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
        if differing:
            warnings.append(f"{'/'.join(key)}: runs pooled as seeds differ in {', '.join(differing[:5])}"
                            f"{' ...' if len(differing) > 5 else ''}")
        for seed, count in Counter(run.seed for run in members).items():
            if count > 1:
                folders = _folders([run.run_dir for run in members if run.seed == seed])
                warnings.append(f"{'/'.join(key)}: seed {seed} appears in more than one run: {folders}")
    return warnings


def _folders(run_dirs: list[str | None]) -> str:
    """``a, b (in /sweeps/x)``: the folders that hold one seed twice, named where they differ."""
    paths = [str(d) for d in run_dirs if d]
    if len(paths) < len(run_dirs):
        return ", ".join(str(d) for d in run_dirs)
    common = os.path.commonpath(paths)
    return f"{', '.join(os.path.relpath(p, common) for p in paths)} (in {common})"


def varying_keys(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in GROUP_KEYS if len({row[k] for row in rows}) > 1]


def context(rows: list[dict[str, Any]]) -> str:
    """What the numbers are of: backbone(s), dataset(s), epochs and seeds."""
    def joined(key: str) -> str:
        return ", ".join(sorted({str(row[key]) for row in rows}))

    epochs = "/".join(sorted({str(e) for row in rows for e in row["epochs"]}))
    low, high = min(row["n"] for row in rows), max(row["n"] for row in rows)
    seeds = f"{low} seed{'s' if low != 1 else ''}" if low == high else f"{low}-{high} seeds"
    return f"{joined('backbone')} on {joined('dataset')}, {epochs} epochs, {seeds} per block"


def drop_busy_timings(rows: list[dict[str, Any]]) -> None:
    """``--exclude-busy``: a timing taken while the machine was busy is left out (shown as -)."""
    for row in rows:
        if row.get("latency_busy"):
            row["latency_ms"], row["latency_busy"] = None, False
        if row.get("throughput_busy"):
            row["throughput_img_per_s"], row["throughput_busy"] = None, False
