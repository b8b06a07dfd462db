"""The heatmap grid: the input images with their labels on top, then one row per run with the map
over each image and the predicted class and confidence, and the maps' colour scale below. Drawn at the
width it is printed at (one column for up to two images, the page's text width for up to eight), no text
below 8 pt; with matplotlib's ``Figure`` (no pyplot state), saved as a 300-dpi PNG and a vector PDF."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attn_bench.commands.figures import COLUMN_WIDTH_IN, FONT_PT, PAGE_WIDTH_IN, save_png_and_pdf, wrap

LABELS_IN = 1.1  # the row labels' column, their padding included
CELL_MIN_IN = 0.72  # an image's narrowest width: "automobile" at 8 pt fits over it
GAP_IN = 0.03  # at least between two neighbouring titles (each within an image's pitch less this)
ONE_COLUMN_UP_TO = 2  # images; more take the page's text width
LINE_IN = FONT_PT * 1.25 / 72  # one line of 8-pt text
CMAP = "inferno"  # brightness rises with the value, so the maps read in greyscale too (jet does not)


@dataclass
class Row:
    label: str
    cams: torch.Tensor  # (N, H, W) in [0, 1]
    probs: torch.Tensor  # (N, classes)


def _image(raw: torch.Tensor) -> np.ndarray:
    return raw.permute(1, 2, 0).numpy()


def grid_width(images: int) -> float:
    """The printed width in inches: one column, the page width, or wider where the images do not fit it
    at ``CELL_MIN_IN`` (the caller says so: the text then prints below 8 pt)."""
    if images <= ONE_COLUMN_UP_TO:
        return COLUMN_WIDTH_IN
    return max(PAGE_WIDTH_IN, LABELS_IN + CELL_MIN_IN * images)


def _class_name(name: str) -> str:
    return name.replace("_", " ")  # CIFAR-100's "aquarium_fish": a space lets it wrap


def draw(raw: torch.Tensor, labels: torch.Tensor, names: list[str], rows: list[Row], title: str,
         scale_label: str):
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    n = raw.shape[0]
    width = grid_width(n)
    cell = (width - LABELS_IN) / n
    title = wrap(title, width)
    height = (len(rows) + 1) * (cell + 3 * LINE_IN) + (title.count("\n") + 3) * LINE_IN + 0.3  # + the scale
    fig = Figure(figsize=(width, height), layout="compressed")
    fig.suptitle(title, fontsize=FONT_PT)
    axes = fig.subplots(len(rows) + 1, n, squeeze=False)
    for j in range(n):
        axes[0, j].imshow(_image(raw[j]), interpolation="nearest")
        axes[0, j].set_title(wrap(_class_name(names[int(labels[j])]), cell - GAP_IN), fontsize=FONT_PT)
    axes[0, 0].set_ylabel("input", fontsize=FONT_PT, rotation=0, ha="right", va="center")
    for i, row in enumerate(rows, start=1):
        conf, pred = row.probs.max(dim=1)
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(_image(raw[j]), interpolation="nearest")
            ax.imshow(row.cams[j].numpy(), cmap=CMAP, alpha=0.55, vmin=0, vmax=1, interpolation="bilinear")
            right = int(pred[j]) == int(labels[j])
            ax.set_title(wrap(f"{_class_name(names[int(pred[j])])} {100 * conf[j]:.0f}%", cell - GAP_IN, bold=not right),
                         fontsize=FONT_PT,
                         color="black" if right else "#b00000", fontweight="normal" if right else "bold")
        label = "\n".join(wrap(line, LABELS_IN - 0.15) for line in row.label.split("\n"))
        axes[i, 0].set_ylabel(label, fontsize=FONT_PT, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    # the overlay's own scale (alpha 0.55 over the image): what a bright spot means
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), CMAP), ax=axes[1:, :] if rows else axes,
                       location="bottom", shrink=min(1.0, 3.0 / width), aspect=30)
    bar.set_label(wrap(scale_label, width - LABELS_IN), fontsize=FONT_PT)  # centred under the images
    bar.set_ticks([0, 0.5, 1])
    bar.ax.tick_params(labelsize=FONT_PT)
    return fig


def save(fig, stem: Path) -> list[Path]:
    return save_png_and_pdf(fig, stem, bbox_inches="tight", pad_inches=0.02)  # cropped: never wider than printed


def as_array(fig) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 image at screen resolution (for TensorBoard)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(100)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


PANELS_PER_ROW = 3  # at the page width: 2.3 in a panel, four stages' boxes with 8-pt labels


def channel_weight_figure(runs: list[tuple[str, dict[str, torch.Tensor]]], title: str):
    """One panel per run: the distribution of its channel weights per stage (box: quartiles,
    whiskers: 5th-95th percentile), the images' weights pooled. One run: one column wide; more: the
    page's width, three panels a row."""
    from matplotlib.figure import Figure

    cols = 1 if len(runs) == 1 else min(len(runs), PANELS_PER_ROW)
    grid_rows = math.ceil(len(runs) / cols)
    width = COLUMN_WIDTH_IN if cols == 1 else PAGE_WIDTH_IN
    title = wrap(title, width)
    fig = Figure(figsize=(width, 2.4 * grid_rows + (title.count("\n") + 1) * LINE_IN + 0.2), layout="constrained")
    fig.suptitle(title, fontsize=FONT_PT)
    axes = fig.subplots(grid_rows, cols, squeeze=False, sharey=True)
    for k, ax in enumerate(axes.flat):
        if k >= len(runs):
            ax.set_axis_off()
            continue
        label, stages = runs[k]
        names = list(stages)
        ax.boxplot([stages[n].numpy() for n in names], whis=(5, 95), showfliers=False,
                   medianprops={"color": "black"})
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30)
        ax.set_ylim(0, 1)
        if k % cols == 0:
            ax.set_ylabel("channel weight", fontsize=FONT_PT)
        ax.set_title(wrap(label, width / cols - 0.2), fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
        ax.grid(axis="y", alpha=0.3)
    return fig
