"""The report's PNG plots: accuracy against cost, and training curves.

matplotlib is optional (the ``report`` extra): without it the plots are skipped with one warning.
Figures are drawn with :class:`matplotlib.figure.Figure` directly (the Agg renderer, no pyplot),
so nothing global such as the backend or open-figure state is touched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from attn_bench.io import atomic_write_with

_err = Console(stderr=True, highlight=False, soft_wrap=True)
COST_AXES = {"gmacs": "GMACs (batch 1)", "latency_ms": "latency (ms, batch 1)"}
PLOT_NAMES = {"gmacs": "accuracy_vs_macs.png", "latency_ms": "accuracy_vs_latency.png"}


def _label(row: dict[str, Any], varying: list[str]) -> str:
    return "/".join([row[k] for k in varying] + [row["block"]])


def _std(value: float) -> float:
    return 0.0 if value != value else value  # NaN (one seed) -> no error bar


def _save(fig, path: Path) -> Path:
    return atomic_write_with(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))


def accuracy_vs_cost(rows: list[dict[str, Any]], varying: list[str], cost_key: str, path: Path) -> Path | None:
    from matplotlib.figure import Figure

    points = [row for row in rows if row[cost_key] is not None]
    if not points:
        return None
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for row in points:
        ax.errorbar(row[cost_key], row["top1_mean"], yerr=_std(row["top1_std"]), fmt="o", capsize=3)
        ax.annotate(_label(row, varying), (row[cost_key], row["top1_mean"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set(xlabel=COST_AXES[cost_key], ylabel="top-1 (%)", title=f"top-1 (mean ± std over seeds) vs {COST_AXES[cost_key].split(' (')[0]}")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def training_curves(rows: list[dict[str, Any]], varying: list[str], path: Path) -> Path | None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not any(row["curve"] for row in rows):
        return None
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for row in rows:
        if row["curve"]:
            epochs, means, stds = zip(*row["curve"])
            line, = ax.plot(epochs, means, marker=".", label=f"{_label(row, varying)} (n={row['n']})")
            low, high = zip(*((m - _std(s), m + _std(s)) for m, s in zip(means, stds)))
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
    ax.set(xlabel="epoch", ylabel="eval top-1 (%)", title="eval top-1 per epoch (mean, band = ± std over seeds)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_plots(rows: list[dict[str, Any]], varying: list[str], out_dir: Path) -> list[Path] | None:
    """The PNGs written into ``out_dir`` (a plot without data is left out); None without matplotlib."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _err.print("[yellow]warning:[/] matplotlib is not installed, so no plots "
                   "(pip install 'attn-bench\\[report]')")
        return None
    if not rows:
        return []
    written = [accuracy_vs_cost(rows, varying, key, out_dir / PLOT_NAMES[key]) for key in COST_AXES]
    written.append(training_curves(rows, varying, out_dir / "training_curves.png"))
    return [path for path in written if path is not None]
