"""Figures for papers: every PDF embeds its fonts as TrueType (Type 42); IEEE and ACM PDF checks
reject the Type 3 fonts matplotlib writes by default."""
from __future__ import annotations

from pathlib import Path

from attn_bench.io import atomic_write_with

PDF_FONTS = {"pdf.fonttype": 42, "ps.fonttype": 42}

# Print widths of a two-column paper (IEEE: 3.5 in a column, 7.16 in the text; ACM: 3.33 / 7.0): a figure
# is drawn at the width it is printed at, so that its 8-pt text stays 8 pt on paper.
COLUMN_WIDTH_IN = 3.5
PAGE_WIDTH_IN = 7.0
FONT_PT = 8  # the smallest text journals accept after scaling


def text_width_in(text: str, pt: float = FONT_PT, bold: bool = False) -> float:
    """How wide ``text`` is printed in matplotlib's default font, in inches (measured, not estimated)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    font = FontProperties(size=pt, weight="bold" if bold else "normal")
    return TextToPath().get_text_width_height_descent(text, font, ismath=False)[0] / 72


def wrap(text: str, width_in: float, pt: float = FONT_PT, bold: bool = False) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``pt`` points: at spaces; a word wider
    than a line after ``:@/_,=`` (``my_gate.py:`` | ``MyGate@`` | ``1a2b3c4d``), else where it must."""
    import re

    def fits(line: str) -> bool:
        return text_width_in(line, pt, bold) <= width_in

    pieces = []  # (piece, joined to the one before by a space)
    for word in text.split():
        parts = [word] if fits(word) else [p for p in re.split(r"(?<=[:@/_,=])", word) if p]
        spaced = True
        for part in parts:
            while len(part) > 1 and not fits(part):  # broken within: the longest head that fits
                cut = max([i for i in range(1, len(part)) if fits(part[:i])] or [1])
                pieces.append((part[:cut], spaced))
                part, spaced = part[cut:], False
            pieces.append((part, spaced))
            spaced = False
    lines: list[str] = []
    for piece, spaced in pieces:
        joined = lines and f"{lines[-1]}{' ' if spaced else ''}{piece}"
        if joined and fits(joined):
            lines[-1] = joined
        else:
            lines.append(piece)
    return "\n".join(lines)


def save_pdf(fig, path: Path, **savefig_kwargs) -> Path:
    """``fig`` as a vector PDF at ``path`` (atomically), fonts embedded as TrueType."""
    import matplotlib

    with matplotlib.rc_context(PDF_FONTS):  # read when the PDF is written; nothing global is left changed
        return atomic_write_with(path, lambda f: fig.savefig(f, format="pdf", **savefig_kwargs))


PNG_DPI = 300


def save_png_and_pdf(fig, stem: Path, **savefig_kwargs) -> list[Path]:
    """``stem``.png at 300 dpi (slides, the README) and ``stem``.pdf (papers), both written atomically."""
    png = atomic_write_with(stem.with_suffix(".png"),
                            lambda f: fig.savefig(f, format="png", dpi=PNG_DPI, **savefig_kwargs))
    return [png, save_pdf(fig, stem.with_suffix(".pdf"), **savefig_kwargs)]


TICKS_UP_TO = 20  # classes; beyond, the axes are left without per-class tick labels


def confusion_figure(counts: list[list[int]], title: str, stem: Path) -> list[Path]:
    """The confusion matrix as ``stem``.png (300 dpi) and .pdf: each row (a true class) normalised to the share
    of its images, a colour scale from 0 to 1. Needs matplotlib (the ``report`` extra)."""
    import numpy as np
    from matplotlib.figure import Figure

    matrix = np.asarray(counts, dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    k = len(counts)
    fig = Figure(figsize=(3.5, 3.1), layout="constrained")  # one column of a two-column paper
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("share of the true class", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    if k <= TICKS_UP_TO:
        ax.set_xticks(range(k)), ax.set_yticks(range(k))
    ax.set_title(wrap(title, COLUMN_WIDTH_IN - 0.1), fontsize=FONT_PT)
    for item in [ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()]:
        item.set_fontsize(8)
    return save_png_and_pdf(fig, stem)
