"""A run's spec, resolved once from its config before anything runs (see :mod:`attn_bench.rundir`).

    spec = resolve_spec(cfg, device)            # checks the config, identifies block, weights, placement
    spec["data"] = dataset_identity(cfg.data)   # once the data is there (data.download fetches it first)

Training, every launcher's pre-check, resume, ``eval`` and ``visualize`` use this one resolution and
compare through :func:`attn_bench.rundir.check_same_run`; nothing else assembles a run's identity.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from attn_bench.attention import block_identity
from attn_bench.commands.train.checks import validate_config
from attn_bench.io import atomic_write_json, read_json
from attn_bench.models.pretrained import pretrained_identity
from attn_bench.rundir import LAUNCH_FILE, spec_difference
from attn_bench.training.optim import resolve_lr

# what a sweep decides for its jobs at launch (the data is fingerprinted where it is, and the device
# is the job's: a login node has no GPU)
LAUNCH_PARTS = ("config", "block", "placement", "pretrained")


def resolve_spec(cfg: DictConfig, device: torch.device | None = None) -> dict[str, Any]:
    """Every check a job runs before it builds anything, and what the run is: config, block (its
    source's hash decided here, once), placement, pretrained weights, device type."""
    placement = validate_config(cfg)
    resolve_lr(cfg.trainer)  # lr_base -> lr, before the config becomes the run's identity
    spec = {"config": OmegaConf.to_container(cfg, resolve=True), "block": block_identity(cfg.model.attn),
            "placement": placement, "pretrained": pretrained_identity(cfg.model)}
    if device is not None:
        spec["device"] = device.type
    return spec


def expect_at_launch(run_dir: Path, spec: dict[str, Any]) -> None:
    """Written by a sweep for each job it starts: the job refuses to run anything else."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / LAUNCH_FILE, {part: spec[part] for part in LAUNCH_PARTS})


def launch_difference(run_dir: Path, spec: dict[str, Any]) -> str | None:
    """For a job started by a sweep: why it is not exactly what the sweep checked (its config composed
    with the sweep's search path, its block's source as hashed at launch), in one line; None when it
    is, or when no sweep started it. The expectation is used once."""
    path = run_dir / LAUNCH_FILE
    if not path.exists():
        return None
    try:
        expected = read_json(path)
    except (OSError, ValueError):
        expected = None
    path.unlink(missing_ok=True)
    found = spec_difference(expected, spec, LAUNCH_PARTS) if isinstance(expected, dict) else None
    if not found:
        return None
    return (f"this job is not the run its sweep checked at launch (it would be a run {found.what}); nothing was "
            f"trained. Run the sweep again to check and start it afresh")
