"""One training run, start to finish: config -> model -> trainer -> metrics.json.

A run owns its directory. Starting the same run again: a completed run is reported, not redone;
an interrupted one resumes from ``last.pt``; a directory holding a different config is refused.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import platform
import resource
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

import torch
from omegaconf import DictConfig, OmegaConf

from attn_bench.data.loaders import build_loaders
from attn_bench.devices import resolve_device
from attn_bench.errors import ConfigError
from attn_bench.io import atomic_write_json, atomic_write_text
from attn_bench.metrics.complexity import count_params
from attn_bench.models import build_model
from attn_bench.models.backbones import resolve_stem
from attn_bench.rundir import CONFIG_FILE, LAST_CKPT, METRICS_FILE, is_completed, read_metrics
from attn_bench.training.checkpoint import load_checkpoint
from attn_bench.training.distributed import (
    DistInfo, broadcast_object, destroy_process_group, dist_info_from_env, init_process_group,
)
from attn_bench.training.optim import build_optimizer, build_scheduler
from attn_bench.training.progress import EpochProgress
from attn_bench.training.trainer import Trainer, TrainingDiverged, TrainState
from attn_bench.training.validate import per_rank_batch, validate_config, validate_sizes

log = logging.getLogger("attn_bench")



def model_from_config(cfg: DictConfig) -> torch.nn.Module:
    """The CLI's model for a composed config (``model.stem=auto`` picks by image size)."""
    m = cfg.model
    return build_model(
        m.backbone, m.attn, int(cfg.data.num_classes), stem=resolve_stem(m.stem, int(cfg.data.img_size)),
        attn_args=OmegaConf.to_container(m.attn_args, resolve=True),
        attn_stages=None if m.attn_stages is None else list(m.attn_stages),
        attn_position=m.attn_position,
        timm_kwargs=OmegaConf.to_container(m.timm_kwargs, resolve=True),
    )


def library_versions() -> dict[str, str]:
    import hydra
    import omegaconf
    import timm
    import torchvision

    import attn_bench

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "hydra": hydra.__version__, "omegaconf": omegaconf.__version__,
            "attn_bench": attn_bench.__version__}


def _comparable(cfg: DictConfig, ignore_keys: Iterable[str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}

    def walk(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if k not in set(ignore_keys)}


def _check_same_config(run_dir: Path, cfg: DictConfig, ignore_keys: Iterable[str]) -> None:
    saved = OmegaConf.load(run_dir / CONFIG_FILE)
    old, new = _comparable(saved, ignore_keys), _comparable(cfg, ignore_keys)
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
        raise ConfigError(
            f"run directory '{run_dir}' holds a run with a different config ({shown}{' ...' if len(diff) > 4 else ''}); "
            f"nothing was changed there. Start a separate run with name=<label> or another hydra.run.dir"
        )


@contextmanager
def _run_lock(run_dir: Path, enabled: bool):
    if not enabled:
        yield
        return
    handle = open(run_dir / ".lock", "w")
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


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _set_determinism(cfg: DictConfig, seed: int) -> None:
    torch.manual_seed(seed)
    import random

    random.seed(seed)
    deterministic = bool(cfg.trainer.deterministic)
    if deterministic:  # cuBLAS needs a fixed workspace to be deterministic (PyTorch's reproducibility notes)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Always set, so that one deterministic run does not leave the next one (same process) deterministic.
    # warn_only: an op without a deterministic CUDA kernel (e.g. adaptive pooling backward) warns, naming
    # itself, instead of stopping the run; on the CPU every op used here is deterministic.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = bool(cfg.trainer.cudnn_benchmark) and not deterministic


def _check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("trainer.precision=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"trainer.precision=bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16")


class _Logger:
    """TensorBoard from rank 0 (and nothing from the others): scalars, and the run's HParams row."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def __call__(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def hparams(self, hparams: dict[str, Any], results: dict[str, float]) -> None:
        """Write the HParams summaries into this run's own event file.

        ``SummaryWriter.add_hparams`` would open a new sub-run per call; writing the three
        summaries directly keeps one row per run in ``tensorboard --logdir <sweep dir>``.
        """
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        for summary in hparams_summaries(hparams, results):
            self.writer.file_writer.add_summary(summary)
        for tag, value in results.items():
            self.writer.add_scalar(tag, value)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


HPARAM_KEYS = {
    "backbone": "model.backbone", "attn": "model.attn", "attn_stages": "model.attn_stages",
    "attn_position": "model.attn_position", "dataset": "data.name", "epochs": "trainer.epochs",
    "batch_size": "trainer.batch_size", "optimizer": "trainer.optimizer.name", "lr": "trainer.optimizer.lr",
    "weight_decay": "trainer.optimizer.weight_decay", "precision": "trainer.precision", "seed": "seed",
}


def _hparams(cfg: DictConfig, metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    values = {name: OmegaConf.select(cfg, key) for name, key in HPARAM_KEYS.items()}
    values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}
    cost = metrics.get("cost", {})
    results = {"hparam/top1": metrics["final"]["top1"], "hparam/top5": metrics["final"]["top5"],
               "hparam/best_top1": metrics["best"]["top1"], "hparam/params_m": metrics["params"] / 1e6,
               "hparam/train_img_per_s": metrics["train_img_per_s"], "hparam/peak_memory_mb": metrics["peak_memory_mb"]}
    if cost:
        results.update({"hparam/gmacs": cost["gmacs"], "hparam/latency_ms": cost["latency_ms"],
                        "hparam/throughput_img_per_s": cost["throughput_img_per_s"]})
    return values, results


def _cost(cfg: DictConfig, raw_model, device: torch.device) -> dict[str, Any]:
    from attn_bench.metrics.cost import run_cost_metrics

    amp = cfg.trainer.precision if cfg.trainer.precision != "fp32" else None
    return run_cost_metrics(raw_model, int(cfg.data.img_size), device, amp_dtype=amp,
                            channels_last=bool(cfg.trainer.channels_last))


def _summary(cfg: DictConfig, state: TrainState, raw_model, device, dist: DistInfo) -> dict[str, Any]:
    last = state.history[-1] if state.history else {}
    params = count_params(raw_model)
    return {
        "status": "completed",
        "final": {"top1": last.get("eval_top1"), "top5": last.get("eval_top5"), "loss": last.get("eval_loss")},
        "best": {"top1": state.best.get("eval_top1"), "top5": state.best.get("eval_top5"),
                 "epoch": state.best.get("epoch")},
        "params": params["params"],
        "attn_params": params["attn_params"],
        "epochs": state.epoch,
        "steps": state.step,
        "wall_time_s": state.wall_time,
        "train_time_s": state.train_time,
        "train_img_per_s": sum(h["img_per_s"] * h["epoch_train_time_s"] for h in state.history)
        / max(state.train_time, 1e-9),
        "peak_memory_mb": _peak_memory_mb(device),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "world_size": dist.world_size,
        "seed": int(cfg.seed),
        "history": state.history,
    }


def run_training(cfg: DictConfig, run_dir: str | Path, ignore_keys: Iterable[str] = ()) -> dict[str, Any]:
    """Train and evaluate as ``cfg`` says, writing everything into ``run_dir``; returns metrics.json's content."""
    validate_config(cfg)
    dist = dist_info_from_env()
    if not dist.is_main:  # one voice per run: rank 0 logs, the others only warn
        logging.getLogger().setLevel(logging.WARNING)
    device = resolve_device(cfg.device, dist.local_rank if dist.enabled else None)
    _check_precision(cfg.trainer.precision, device)
    init_process_group(dist, device)
    try:
        run_dir = Path(broadcast_object(str(Path(run_dir).resolve())))
        run_dir.mkdir(parents=True, exist_ok=True)
        with _run_lock(run_dir, dist.is_main):
            return _run(cfg, run_dir, dist, device, tuple(ignore_keys))
    finally:
        destroy_process_group()


def _build(cfg: DictConfig, dist: DistInfo, device: torch.device):
    """Loaders for this rank, the model, and the model as trained (DDP-wrapped and/or compiled)."""
    t = cfg.trainer
    train_loader, eval_loader = build_loaders(cfg.data, per_rank_batch(cfg, dist.world_size), device, int(cfg.seed),
                                              bool(t.drop_last), dist.rank, dist.world_size, bool(t.channels_last))
    validate_sizes(cfg, train_loader.num_samples, dist.world_size)
    raw_model = model_from_config(cfg).to(device)
    if t.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    model = raw_model
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        model = torch.compile(model)
    return train_loader, eval_loader, raw_model, model


def _run(cfg: DictConfig, run_dir: Path, dist: DistInfo, device: torch.device, ignore_keys) -> dict[str, Any]:
    if is_completed(run_dir):
        _check_same_config(run_dir, cfg, ignore_keys)
        metrics = read_metrics(run_dir)
        log.info("already completed in %s: top-1 %.2f (nothing recomputed)", run_dir, metrics["final"]["top1"])
        return metrics
    resume = (run_dir / LAST_CKPT).exists()
    if resume:
        _check_same_config(run_dir, cfg, ignore_keys)
    elif dist.is_main:
        atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))

    _set_determinism(cfg, int(cfg.seed))
    t = cfg.trainer
    train_loader, eval_loader, raw_model, model = _build(cfg, dist, device)
    optimizer = build_optimizer(raw_model, t.optimizer)
    scheduler = build_scheduler(optimizer, t.scheduler, t.epochs, len(train_loader))

    logger = None
    state = TrainState()
    try:
        progress = EpochProgress(t.epochs) if t.progress and dist.is_main else None
        trainer = Trainer(model, optimizer, scheduler, train_loader, eval_loader, t, device, dist, run_dir,
                          on_log=lambda *a: logger(*a), progress=progress)
        if resume:
            state = trainer.load_state_dict(load_checkpoint(run_dir / LAST_CKPT), raw_model)
            log.info("resuming %s at epoch %d, batch %d (step %d)", run_dir, state.epoch + 1, state.batch, state.step)
        logger = _Logger(run_dir, dist.is_main, purge_step=state.step + 1 if resume else None)
        log.info("training %s + %s on %s for %d epochs on %s -> %s", cfg.model.backbone, cfg.model.attn,
                 cfg.data.name, t.epochs, device, run_dir)
        with progress if progress else contextlib.nullcontext():
            state = trainer.fit(state, raw_model, t.epochs)
        metrics = _summary(cfg, state, raw_model, device, dist)
        if cfg.measure_cost and dist.is_main:
            metrics["cost"] = _cost(cfg, raw_model, device)
        logger.hparams(*_hparams(cfg, metrics))
    except TrainingDiverged as err:
        _write_failure(run_dir, cfg, dist, f"diverged: {err}", step=err.step, epoch=err.epoch)
        raise ConfigError(f"training diverged: {err} (recorded in {run_dir / METRICS_FILE})") from None
    except BaseException as err:
        _write_failure(run_dir, cfg, dist, f"{type(err).__name__}: {err}", step=state.step, epoch=state.epoch)
        raise
    finally:
        if logger is not None:
            logger.close()
    metrics.update(config=OmegaConf.to_container(cfg, resolve=True), versions=library_versions(),
                   run_dir=str(run_dir))
    if dist.is_main:
        atomic_write_json(run_dir / METRICS_FILE, metrics)
        log.info("done: top-1 %.2f (best %.2f at epoch %s), %.0f img/s, %.1f s -> %s", metrics["final"]["top1"],
                 metrics["best"]["top1"], metrics["best"]["epoch"], metrics["train_img_per_s"], metrics["wall_time_s"],
                 run_dir / METRICS_FILE)
    return metrics


def _write_failure(run_dir: Path, cfg: DictConfig, dist: DistInfo, reason: str, step: int, epoch: int) -> None:
    if not dist.is_main:
        return
    atomic_write_json(run_dir / METRICS_FILE, {
        "status": "failed", "reason": reason, "failed_at": {"epoch": epoch, "step": step},
        "seed": int(cfg.seed), "config": OmegaConf.to_container(cfg, resolve=True), "versions": library_versions(),
        "run_dir": str(run_dir),
    })
