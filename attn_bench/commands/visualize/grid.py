"""The heatmap grid: the input images with their labels on top, then one row per run with the CAM
over each image and the predicted class and confidence. Drawn with matplotlib's ``Figure`` (no
pyplot state), saved as a 300-dpi PNG and a vector PDF."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attn_bench.io import atomic_write_with

PNG_DPI = 300
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
            ax.imshow(row.cams[j].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
            right = int(pred[j]) == int(labels[j])
            ax.set_title(f"{names[int(pred[j])]} {100 * conf[j]:.0f}%", fontsize=6,
                         color="black" if right else "#b00000", fontweight="normal" if right else "bold")
        axes[i, 0].set_ylabel(row.label, fontsize=6, rotation=0, ha="right", va="center", wrap=True)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def save(fig, stem: Path) -> list[Path]:
    png = atomic_write_with(stem.with_suffix(".png"), lambda f: fig.savefig(f, format="png", dpi=PNG_DPI))
    pdf = atomic_write_with(stem.with_suffix(".pdf"), lambda f: fig.savefig(f, format="pdf"))
    return [png, pdf]


def as_array(fig) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 image at screen resolution (for TensorBoard)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(100)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
