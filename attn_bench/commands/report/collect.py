"""Finding and reading runs for the report: completed runs, and the problem runs listed beside them."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from attn_bench.errors import check
from attn_bench.models.labels import row_key
from attn_bench.rundir import CONFIG_FILE, LAST_CKPT, METRICS_FILE, RunRecord, load_record


@dataclass(frozen=True)
class Problem:
    """A run that is not in the table: failed, still running, interrupted, or unreadable."""

    path: Path
    status: str
    block: str
    seed: Any
    reason: str


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) that hold a run; hidden folders are skipped."""
    found = {p.parent for name in (METRICS_FILE, CONFIG_FILE) for p in root.rglob(name)}
    return sorted(d for d in found if not any(part.startswith(".") for part in d.relative_to(root).parts))


def _read_config_yaml(path: Path) -> dict[str, Any] | None:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # a half-written or hand-edited file: the run is listed with '?' instead
        return None


def _block_and_seed(config: Any) -> tuple[str, Any]:
    config = config if isinstance(config, dict) else {}
    return str((config.get("model") or {}).get("attn", "?")), config.get("seed", "?")


def _has_row_keys(record: RunRecord) -> bool:
    try:
        row_key(record.config)
    except (KeyError, TypeError, AttributeError):
        return False
    return True


def contradiction(record: RunRecord) -> str | None:
    """Where a completed record disagrees with its own history (a hand-edited or damaged metrics.json):
    its final and best results are copies of history entries, so any difference means the file is not
    what the run wrote."""
    history = record.history if isinstance(record.history, list) else []
    if not history or not all(isinstance(h, dict) and is_number(h.get("eval_top1")) for h in history):
        return "no per-epoch history to check its results against"
    final, best = record.final or {}, record.best or {}
    if final.get("top1") != history[-1]["eval_top1"]:
        return f"final top-1 {final.get('top1')} but its last epoch's {history[-1]['eval_top1']}"
    top = max(h["eval_top1"] for h in history)
    at = [h.get("epoch") for h in history if h["eval_top1"] == best.get("top1")]
    if best.get("top1") != top or best.get("epoch") not in at:
        return f"best top-1 {best.get('top1')} (epoch {best.get('epoch')}) but its history's best is {top}"
    if record.final_ema is not None and record.final_ema.get("top1") != history[-1].get("ema_eval_top1"):
        return f"final EMA top-1 {record.final_ema.get('top1')} but its last epoch's {history[-1].get('ema_eval_top1')}"
    if record.epochs is not None and record.epochs != len(history):
        return f"{record.epochs} epochs but {len(history)} in its history"
    return None


def load_run(path: Path) -> RunRecord | Problem:
    """The record of a completed run (``run_dir`` set to where it was found), or why it is left out."""
    if not (path / METRICS_FILE).exists():
        block, seed = _block_and_seed(_read_config_yaml(path / CONFIG_FILE))
        state = f"checkpoint {LAST_CKPT} present" if (path / LAST_CKPT).exists() else "no checkpoint yet"
        return Problem(path, "incomplete", block, seed, f"no {METRICS_FILE}: in progress or interrupted ({state})")
    try:
        record = load_record(path)
    except (OSError, ValueError) as err:
        return Problem(path, "unreadable", "?", "?", f"{METRICS_FILE}: {err}")
    block, seed = _block_and_seed(record.config)
    if record.status in ("failed", "interrupted"):
        where = record.failed_at or {}
        return Problem(path, record.status, block, seed,
                       f"{record.reason or '?'} (epoch {where.get('epoch', '?')}, step {where.get('step', '?')})")
    if not record.completed or not is_number((record.final or {}).get("top1")):
        return Problem(path, str(record.status), block, seed,
                       f"{METRICS_FILE} has status {record.status!r} and no final top-1")
    if ((record.config.get("trainer") or {}).get("limit_batches")) is not None:
        return Problem(path, "debug", block, seed, "trainer.limit_batches is set (debug=fast): a few batches, "
                                                   "not comparable")
    wrong = contradiction(record)
    if wrong:
        return Problem(path, "corrupt", block, seed, f"{METRICS_FILE} contradicts itself ({wrong}); not reported")
    if not _has_row_keys(record):
        return Problem(path, "unreadable", block, seed, f"{METRICS_FILE} has no config.model.backbone/attn or data.name")
    record.run_dir = str(path)
    return record


def collect_runs(dirs: Iterable[Path]) -> tuple[list[RunRecord], list[Problem]]:
    """Completed runs and problem runs under all ``dirs`` (each run once, however often it is reached)."""
    completed, problems, seen = [], [], set()
    for root in dirs:
        check(root.is_dir(), f"report: '{root}' is not a directory")
        paths = run_dirs(root)
        check(bool(paths), f"report: no runs found in '{root}' (no {METRICS_FILE} or {CONFIG_FILE} below it)")
        for path in (p for p in paths if p.resolve() not in seen):
            seen.add(path.resolve())
            run = load_run(path)
            (problems if isinstance(run, Problem) else completed).append(run)
    return completed, problems
