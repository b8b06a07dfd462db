"""The heatmap grid: the input images with their labels on top, then one row per run with the CAM
over each image and the predicted class and confidence. Drawn with matplotlib's ``Figure`` (no
pyplot state), saved as a 300-dpi PNG and a vector PDF."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attn_bench.commands.figures import save_png_and_pdf

CELL_IN = 1.1  # inches per image: 8 images fit a two-column figure (~9 in)


@dataclass
class Row:
    label: str
    cams: torch.Tensor  # (N, H, W) in [0, 1]
    probs: torch.Tensor  # (N, classes)


def _image(raw: torch.Tensor) -> np.ndarray:
    return raw.permute(1, 2, 0).numpy()


def draw(raw: torch.Tensor, labels: torch.Tensor, names: list[str], rows: list[Row], title: str):
    from matplotlib.figure import Figure

    n = raw.shape[0]
    fig = Figure(figsize=(CELL_IN * n + 1.6, CELL_IN * (len(rows) + 1) + 0.5), layout="constrained")
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(len(rows) + 1, n, squeeze=False)
    for j in range(n):
        axes[0, j].imshow(_image(raw[j]), interpolation="nearest")
        axes[0, j].set_title(names[int(labels[j])], fontsize=7)
    axes[0, 0].set_ylabel("input", fontsize=7)
    for i, row in enumerate(rows, start=1):
        conf, pred = row.probs.max(dim=1)
        for j in range(n):
            ax = axes[i, j]
            ax.imshow(_image(raw[j]), interpolation="nearest")
            # inferno: brightness rises with the value, so the maps read in greyscale too (jet does not)
            ax.imshow(row.cams[j].numpy(), cmap="inferno", alpha=0.55, vmin=0, vmax=1, interpolation="bilinear")
            right = int(pred[j]) == int(labels[j])
            ax.set_title(f"{names[int(pred[j])]} {100 * conf[j]:.0f}%", fontsize=6,
                         color="black" if right else "#b00000", fontweight="normal" if right else "bold")
        axes[i, 0].set_ylabel(row.label, fontsize=6, rotation=0, ha="right", va="center", wrap=True)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def save(fig, stem: Path) -> list[Path]:
    return save_png_and_pdf(fig, stem)


def as_array(fig) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 image at screen resolution (for TensorBoard)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(100)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def channel_weight_figure(runs: list[tuple[str, dict[str, torch.Tensor]]], title: str):
    """One panel per run: the distribution of its channel weights per stage (box: quartiles,
    whiskers: 5th-95th percentile), the images' weights pooled."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(runs) + 0.5, 3.2), layout="constrained")
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, (label, stages) in zip(axes, runs):
        names = list(stages)
        ax.boxplot([stages[n].numpy() for n in names], whis=(5, 95), showfliers=False,
                   medianprops={"color": "black"})
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=7, rotation=30)
        ax.set_ylim(0, 1)
        ax.set_ylabel("channel weight", fontsize=7)
        ax.set_title(label, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    return fig
