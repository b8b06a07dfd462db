"""Checkpoints: written atomically, read with ``weights_only=True``, RNG states included."""
from __future__ import annotations

import random
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from attn_bench.attention.registry import get_block_class, is_builtin
from attn_bench.attention.user import class_source, is_file_spec, only_vouched
from attn_bench.errors import ConfigError, check
from attn_bench.io import atomic_write_with, file_sha256
from attn_bench.models import model_as_recorded
from attn_bench.rundir import RUN_FILE, check_same_placement, read_spec, recorded_placement


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


def load_weights(model: torch.nn.Module, path: Path, ema: bool = False) -> dict[str, Any]:
    """Give ``model`` the weights of the checkpoint at ``path`` (``ema``: the EMA weights it holds), or one
    line saying why not; returns the checkpoint, read once, for its other fields (epoch, step)."""
    checkpoint = load_checkpoint(path)
    if ema and "ema" not in checkpoint:
        raise ConfigError(f"{path}: holds no EMA weights (the run trained with trainer.ema.enabled=false); "
                          f"evaluate it without --ema")
    weights = ({k.removeprefix("module."): v for k, v in checkpoint["ema"].items()} if ema  # timm's ModelEmaV3
               else checkpoint["model"])
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise ConfigError(f"{path}: does not match the run's config "
                          f"({(lines[1] if len(lines) > 1 else lines[0]).strip()})") from None
    return checkpoint


TRUST_HINT = "pass --trust-block to use it as it is now"


def _would_import(attn: str) -> str:
    where = attn.rpartition(":")[0]
    return f"the file {Path(where).expanduser().absolute()}" if is_file_spec(where) else f"the module {where}"


def recorded_block(run_dir: Path, model_cfg, trust_block: bool = False):
    """(the model config naming the block source the run recorded, a context in which only that source's
    recorded bytes may run). A results folder never makes attn-bench import code its record does not
    vouch for: a block whose source is unrecorded, changed or gone is refused in one line naming the
    file and both hashes, unless ``trust_block`` (then the code as it is now is used)."""
    attn = str(model_cfg.attn)
    if is_builtin(attn):
        return model_cfg, nullcontext()
    block = (read_spec(run_dir) or {}).get("block")
    if not isinstance(block, dict) or block.get("attn") != attn or not block.get("source_sha256"):
        if trust_block:
            return model_cfg, nullcontext()
        recorded = f"records block {block.get('attn')}" if isinstance(block, dict) and block.get("attn") != attn \
            else "records no hash of its source"
        raise ConfigError(f"{run_dir}: its config names block {attn} but its {RUN_FILE} {recorded}; attn-bench would "
                          f"import {_would_import(attn)}, code this run's record does not vouch for. If you trust it, "
                          f"{TRUST_HINT}")
    sha, (where, _, name) = block["source_sha256"], str(block.get("class", attn)).rpartition(":")
    if not is_file_spec(where):  # an installed module: imported, then held against the record
        now = class_source(get_block_class(attn))[1]
        check(now == sha or trust_block, f"{run_dir}: block {attn} was trained from sha256 {sha[:12]}; the module's "
                                         f"file {block.get('source')} has sha256 {str(now)[:12]} now. Restore the "
                                         f"trained version, or {TRUST_HINT}")
        return model_cfg, nullcontext()
    source = Path(block["source"])
    now = file_sha256(source) if source.is_file() else None
    if now != sha:
        state = f"has sha256 {now[:12]} now" if now else "is gone"
        check(trust_block, f"{run_dir}: block {attn} was trained from {source} (sha256 {sha[:12]}); that file {state}. "
                           f"Restore the trained version, or {TRUST_HINT}")
        return (model_cfg, nullcontext()) if now is None else (_naming(model_cfg, f"{source}:{name}"), nullcontext())
    return _naming(model_cfg, f"{source}:{name}"), only_vouched(source, sha)


def _naming(model_cfg, attn: str):
    named = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    named.attn = attn
    return named


def load_run_model(run_dir: Path, model_cfg, num_classes: int, img_size: int, path: Path, trust_block: bool = False,
                   ema: bool = False):
    """(model, checkpoint): the network the run in ``run_dir`` trained (its block from the recorded source,
    its placement as recorded, should this attn-bench now build its config otherwise), with the weights
    of the checkpoint at ``path``."""
    model_cfg, vouched = recorded_block(run_dir, model_cfg, trust_block)
    recorded = recorded_placement(run_dir)
    with vouched:
        model, placement = model_as_recorded(model_cfg, num_classes, img_size, recorded)
    check_same_placement(run_dir, recorded, placement)
    return model, load_weights(model, path, ema)


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
