"""``attn-bench report``: compare finished runs, one row per attention block.

    attn-bench report outputs/sweeps/<sweep> [more dirs ...] [--out DIR] [--baseline none]

Every run directory below the given directories is read (``metrics.json`` as written by
:mod:`attn_bench.training.run`). Completed runs are grouped by block, and also by backbone and
dataset when those vary; the seeds of a group are pooled: top-1 mean ± std, and the difference
to the baseline block with Welch's 95% interval and test (see :mod:`attn_bench.sweeps.stats`).
Failed runs and runs without ``metrics.json`` (in progress or interrupted) are listed, not
counted. Output: a table on the terminal, and ``report.{md,csv,tex}`` plus PNG plots in
``--out`` (default ``<first dir>/report``).
"""
from __future__ import annotations

import argparse
import csv
import io
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attn_bench.attention import BASELINE
from attn_bench.errors import ConfigError, check
from attn_bench.io import atomic_write_text, read_json
from attn_bench.rundir import CONFIG_FILE, LAST_CKPT, METRICS_FILE
from attn_bench.sweeps.stats import Comparison, mean, sample_std, welch_compare

GROUP_KEYS = ("backbone", "dataset")
# Config keys that may differ between the seeds of one row without making them different experiments.
POOLABLE_KEYS = {"seed", "name", "device", "measure_cost", "data.root", "data.download", "data.num_workers", "data.cache_dir",
                 "trainer.progress", "trainer.log_every_steps", "trainer.checkpoint_every_steps"}

_err = Console(stderr=True, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- finding and reading runs

@dataclass(frozen=True)
class Problem:
    """A run that is not in the table: failed, still running, interrupted, or unreadable."""

    path: Path
    status: str
    block: str
    seed: Any
    reason: str


def run_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) that hold a run; hidden folders are skipped."""
    found = {p.parent for name in (METRICS_FILE, CONFIG_FILE) for p in root.rglob(name)}
    return sorted(d for d in found if not any(part.startswith(".") for part in d.relative_to(root).parts))


def load_run(path: Path) -> dict[str, Any] | Problem:
    """The metrics of a completed run, or the :class:`Problem` that keeps it out of the table."""
    if not (path / METRICS_FILE).exists():
        block, seed = _block_and_seed(_read_config_yaml(path / CONFIG_FILE))
        state = f"checkpoint {LAST_CKPT} present" if (path / LAST_CKPT).exists() else "no checkpoint yet"
        return Problem(path, "incomplete", block, seed, f"no {METRICS_FILE}: in progress or interrupted ({state})")
    try:
        metrics = read_json(path / METRICS_FILE)
    except (OSError, ValueError) as err:
        return Problem(path, "unreadable", "?", "?", f"{METRICS_FILE}: {err}")
    block, seed = _block_and_seed(metrics.get("config"))
    status = metrics.get("status")
    if status == "failed":
        where = metrics.get("failed_at") or {}
        return Problem(path, "failed", block, seed,
                       f"{metrics.get('reason', '?')} (epoch {where.get('epoch', '?')}, step {where.get('step', '?')})")
    if status != "completed" or not _is_number((metrics.get("final") or {}).get("top1")):
        return Problem(path, str(status), block, seed, f"{METRICS_FILE} has status {status!r} and no final top-1")
    try:
        group_of(metrics)
    except (KeyError, TypeError):
        return Problem(path, "unreadable", block, seed, f"{METRICS_FILE} has no config.model.backbone/attn or data.name")
    return {**metrics, "path": path}


def _read_config_yaml(path: Path) -> dict[str, Any] | None:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # a half-written or hand-edited file: the run is listed with '?' instead
        return None


def _block_and_seed(config: Any) -> tuple[str, Any]:
    config = config if isinstance(config, dict) else {}
    return str((config.get("model") or {}).get("attn", "?")), config.get("seed", "?")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def collect_runs(dirs: Iterable[Path]) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Completed runs and problem runs under all ``dirs`` (each run once, however often it is reached)."""
    completed, problems, seen = [], [], set()
    for root in dirs:
        check(root.is_dir(), f"report: '{root}' is not a directory")
        paths = run_dirs(root)
        check(bool(paths), f"report: no runs found in '{root}' (no {METRICS_FILE} or {CONFIG_FILE} below it)")
        for path in (p for p in paths if p.resolve() not in seen):
            seen.add(path.resolve())
            run = load_run(path)
            (problems if isinstance(run, Problem) else completed).append(run)
    return completed, problems


# ---------------------------------------------------------------- rows

def _with_settings(name: str, settings: list[str]) -> str:
    return f"{name} ({', '.join(settings)})" if settings else name


def backbone_label(model: dict[str, Any]) -> str:
    """The backbone, plus its timm arguments when it has any (resnet18 and a narrowed resnet18 differ)."""
    kwargs = model.get("timm_kwargs") or {}
    return _with_settings(str(model["backbone"]), [f"{k}={v}" for k, v in sorted(kwargs.items())])


def block_label(model: dict[str, Any]) -> str:
    """The block, plus whatever makes it a variant: its arguments, stages and position."""
    name = str(model["attn"])
    if name == BASELINE:
        return name
    settings = [f"{k}={v}" for k, v in sorted((model.get("attn_args") or {}).items())]
    if model.get("attn_stages") is not None:
        settings.append(f"stages={list(model['attn_stages'])}")
    if model.get("attn_position", "every") != "every":
        settings.append(f"position={model['attn_position']}")
    return _with_settings(name, settings)


def group_of(run: dict[str, Any]) -> tuple[str, str, str]:
    """Runs of one row: same backbone (and timm arguments), dataset, and block variant."""
    cfg = run["config"]
    return backbone_label(cfg["model"]), str(cfg["data"]["name"]), block_label(cfg["model"])


def group_runs(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(group_of(run), []).append(run)
    return groups


def _mean_or_none(values: Iterable[Any]) -> float | None:
    numbers = [v for v in values if _is_number(v)]
    return mean(numbers) if numbers else None


def _first_or_none(values: Iterable[Any]) -> Any:
    return next((v for v in values if _is_number(v)), None)


def _std_or_none(values: Iterable[Any]) -> float | None:
    numbers = [v for v in values if _is_number(v)]
    return sample_std(numbers) if numbers else None


def training_curve(runs: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """(epoch, mean, std) of eval top-1 over the runs that reached each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for record in run.get("history") or []:
            if _is_number(record.get("eval_top1")):
                by_epoch.setdefault(int(record["epoch"]), []).append(record["eval_top1"])
    return [(epoch, mean(v), sample_std(v)) for epoch, v in sorted(by_epoch.items())]


def summarize(key: tuple[str, str, str], runs: list[dict[str, Any]]) -> dict[str, Any]:
    cost = [run.get("cost") or {} for run in runs]
    top1 = [run["final"]["top1"] for run in runs]
    top5 = [run["final"].get("top5") for run in runs]
    return {
        "backbone": key[0], "dataset": key[1], "block": key[2], "n": len(runs),
        "seeds": sorted(run.get("seed", run["config"].get("seed")) for run in runs),
        "top1": top1, "top1_mean": mean(top1), "top1_std": sample_std(top1),
        "top5_mean": _mean_or_none(top5), "top5_std": _std_or_none(top5),
        "params": _first_or_none(run.get("params") for run in runs),  # the same for every seed
        "attn_params": _first_or_none(run.get("attn_params") for run in runs),
        "gmacs": _mean_or_none(c.get("gmacs") for c in cost),
        "latency_ms": _mean_or_none(c.get("latency_ms") for c in cost),
        "throughput_img_per_s": _mean_or_none(c.get("throughput_img_per_s") for c in cost),
        "cost_devices": sorted({str(c["device_name"]) for c in cost if c.get("device_name")}),
        "train_time_s": _mean_or_none(run.get("train_time_s") for run in runs),
        "epochs": sorted({run.get("epochs") for run in runs}, key=str),
        "curve": training_curve(runs),
        "runs": [str(run["path"]) for run in runs],
        "comparison": None,
    }


def build_rows(runs: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
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
    return rows


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    return {k: v for key, value in node.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}


def pooling_warnings(runs: list[dict[str, Any]]) -> list[str]:
    """Rows whose seeds differ in more than the seed, or repeat a seed: the statistics would mislead."""
    groups = group_runs(runs)
    warnings = []
    for key, members in groups.items():
        configs = [_flatten(run["config"]) for run in members]
        keys = sorted({k for c in configs for k in c} - POOLABLE_KEYS)
        differing = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
        if differing:
            warnings.append(f"{'/'.join(key)}: runs pooled as seeds differ in {', '.join(differing[:5])}"
                            f"{' ...' if len(differing) > 5 else ''}")
        repeated = [s for s, count in Counter(run.get("seed") for run in members).items() if count > 1]
        if repeated:
            warnings.append(f"{'/'.join(key)}: seed {repeated[0]} appears in more than one run")
    return warnings


# ---------------------------------------------------------------- formatting

def varying_keys(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in GROUP_KEYS if len({row[k] for row in rows}) > 1]


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


def _verdict(row: dict) -> str:
    c: Comparison | None = row["comparison"]
    if c is None:
        return "-"
    return "n/a" if c.p_value is None else c.verdict  # the interval column says why


def display_columns(rows: list[dict[str, Any]]) -> list[tuple[str, Callable[[dict], str]]]:
    """(header, formatter) pairs shared by the terminal, Markdown and LaTeX tables."""
    with_delta = any(row["is_baseline"] for row in rows)
    columns = [(key, lambda r, key=key: r[key]) for key in varying_keys(rows)] + [
        ("block", lambda r: r["block"]), ("n", lambda r: str(r["n"])),
        ("top-1 (%)", _mean_std("top1_mean", "top1_std")),
        ("Δ top-1", _delta), ("95% CI", _interval), ("beyond seed noise?", _verdict),
        ("top-5 (%)", _mean_std("top5_mean", "top5_std")),
        ("params (M)", _number("params", 1e6, 3)), ("GMACs", _number("gmacs", 1, 3)),
        ("latency (ms)", _number("latency_ms", 1, 2)), ("img/s", _number("throughput_img_per_s", 1, 0)),
        ("train time (s)", _number("train_time_s", 1, 1)),
    ]
    delta_headers = {"Δ top-1", "95% CI", "beyond seed noise?"}
    return [c for c in columns if with_delta or c[0] not in delta_headers]


def caption(rows: list[dict[str, Any]], baseline: str) -> str:
    text = "top-1/top-5: eval accuracy after the last epoch, mean ± sample std over seeds (n = seeds); "
    if any(row["is_baseline"] for row in rows):
        text += (f"Δ top-1: minus the '{baseline}' block, 95% CI and p from Welch's t-test; "
                 "beyond seed noise? = p < 0.05")
    else:
        text += f"no '{baseline}' (baseline) runs, so no deltas"
    devices = sorted({d for row in rows for d in row["cost_devices"]})
    if devices:
        text += f"; latency (batch 1, median) and img/s measured on {', '.join(devices)}"
    return text


def problem_line(problem: Problem) -> list[str]:
    return [problem.status, problem.block, str(problem.seed), str(problem.path), problem.reason]


PROBLEM_HEADERS = ("status", "block", "seed", "directory", "reason")


def print_report(rows: list[dict[str, Any]], problems: list[Problem], baseline: str) -> None:
    console = Console()
    if not console.is_terminal:  # a file or pipe has no width: do not wrap cells at 80 columns
        console.width = max(console.width, 200)
    if rows:
        table = Table(title="attn-bench report", caption=escape(caption(rows, baseline)), box=box.SIMPLE_HEAD,
                      collapse_padding=True)
        columns = display_columns(rows)
        for header, _ in columns:
            table.add_column(header, justify="left" if header in ("block", *GROUP_KEYS) else "right")
        for row in rows:
            style = "bold green" if row["comparison"] and row["comparison"].significant else None
            table.add_row(*(escape(fmt(row)) for _, fmt in columns), style=style)
        console.print(table)
    if problems:
        table = Table(title="failed / incomplete runs (not counted above)", box=box.SIMPLE_HEAD)
        for header in PROBLEM_HEADERS:
            table.add_column(header, overflow="fold")
        for problem in problems:
            table.add_row(*map(escape, problem_line(problem)))
        console.print(table)


def _markdown_table(headers: Iterable[str], lines: Iterable[list[str]]) -> list[str]:
    headers = list(headers)
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    return (["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(map(cell, line)) + " |" for line in lines])


def to_markdown(rows: list[dict[str, Any]], problems: list[Problem], baseline: str, plots: list[Path]) -> str:
    lines = ["# attn-bench report", ""]
    if rows:
        columns = display_columns(rows)
        lines += [caption(rows, baseline) + ".", ""]
        lines += _markdown_table((h for h, _ in columns), ([fmt(r) for _, fmt in columns] for r in rows))
    else:
        lines += ["No completed runs."]
    if problems:
        lines += ["", "## Failed / incomplete runs", ""]
        lines += _markdown_table(PROBLEM_HEADERS, (problem_line(p) for p in problems))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("backbone", "dataset", "block", "n", "seeds", "top1_mean", "top1_std", "top5_mean", "top5_std",
              "delta_top1", "delta_ci_low", "delta_ci_high", "p_value", "welch_df", "beyond_seed_noise",
              "params", "attn_params", "gmacs", "latency_ms", "throughput_img_per_s", "train_time_s", "epochs", "runs")


def csv_record(row: dict[str, Any]) -> dict[str, Any]:
    c: Comparison | None = row["comparison"]
    return {
        **{k: row[k] for k in CSV_FIELDS if k in row and k not in ("seeds", "epochs", "runs")},
        "seeds": ";".join(map(str, row["seeds"])), "epochs": ";".join(map(str, row["epochs"])),
        "runs": ";".join(row["runs"]),
        "delta_top1": c.delta if c else "", "delta_ci_low": c.ci_low if c else "", "delta_ci_high": c.ci_high if c else "",
        "p_value": c.p_value if c else "", "welch_df": c.df if c else "",
        "beyond_seed_noise": "" if c is None or c.significant is None else c.significant,
    }


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                         for k, v in csv_record(row).items()})
    return out.getvalue()


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "±": r"$\pm$", "Δ": r"$\Delta$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def to_latex(rows: list[dict[str, Any]], baseline: str) -> str:
    if not rows:
        return "% attn-bench report: no completed runs\n"
    columns = display_columns(rows)
    align = "".join("l" if h in ("block", *GROUP_KEYS) else "r" for h, _ in columns)
    lines = [f"% attn-bench report. {latex_escape(caption(rows, baseline))}.", "% needs \\usepackage{booktabs}",
             f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(latex_escape(h) for h, _ in columns) + r" \\", "\\midrule"]
    lines += [" & ".join(latex_escape(fmt(r)) for _, fmt in columns) + r" \\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- command

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like every other user mistake
        raise ConfigError(f"report: {message}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="attn-bench report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="directories to search for runs (recursively)")
    parser.add_argument("--out", type=Path, help="output directory (default: <first dir>/report)")
    parser.add_argument("--baseline", default=None, help=f"block the deltas are measured against (default: {BASELINE})")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    runs, problems = collect_runs(args.dirs)
    baseline = args.baseline or BASELINE
    blocks = sorted({group_of(run)[2] for run in runs})
    check(args.baseline is None or baseline in blocks,
          f"report: --baseline {baseline} has no completed runs; blocks found: {', '.join(blocks) or 'none'}")
    rows = build_rows(runs, baseline)
    for warning in pooling_warnings(runs):
        _err.print(f"[yellow]warning:[/] {escape(warning)}")
    if not rows:
        _err.print("[yellow]warning:[/] no completed runs; only failed/incomplete ones are listed")
    print_report(rows, problems, baseline)

    from attn_bench.sweeps.plots import write_plots

    out_dir = args.out or args.dirs[0] / "report"
    plots = write_plots(rows, varying_keys(rows) if rows else [], out_dir)
    atomic_write_text(out_dir / "report.md", to_markdown(rows, problems, baseline, plots or []))
    atomic_write_text(out_dir / "report.csv", to_csv(rows))
    atomic_write_text(out_dir / "report.tex", to_latex(rows, baseline))
    _err.print(escape(f"written to {out_dir}/report.{{md,csv,tex}}") + (f" and {len(plots)} plots" if plots else ""))
    return 0
