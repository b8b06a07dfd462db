"""The report's rows as tables (:mod:`attn_bench.tables`): terminal, report.md, report.csv, report.tex."""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any, Callable

from attn_bench.commands.report.collect import Problem
from attn_bench.commands.report.rows import context, varying_keys
from attn_bench.sweeps.stats import Comparison
from attn_bench.tables import Column, Table, latex_escape, to_latex, to_markdown

TITLE = "attn-bench report"
DELTA_HEADERS = {"Δ top-1", "95% CI", "beyond seed noise?"}
CSV_FIELDS = ("backbone", "dataset", "block", "n", "seeds", "top1_mean", "top1_std", "top5_mean", "top5_std",
              "delta_top1", "delta_ci_low", "delta_ci_high", "p_value", "p_holm", "welch_df", "beyond_seed_noise",
              "params", "attn_params", "gmacs", "latency_ms", "latency_busy", "throughput_img_per_s", "throughput_busy",
              "train_time_s", "epochs", "runs")


def _mean_std(mean_key: str, std_key: str) -> Callable[[dict], str]:
    def fmt(row: dict) -> str:
        if row[mean_key] is None:
            return "-"
        std = row[std_key]
        return f"{row[mean_key]:.2f}" if std is None or math.isnan(std) else f"{row[mean_key]:.2f} ± {std:.2f}"
    return fmt


def _number(key: str, scale: float, digits: int) -> Callable[[dict], str]:
    return lambda row: "-" if row[key] is None else f"{row[key] / scale:.{digits}f}"


def _delta(row: dict) -> str:
    if row["is_baseline"]:
        return "baseline"
    return "-" if row["comparison"] is None else f"{row['comparison'].delta:+.2f}"


def _interval(row: dict) -> str:
    c: Comparison | None = row["comparison"]
    if c is None:
        return "-"
    return c.note if c.ci_low is None else f"[{c.ci_low:+.2f}, {c.ci_high:+.2f}]"


def _timing(key: str, digits: int) -> Callable[[dict], str]:
    """A timing, with ``*`` when it was measured while the machine was busy."""
    busy_key = "latency_busy" if key == "latency_ms" else "throughput_busy"
    return lambda row: "-" if row[key] is None else f"{row[key]:.{digits}f}" + (" *" if row.get(busy_key) else "")


def _verdict(row: dict) -> str:
    c: Comparison | None = row["comparison"]
    if c is None:
        return "-"
    return "n/a" if c.p_value is None else c.verdict  # the interval column says why


def columns(rows: list[dict[str, Any]]) -> list[Column]:
    with_delta = any(row["is_baseline"] for row in rows)
    cols = [Column(key, lambda r, key=key: r[key], "left") for key in varying_keys(rows)] + [
        Column("block", lambda r: r["block"], "left"), Column("n", lambda r: str(r["n"])),
        Column("top-1 (%)", _mean_std("top1_mean", "top1_std")),
        Column("Δ top-1", _delta), Column("95% CI", _interval), Column("beyond seed noise?", _verdict),
        Column("top-5 (%)", _mean_std("top5_mean", "top5_std")),
        Column("params (M)", _number("params", 1e6, 3)), Column("GMACs", _number("gmacs", 1, 3)),
        Column("latency (ms)", _timing("latency_ms", 2)), Column("img/s", _timing("throughput_img_per_s", 0)),
        Column("train time (s)", _number("train_time_s", 1, 1)),
    ]
    return [c for c in cols if with_delta or c.header not in DELTA_HEADERS]


def caption(rows: list[dict[str, Any]], baseline: str) -> str:
    text = "top-1/top-5: eval accuracy after the last epoch, mean ± sample std over seeds (n = seeds); "
    if any(row["is_baseline"] for row in rows):
        text += (f"Δ top-1: minus the '{baseline}' block, 95% CI and p from Welch's t-test; "
                 "beyond seed noise? = Holm-adjusted p < 0.05 (over the blocks compared with the baseline)")
    else:
        text += f"no '{baseline}' (baseline) runs, so no deltas"
    if any(row.get("latency_busy") or row.get("throughput_busy") for row in rows):
        text += "; * = timed while the machine was busy (other processes or a wide spread): compare with care"
    devices = sorted({d for row in rows for d in row["cost_devices"]})
    if devices:
        text += f"; latency (batch 1, median) and img/s measured on {', '.join(devices)}"
    return text


def results_table(rows: list[dict[str, Any]], baseline: str) -> Table:
    styles = ["bold green" if row["comparison"] and row["comparison"].significant else None for row in rows]
    return Table(TITLE, columns(rows), rows, caption(rows, baseline), styles)


def problems_table(problems: list[Problem]) -> Table:
    cols = [Column("status", lambda p: p.status, "left", True), Column("block", lambda p: p.block, "left", True),
            Column("seed", lambda p: str(p.seed), "left", True), Column("directory", lambda p: str(p.path), "left", True),
            Column("reason", lambda p: p.reason, "left", True)]
    return Table("failed / incomplete runs (not counted above)", cols, problems)


def markdown_document(rows: list[dict[str, Any]], problems: list[Problem], baseline: str, plots: list[Path]) -> str:
    lines = [f"# {TITLE}", ""] + ([f"**{context(rows)}**", ""] if rows else [])
    if rows:
        table = results_table(rows, baseline)
        lines += [table.caption + ".", ""] + to_markdown(table)
    else:
        lines += ["No completed runs."]
    if problems:
        lines += ["", "## Failed / incomplete runs", ""] + to_markdown(problems_table(problems))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _delta_marked(row: dict) -> str:
    """Δ top-1 with ``*`` when beyond seed noise (Holm-adjusted)."""
    c = row["comparison"]
    return _delta(row) + ("*" if c is not None and c.significant else "")


def _holm(row: dict) -> str:
    c = row["comparison"]
    return "-" if c is None or c.p_holm is None else f"{c.p_holm:.3g}"


def paper_table(rows: list[dict[str, Any]]) -> Table:
    """The compact table for a paper (the CSV holds every column)."""
    with_delta = any(row["is_baseline"] for row in rows)
    cols = [Column(key, lambda r, key=key: r[key], "left") for key in varying_keys(rows)] + [
        Column("block", lambda r: r["block"], "left"), Column("params (M)", _number("params", 1e6, 2)),
        Column("GMACs", _number("gmacs", 1, 3)), Column("top-1 (%)", _mean_std("top1_mean", "top1_std")),
        Column("Δ top-1", _delta_marked), Column("adj. p", _holm)]
    return Table(TITLE, [c for c in cols if with_delta or c.header not in {"Δ top-1", "adj. p"}], rows)


def latex_label(dirs: list[Path]) -> str:
    """``tab:attn-bench-<first folder's name>-<hash of every folder>``: two reports' tables in one paper
    never share a label, and the same report always gets the same one."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", dirs[0].resolve().name).strip("-")[:40] or "runs"
    digest = hashlib.sha1("\n".join(str(d.resolve()) for d in dirs).encode()).hexdigest()[:6]
    return f"tab:attn-bench-{slug}-{digest}"


def latex_document(rows: list[dict[str, Any]], baseline: str, label: str) -> str:
    """A booktabs ``table`` with caption and label and the compact columns of :func:`paper_table`."""
    if not rows:
        return f"% {TITLE}: no completed runs\n"
    caption = latex_escape(context(rows)) + r". Top-1 after the last epoch, mean $\pm$ std over seeds"
    if any(row["is_baseline"] for row in rows):
        caption += (rf"; $\Delta$ against {latex_escape(baseline)}; adj.\ p: Welch's test, Holm-adjusted over the "
                    r"blocks; * = beyond seed noise (adj.\ p $<$ 0.05)")
    tabular = to_latex(paper_table(rows)).split("\n", 2)[2]  # without the two comment lines
    return ("% needs \\usepackage{booktabs}; every column is in report.csv\n\\begin{table}[t]\n\\centering\n"
            f"\\caption{{{caption}}}\n\\label{{{label}}}\n{tabular}\\end{{table}}\n")


def csv_record(row: dict[str, Any]) -> dict[str, Any]:
    c: Comparison | None = row["comparison"]
    return {
        **{k: row[k] for k in CSV_FIELDS if k in row},
        "delta_top1": c.delta if c else None, "delta_ci_low": c.ci_low if c else None,
        "delta_ci_high": c.ci_high if c else None, "p_value": c.p_value if c else None,
        "p_holm": c.p_holm if c else None, "welch_df": c.df if c else None,
        "beyond_seed_noise": None if c is None else c.significant,
    }
