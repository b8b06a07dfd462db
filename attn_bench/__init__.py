"""attn-bench: does this attention block really help this backbone on this dataset, and at what cost?"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["build_model", "__version__"]


def __getattr__(name: str) -> Any:
    """``build_model`` on first use: importing the package (every ``attn-bench`` command, even a typo or
    ``--help``) does not load torch and timm for it."""
    if name == "build_model":
        from attn_bench.models import build_model

        return build_model
    raise AttributeError(f"module 'attn_bench' has no attribute {name!r}")
