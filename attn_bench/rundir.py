"""The one contract between trainer, launcher and report: what a run directory is called, what
it holds, who may write it, and the shape of its ``metrics.json``.

A run *is* its spec (``run.json``): the resolved config, the data's identity, the block (class,
defining file, SHA-256 of its source), where the block was placed, the pretrained weights' identity
and the device type. The trainer writes it once when a run starts; every command that continues,
skips, evaluates or reports a run compares its own spec with the recorded one through
:func:`check_same_run`, which says the first difference in one line. This module holds no
knowledge of how a spec is resolved (``commands.train.spec`` does that): only what is recorded and
how two records compare.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from attn_bench.config import flatten
from attn_bench.errors import ConfigError
from attn_bench.io import atomic_write_json, atomic_write_text, read_json

OUTPUTS_ENV = "ATTN_BENCH_OUTPUTS"  # where runs, sweeps and profiles land (configs/hydra/default.yaml: the same)
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
LAST_CKPT = "last.pt"
BEST_CKPT = "best.pt"
LOCK_FILE = ".lock"
RUN_FILE = "run.json"  # the run's spec, written once at its start (see the module docstring)
LAUNCH_FILE = ".launch.json"  # what a sweep checked for a job before starting it; the job compares and removes it
# Older attn-bench versions recorded the spec in three files; they are still read (:func:`read_spec`)
DATASET_FILE = "dataset.json"
BLOCK_FILE = "block.json"
SPEC_PARTS = ("config", "data", "block", "placement", "pretrained", "device")

# Config keys that cannot change any number a run reports: they may differ between a run and its
# resumption, and between the seeds the report pools. Everything else is part of a run's identity
# (the device and data.root included: a different GPU or folder is a different measurement).
NO_EFFECT_KEYS = frozenset({"trainer.progress", "trainer.log_every_steps", "trainer.checkpoint_every_steps",
                            "trainer.checkpoint_every_minutes",
                            "data.download", "data.cache_dir", "measure_cost", "print_config"})


def dirname_for(overrides: str) -> str:
    """A directory name for a set of overrides: readable, filesystem-safe, bounded in length."""
    name = re.sub(r"[^A-Za-z0-9=,.+_@\-\[\]]", "_", overrides) or "default"
    if len(name) > 120:
        name = f"{name[:100]}-{hashlib.sha1(overrides.encode()).hexdigest()[:10]}"
    return name


# ---------------------------------------------------------------- identity and ownership

def _comparable(cfg: DictConfig) -> dict[str, Any]:
    return {k: v for k, v in flatten(OmegaConf.to_container(cfg, resolve=True)).items() if k not in NO_EFFECT_KEYS}


ELSEWHERE = "Start a separate run with name=<label> or another hydra.run.dir"


@dataclass(frozen=True)
class Difference:
    """How a recorded run differs from a spec: ``what`` completes "a run ..." ("with a different config
    (...)"), ``remedy`` says what to do instead."""

    what: str
    remedy: str = ELSEWHERE

    def refusal(self, run_dir: Path) -> str:
        return f"run directory '{run_dir}' holds a run {self.what}; nothing was changed there. {self.remedy}"


# Keys added after runs were recorded without them, with the value that reproduces what those runs did:
# a record that lacks one is read as having it (else every older result would look like another config).
ADDED_KEYS = {"model.drop_path_rate": 0.0, "trainer.clip_grad": None, "trainer.clip_mode": "norm",
              "trainer.optimizer.lr_base": None, "trainer.optimizer.lr_base_size": 256,
              "trainer.optimizer.lr_base_scale": "auto", "trainer.scheduler.step_epochs": 30,
              "trainer.scheduler.patience_epochs": 10, "trainer.accumulate_steps": 1}


def _config_difference(old: dict[str, Any], new: dict[str, Any]) -> Difference | None:
    old, new = _comparable(OmegaConf.create(old)), _comparable(OmegaConf.create(new))
    old = {**{k: v for k, v in ADDED_KEYS.items() if k not in old and k in new}, **old}
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not diff:
        return None
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
    return Difference(f"with a different config ({shown}{' ...' if len(diff) > 4 else ''})")


def _data_difference(saved: Any, identity: dict[str, Any]) -> Difference | None:
    if not isinstance(saved, dict):
        return Difference(f"with no record of the data it was trained on ({RUN_FILE}: it was made by an older "
                          f"attn-bench or by hand), so its numbers cannot be tied to this data",
                          "Start a separate run with name=<label>, or move the directory away")
    if saved == identity:
        return None
    was = f"{saved.get('root') or saved.get('name')}"
    return Difference(f"on different data ({was} -> {identity.get('root') or identity['name']}"
                      f"{', files changed' if saved.get('root') == identity.get('root') else ''})")


def _same_block(saved: Any, block: dict[str, Any]) -> bool:
    """The same block: its name, its class and its source's hash (not the file's path: a moved checkout or
    another mount is the same code)."""
    return isinstance(saved, dict) and all(saved.get(k) == block.get(k) for k in ("attn", "source_sha256")) \
        and str(saved.get("class", "")).rpartition(":")[2] == str(block.get("class", "")).rpartition(":")[2]


def _block_difference(saved: Any, block: dict[str, Any]) -> Difference | None:
    if (saved is None and "source_sha256" not in block) or _same_block(saved, block):
        return None  # absent: a built-in block by an attn-bench that did not record it, which is fine
    old = (saved or {}).get("source_sha256") or "not recorded"
    return Difference(f"of another version of block {block.get('attn')} ({block.get('source', '?')} changed: "
                      f"sha256 {old[:12]} -> {block.get('source_sha256', '?')[:12]})")


def _placement_difference(recorded: Any, current: Any) -> Difference | None:
    """A block placed or configured otherwise than this attn-bench builds the same config (a ``placement=paper``
    preset changed between versions: GAM's ratio, ECA-Net's kernel sizes). Either side unknown (an older
    record, a user's block): not compared."""
    if recorded is None or current is None:
        return None
    current = json.loads(json.dumps(current))  # as a record reads back: lists, string keys
    diff = sorted(k for k in recorded.keys() | current.keys() if recorded.get(k) != current.get(k))
    if not diff:
        return None
    shown = ", ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in diff)
    return Difference(f"whose block was built otherwise than this attn-bench builds the same config ({shown}); "
                      f"its numbers and weights belong to that build",
                      "To train this build, move the directory away or start a separate run with name=<label>")


def _pretrained_difference(recorded: Any, current: Any) -> Difference | None:
    if recorded == current:
        return None
    def words(identity: Any) -> str:
        if not isinstance(identity, dict):
            return "not recorded" if identity is None else repr(identity)
        if "sha256" in identity:
            return f"{identity.get('file')} sha256 {identity['sha256'][:12]}"
        return f"timm {identity.get('timm')} weights {identity.get('weights')}"
    return Difference(f"that started from other pretrained weights ({words(recorded)} -> {words(current)})")


def _device_difference(recorded: Any, current: Any) -> Difference | None:
    if recorded is None or current is None or recorded == current:
        return None
    return Difference(f"on another device type ({recorded} -> {current}): its timings and numerics belong to "
                      f"that device", f"Start a separate run with name=<label>, or pass device={recorded}")


_DIFFERENCES = {"config": _config_difference, "data": _data_difference, "block": _block_difference,
                "placement": _placement_difference, "pretrained": _pretrained_difference,
                "device": _device_difference}


def spec_difference(recorded: dict[str, Any], spec: dict[str, Any],
                    parts: tuple[str, ...] = SPEC_PARTS) -> Difference | None:
    """The first difference between a recorded spec and ``spec`` in ``parts``; None if none."""
    for part in parts:
        if part in spec:
            found = _DIFFERENCES[part](recorded.get(part), spec[part])
            if found:
                return found
    return None


def read_spec(run_dir: Path) -> dict[str, Any] | None:
    """The spec a run recorded at its start (``run.json``, or an older run's config.yaml, dataset.json and
    block.json, whose placement its metrics.json may hold); None for a directory without a run."""
    done = read_record(run_dir)
    spec = _read_json_or_none(run_dir, RUN_FILE)
    if not isinstance(spec, dict):
        if not (run_dir / CONFIG_FILE).exists():
            return None
        block = _read_json_or_none(run_dir, BLOCK_FILE)
        spec = {"config": OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG_FILE)),
                "data": _read_json_or_none(run_dir, DATASET_FILE), "block": block, "pretrained": None, "device": None,
                "placement": block.get("placement") if isinstance(block, dict) else None, "legacy": True}
    if done is not None and done.placement:  # a finished run: the placement its results are reported under
        spec["placement"] = done.placement
    return spec


def _read_json_or_none(run_dir: Path, name: str) -> Any:
    try:
        return read_json(run_dir / name)
    except (OSError, ValueError):
        return None


def outputs_root() -> Path:
    """``$ATTN_BENCH_OUTPUTS``, or ``outputs`` in the working directory."""
    return Path(os.environ.get(OUTPUTS_ENV) or "outputs")


def check_same_run(run_dir: Path, spec: dict[str, Any]) -> None:
    """The run in ``run_dir`` is the run ``spec`` describes (every part ``spec`` has), or a one-line refusal."""
    found = spec_difference(read_spec(run_dir) or {}, spec)
    if found:
        raise ConfigError(found.refusal(run_dir))


def recorded_placement(run_dir: Path) -> dict[str, Any] | None:
    """Where the run's block went, as recorded: metrics.json, or for an unfinished run its start."""
    return (read_spec(run_dir) or {}).get("placement")


def check_same_placement(run_dir: Path, recorded: dict[str, Any] | None, current: dict[str, Any] | None) -> None:
    found = _placement_difference(recorded, current)
    if found:
        raise ConfigError(found.refusal(run_dir))


def start_run(run_dir: Path, cfg: DictConfig, spec: dict[str, Any]) -> None:
    """Record what a new run is: its resolved config (config.yaml, for people) and its spec (run.json)."""
    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_json(run_dir / RUN_FILE, spec)
    for name in (DATASET_FILE, BLOCK_FILE):  # an older attn-bench's records of a run started afresh here
        (run_dir / name).unlink(missing_ok=True)


@contextmanager
def run_lock(run_dir: Path, enabled: bool = True):
    """Hold the run directory for this process; a second process on it is refused in one line."""
    if not enabled:
        yield
        return
    handle = open(run_dir / LOCK_FILE, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"run directory '{run_dir}' is in use by another attn-bench process") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


# ---------------------------------------------------------------- metrics.json

@dataclass
class RunRecord:
    """``metrics.json``: a completed run's results, or why and where a run failed.

    ``config`` is the resolved config; ``final``/``best`` hold ``top1``/``top5`` (and ``loss`` or
    ``epoch``); ``cost`` is :func:`attn_bench.metrics.cost.run_cost_metrics`' dict; ``history``
    one dict per epoch. Fields that do not apply to the status are left out of the file.
    """

    status: str  # completed | failed | interrupted (Ctrl-C: the same command resumes it)
    config: dict[str, Any]
    seed: int
    run_dir: str
    versions: dict[str, str] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    final_ema: dict[str, Any] | None = None  # the same for the EMA weights (trainer.ema.enabled)
    best_ema: dict[str, Any] | None = None
    params: int | None = None
    attn_params: int | None = None
    epochs: int | None = None
    steps: int | None = None
    wall_time_s: float | None = None
    train_time_s: float | None = None
    train_img_per_s: float | None = None
    peak_memory_mb: float | None = None
    device: str | None = None
    world_size: int | None = None
    history: list[dict[str, Any]] | None = None
    data: dict[str, Any] | None = None  # attn_bench.data.identity: name, root, fingerprint
    block: dict[str, Any] | None = None  # attention.block_identity: attn, class, source, source_sha256
    placement: dict[str, Any] | None = None  # models.presets.Placement.as_record: where the block went
    pretrained: dict[str, Any] | None = None  # models.pretrained.pretrained_identity: the weights it started from
    skipped_files: int | None = None  # unreadable images left out (data.skip_corrupt=true)
    images: dict[str, int] | None = None  # the images each split had: {"train": n, "test": m}
    cost: dict[str, Any] | None = None
    reason: str | None = None  # failed runs
    failed_at: dict[str, int] | None = None
    resumed_from: list[dict[str, int]] | None = None  # each resume's epochs done, batch and step

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any) -> "RunRecord":
        """Raises ``ValueError`` for anything that is not a metrics.json object with a status and config."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if not isinstance(data.get("status"), str) or not isinstance(data.get("config"), dict):
            raise ValueError("no 'status' or 'config'")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{"seed": data.get("seed"), "run_dir": data.get("run_dir", ""),
                      **{k: v for k, v in data.items() if k in names}})

    def write(self, run_dir: Path) -> Path:
        return atomic_write_json(Path(run_dir) / METRICS_FILE, self.to_dict())


def load_record(run_dir: Path) -> RunRecord:
    """The run's record; ``OSError`` when absent, ``ValueError`` when it is not a valid record."""
    return RunRecord.from_dict(read_json(Path(run_dir) / METRICS_FILE))


def read_record(run_dir: Path) -> RunRecord | None:
    """The run's record, or None when it is absent or unreadable (a run never half-writes it)."""
    try:
        return load_record(run_dir)
    except (OSError, ValueError):
        return None


def is_completed(run_dir: Path) -> bool:
    record = read_record(run_dir)
    return record is not None and record.completed
