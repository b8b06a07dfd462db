"""What a run directory holds, by name, and whether the run in it has finished.

Shared by the trainer (which writes these files), the sweep launcher (which skips finished runs)
and the report (which reads them), so that none of them needs to import another.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from attn_bench.io import read_json

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
LAST_CKPT = "last.pt"
BEST_CKPT = "best.pt"


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when it is absent or unreadable (a run never half-writes it)."""
    try:
        return read_json(Path(run_dir) / METRICS_FILE)
    except (OSError, ValueError):
        return None


def is_completed(run_dir: Path) -> bool:
    metrics = read_metrics(run_dir)
    return metrics is not None and metrics.get("status") == "completed"
