"""``attn-bench [overrides]``: one training run (or, with ``-m``, a sweep of them).

``run_training`` and ``validate_config`` are imported on first use (PEP 562): ``attn-bench --help`` and
completion reach this package's ``app`` without torch and timm."""
from __future__ import annotations

from typing import Any

__all__ = ["run_training", "validate_config"]


def __getattr__(name: str) -> Any:
    if name == "run_training":
        from attn_bench.commands.train.run import run_training
        return run_training
    if name == "validate_config":
        from attn_bench.commands.train.checks import validate_config
        return validate_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
