"""Figures for papers: every PDF embeds its fonts as TrueType (Type 42); IEEE and ACM PDF checks
reject the Type 3 fonts matplotlib writes by default."""
from __future__ import annotations

from pathlib import Path

from attn_bench.io import atomic_write_with

PDF_FONTS = {"pdf.fonttype": 42, "ps.fonttype": 42}


def save_pdf(fig, path: Path, **savefig_kwargs) -> Path:
    """``fig`` as a vector PDF at ``path`` (atomically), fonts embedded as TrueType."""
    import matplotlib

    with matplotlib.rc_context(PDF_FONTS):  # read when the PDF is written; nothing global is left changed
        return atomic_write_with(path, lambda f: fig.savefig(f, format="pdf", **savefig_kwargs))
