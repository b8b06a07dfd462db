"""The report's plots: accuracy against cost (with the Pareto front) and training curves, each as a
300-dpi PNG and a vector PDF, titled with backbone, dataset, epochs and seeds.

matplotlib is optional (the ``report`` extra): without it the plots are skipped with one warning.
Figures are drawn with :class:`matplotlib.figure.Figure` directly (the Agg renderer, no pyplot),
so nothing global such as the backend or open-figure state is touched.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from attn_bench.commands.figures import COLUMN_WIDTH_IN, FONT_PT, save_png_and_pdf, text_width_in, wrap
from attn_bench.commands.report.rows import context

_err = Console(stderr=True, highlight=False, soft_wrap=True)
COST_AXES = {"gmacs": "MMACs (batch 1)", "latency_ms": "latency (ms, batch 1)"}
AXIS_SCALE = {"gmacs": 1e3, "latency_ms": 1.0}  # MMACs: 44.50 vs 44.51 reads, 0.04450 vs 0.04451 does not
COLUMN_IN = (COLUMN_WIDTH_IN, 2.9)  # one journal column: printed at this size, no text below 8 pt
PLOT_NAMES = {"gmacs": "accuracy_vs_macs.png", "latency_ms": "accuracy_vs_latency.png"}


def _label(row: dict[str, Any], varying: list[str]) -> str:
    return "/".join([row[k] for k in varying] + [row["block"]]) + (" (baseline)" if row.get("is_baseline") else "")


def _title(ax, text: str) -> None:
    ax.set_title(wrap(text, COLUMN_WIDTH_IN - 0.7), fontsize=FONT_PT)  # centred on the axes, right of the y label


LINE_IN = FONT_PT * 1.25 / 72


def _figure_for(labels: list[str]):
    """A one-column figure and its labels: where one is wider than half the column (a backbone's timm
    arguments), the names go, wrapped, in a legend under the plot, the figure taller by its lines, not
    beside the points or over the lines."""
    from matplotlib.figure import Figure

    below = any(text_width_in(label) > COLUMN_WIDTH_IN / 2 for label in labels)
    if below:
        labels = [wrap(label, COLUMN_WIDTH_IN - 0.6) for label in labels]  # beside the legend's marker
    lines = sum(label.count("\n") + 1 for label in labels) if below else 0
    fig = Figure(figsize=(COLUMN_IN[0], COLUMN_IN[1] + lines * LINE_IN), layout="constrained")
    return fig, labels, below


def _legend_below(fig) -> None:
    fig.legend(loc="outside lower center", fontsize=FONT_PT, frameon=False)


def _std(value: float) -> float:
    return 0.0 if value != value else value  # NaN (one seed) -> no error bar


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")


def _save(fig, path: Path) -> Path:
    """A 300-dpi PNG for slides and the README, and the same figure as a vector PDF for papers."""
    return save_png_and_pdf(fig, path.with_suffix(""), bbox_inches="tight", pad_inches=0.02)[0]  # never wider


def _plain_axes(ax) -> None:
    """Tick labels in plain units: no offset or scientific notation (a 1e-6 + 4.45e-2 offset is unreadable)."""
    for axis in (ax.xaxis, ax.yaxis):
        formatter = axis.get_major_formatter()
        if hasattr(formatter, "set_useOffset"):
            formatter.set_useOffset(False)
            formatter.set_scientific(False)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))  # "44.50025" at 8 pt: five of them fill a column's axis


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other point beats on both (lower or equal cost and higher
    accuracy), by increasing cost."""
    front, best = [], float("-inf")
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def accuracy_vs_cost(rows: list[dict[str, Any]], varying: list[str], cost_key: str, path: Path) -> Path | None:
    points = [row for row in rows if row[cost_key] is not None]
    if not points:
        return None
    busy_key = "latency_busy" if cost_key == "latency_ms" else None
    labels = [_label(row, varying) + (" *" if busy_key and row.get(busy_key) else "") for row in points]
    fig, labels, below = _figure_for(labels)  # inside the column, nothing cropped off
    ax = fig.add_subplot()
    scale = AXIS_SCALE[cost_key]
    for i, (row, label) in enumerate(zip(points, labels)):
        busy = bool(busy_key and row.get(busy_key))
        baseline = bool(row.get("is_baseline"))
        x = row[cost_key] * scale
        marker = MARKERS[i % len(MARKERS)] if below else "s" if baseline else "o"  # below: each its own
        ax.errorbar(x, row["top1_mean"], yerr=_std(row["top1_std"]), fmt=marker, capsize=3,
                    color="black" if baseline else None, mfc="none" if busy else None, label=label if below else None)
        if not below:
            ax.annotate(label, (x, row["top1_mean"]), textcoords="offset points", xytext=(5, 5), fontsize=FONT_PT)
    front = pareto_front([(row[cost_key] * scale, row["top1_mean"]) for row in points])
    if len(front) > 1:
        ax.step(*zip(*front), where="post", color="grey", linestyle="--", linewidth=1, label="Pareto front")
        if not below:
            ax.legend(fontsize=FONT_PT, loc="lower right")
    if below:
        _legend_below(fig)
    what = COST_AXES[cost_key].split(" (")[0]
    xlabel = COST_AXES[cost_key]
    devices = sorted({d for row in points for d in row.get("cost_devices", [])})
    if cost_key == "latency_ms":  # a latency means nothing without the device it was timed on
        xlabel = xlabel.removesuffix(")") + f", {' / '.join(devices) or 'device not recorded'})"
    ax.set(xlabel=xlabel, ylabel="top-1 (%)")
    _title(ax, f"top-1 vs {what}: {context(rows)}")
    notes = ["error bars: std over seeds"]
    if any(busy_key and row.get(busy_key) for row in points):
        notes.append("hollow, *: timed while the machine was busy")
    # under the x label, inside the layout (so inside the column, not cropped off or widening it)
    ax.annotate("\n".join(notes), (0, 0), xycoords=("axes fraction", ax.xaxis.label), xytext=(0, -3),
                textcoords="offset points", va="top", fontsize=FONT_PT, annotation_clip=False)
    _plain_axes(ax)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def training_curves(rows: list[dict[str, Any]], varying: list[str], path: Path) -> Path | None:
    from matplotlib.ticker import MaxNLocator

    if not any(row["curve"] for row in rows):
        return None
    drawn = [r for r in rows if r["curve"]]
    labels = [f"{_label(row, varying)} (n={row['n']})" for row in drawn]
    fig, labels, below = _figure_for(labels)  # inside the column, nothing cropped off
    ax = fig.add_subplot()
    for i, (row, label) in enumerate(zip(drawn, labels)):
        epochs, means, stds = zip(*row["curve"])
        # marker and line style as well as colour, so that the curves stay apart in greyscale print
        style = {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}
        if row.get("is_baseline"):
            style["color"] = "black"
        line, = ax.plot(epochs, means, label=label, **style)
        low, high = zip(*((m - _std(s), m + _std(s)) for m, s in zip(means, stds)))
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.15)
    ax.set(xlabel="epoch", ylabel="eval top-1 (%)")
    _title(ax, f"eval top-1 per epoch (band: ± std over seeds): {context(rows)}")
    _plain_axes(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    _legend_below(fig) if below else ax.legend(fontsize=FONT_PT)
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
