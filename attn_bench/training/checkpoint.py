"""Checkpoints: written atomically, read with ``weights_only=True``, RNG states included."""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch

from attn_bench.errors import ConfigError
from attn_bench.io import atomic_write_with
from attn_bench.models import model_as_recorded
from attn_bench.rundir import check_same_placement, recorded_placement


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def copy_checkpoint(source: Path, target: Path) -> None:
    with open(source, "rb") as src:
        atomic_write_with(target, lambda dst: shutil.copyfileobj(src, dst))


def load_weights(model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Give ``model`` the weights of the checkpoint at ``path`` (or one line saying why not); returns
    the checkpoint, read once, for its other fields (epoch, step)."""
    checkpoint = load_checkpoint(path)
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise ConfigError(f"{path}: does not match the run's config "
                          f"({(lines[1] if len(lines) > 1 else lines[0]).strip()})") from None
    return checkpoint


def load_run_model(run_dir: Path, model_cfg, num_classes: int, img_size: int, path: Path):
    """(model, checkpoint): the network the run in ``run_dir`` trained (as recorded, should this
    attn-bench now build its config otherwise), with the weights of the checkpoint at ``path``."""
    recorded = recorded_placement(run_dir)
    model = model_as_recorded(model_cfg, num_classes, img_size, recorded)
    check_same_placement(run_dir, recorded, getattr(model, "attn_bench_placement", None))
    return model, load_weights(model, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(
            f"checkpoint '{path}' is corrupt or not an attn-bench checkpoint ({type(err).__name__}); "
            f"move it away to start this run afresh"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ConfigError(f"checkpoint '{path}' is not an attn-bench checkpoint; move it away to start afresh")
    return state
