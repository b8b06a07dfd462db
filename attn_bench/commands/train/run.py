"""One training run, start to finish: config -> model -> data -> trainer -> metrics.json.

A run owns its directory. Starting the same run again: a completed run is reported, not redone;
an interrupted one resumes from ``last.pt``; a directory holding a different config is refused.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from attn_bench.attention.user import error_in_file
from attn_bench.commands.train.records import completed_record, failed_record, hparams
from attn_bench.commands.train.spec import launch_difference, resolve_spec
from attn_bench.data.identity import dataset_identity
from attn_bench.data.loaders import build_loaders
from attn_bench.devices import resolve_device
from attn_bench.errors import ConfigError
from attn_bench.metrics.cost import run_cost_metrics
from attn_bench.models import model_from_config
from attn_bench.precision import Precision, resolve_precision
from attn_bench.rundir import LAST_CKPT, METRICS_FILE, RunRecord, check_same_run, read_record, run_lock, start_run
from attn_bench.training.checkpoint import load_checkpoint
from attn_bench.training.determinism import seed_everything
from attn_bench.training.distributed import (
    DistInfo, broadcast_object, destroy_process_group, dist_info_from_env, init_process_group,
)
from attn_bench.models.pretrained import apply_pretrained
from attn_bench.training import preemption
from attn_bench.training.logger import TensorBoardLogger
from attn_bench.training.optim import build_optimizer, build_scheduler
from attn_bench.training.progress import EpochProgress
from attn_bench.training.trainer import Trainer, TrainingDiverged, TrainState, updates_per_epoch
from attn_bench.training.validate import check_sizes, per_rank_batch

log = logging.getLogger("attn_bench")


def run_training(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train and evaluate as ``cfg`` says, writing everything into ``run_dir``; returns metrics.json's content."""
    dist = dist_info_from_env()
    if not dist.is_main:  # one voice per run: rank 0 logs, the others only warn
        logging.getLogger().setLevel(logging.WARNING)
    spec = resolve_spec(cfg)  # every check, and what the run is, before anything is built
    device = resolve_device(cfg.device, dist.local_rank if dist.enabled else None)
    precision = resolve_precision(cfg.trainer.precision, device)  # once: the trainer and the cost figures use it
    spec["device"] = device.type
    init_process_group(dist, device)
    preemption.install()  # in a submitit job: checkpoint first when SLURM's time-limit signal comes
    try:
        spec = broadcast_object(spec)  # rank 0's: every rank agrees on the block's source hash and the weights'
        run_dir = Path(broadcast_object(str(Path(run_dir).resolve())))
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create the run directory '{run_dir}': {err.strerror or err}") from None
        with run_lock(run_dir, dist.is_main):
            return _run(cfg, run_dir, dist, device, precision, spec).to_dict()
    finally:
        preemption.uninstall()
        destroy_process_group()


def _build(cfg: DictConfig, dist: DistInfo, device: torch.device):
    """Loaders for this rank, the model, its placement, and the model as trained (DDP-wrapped and/or compiled)."""
    t = cfg.trainer
    train_loader, eval_loader = build_loaders(cfg.data, per_rank_batch(t, dist.world_size), device, int(cfg.seed),
                                              bool(t.drop_last), dist.rank, dist.world_size, bool(t.channels_last))
    check_sizes(t, train_loader.num_samples, dist.world_size)
    if t.limit_batches is not None:  # debug=fast: a few batches; the record says so, the report leaves it out
        train_loader.limit = eval_loader.limit = int(t.limit_batches)
    raw_model, placement = model_from_config(cfg.model, cfg.data.num_classes, cfg.data.img_size)
    apply_pretrained(cfg.model, raw_model)  # model.pretrained / pretrained_file (a resume then loads last.pt)
    raw_model = raw_model.to(device)
    if t.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    model = raw_model
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if t.compile:
        model = torch.compile(model)
    return train_loader, eval_loader, raw_model, placement, model


def _ema(t: DictConfig, raw_model):
    """timm's ModelEmaV3 of the network (a copy on the same device), or None."""
    if not t.ema.enabled:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(raw_model, decay=float(t.ema.decay), use_warmup=bool(t.ema.warmup))


def _measure_cost(cfg: DictConfig, raw_model, device: torch.device, precision: Precision) -> dict[str, Any]:
    """The end-of-run cost figures, timed with the precision and memory format the run trained with."""
    return run_cost_metrics(raw_model, int(cfg.data.img_size), device, amp_dtype=precision.amp_dtype,
                            channels_last=bool(cfg.trainer.channels_last))


def _on_rank0(dist: DistInfo, compute, *args) -> Any:
    """``compute(*args)`` taken once (rank 0) and shared, so every rank agrees (the data's
    fingerprint, the block's source hash)."""
    return broadcast_object(compute(*args) if dist.is_main else None)


def _run(cfg: DictConfig, run_dir: Path, dist: DistInfo, device: torch.device, precision: Precision,
         spec: dict[str, Any]) -> RunRecord:
    problem = _on_rank0(dist, launch_difference, run_dir, spec)  # a sweep's job: what the sweep checked
    if problem:
        raise ConfigError(problem)
    done = read_record(run_dir)
    resume = (run_dir / LAST_CKPT).exists()
    if (done is not None and done.completed) or resume:
        spec = {**spec, "data": _on_rank0(dist, dataset_identity, cfg.data)}
        check_same_run(run_dir, spec)
        if done is not None and done.completed:
            log.info("already completed in %s: top-1 %.2f (nothing recomputed)", run_dir, done.final["top1"])
            return done

    t = cfg.trainer
    seed_everything(int(cfg.seed), bool(t.deterministic), bool(t.cudnn_benchmark))
    train_loader, eval_loader, raw_model, placement, model = _build(cfg, dist, device)
    if not resume:  # fingerprinted after the loaders exist: data.download=true has fetched the files by now
        spec = {**spec, "data": _on_rank0(dist, dataset_identity, cfg.data),
                "placement": placement}
        if dist.is_main:
            start_run(run_dir, cfg, spec)
    if train_loader.skipped + eval_loader.skipped:
        log.warning("left out %d unreadable image(s) (data.skip_corrupt=true); metrics.json counts them",
                    train_loader.skipped + eval_loader.skipped)
    optimizer = build_optimizer(raw_model, t.optimizer)
    scheduler = build_scheduler(optimizer, t.scheduler, t.epochs,
                                updates_per_epoch(len(train_loader), int(t.accumulate_steps)))
    checkpoint = load_checkpoint(run_dir / LAST_CKPT) if resume else None
    logger = TensorBoardLogger(run_dir, dist.is_main, purge_step=checkpoint["step"] + 1 if resume else None)
    state = TrainState()
    try:
        progress = EpochProgress(t.epochs) if t.progress and dist.is_main else None
        trainer = Trainer(model, optimizer, scheduler, train_loader, eval_loader, t, device, dist, run_dir,
                          precision=precision, on_log=logger, progress=progress, ema=_ema(t, raw_model),
                          num_classes=int(cfg.data.num_classes), seed=int(cfg.seed))
        if resume:
            state = trainer.load_state_dict(checkpoint, raw_model)
            state.resumes.append({"epoch": state.epoch, "batch": state.batch, "step": state.step})
            log.info("resuming %s at epoch %d, batch %d (step %d)", run_dir, state.epoch + 1, state.batch, state.step)
        log.info("training %s + %s on %s for %d epochs on %s -> %s", cfg.model.backbone, cfg.model.attn,
                 cfg.data.name, t.epochs, device, run_dir)
        with progress if progress else contextlib.nullcontext():
            state = trainer.fit(state, raw_model, t.epochs)
        record = completed_record(cfg, state, raw_model, placement, device, dist, run_dir)
        record.data, record.block, record.pretrained = spec["data"], spec["block"], spec["pretrained"]
        record.skipped_files = train_loader.skipped + eval_loader.skipped
        record.images = {"train": int(train_loader.size), "test": int(eval_loader.size)}
        if cfg.measure_cost and dist.is_main:
            record.cost = _measure_cost(cfg, raw_model, device, precision)
        logger.hparams(*hparams(cfg, record))
    except TrainingDiverged as err:
        _record_failure(cfg, run_dir, dist, f"diverged: {err}", step=err.step, epoch=err.epoch)
        raise ConfigError(f"training diverged: {err} (recorded in {run_dir / METRICS_FILE})") from None
    except preemption.Preempted as err:
        _record_failure(cfg, run_dir, dist, f"preempted: {err}; the requeued job resumes from it",
                        step=err.step, epoch=err.epoch)
        log.warning("%s; handing over to the scheduler to requeue this job", err)
        logger.close()
        preemption.hand_over(dist.is_main)
    except KeyboardInterrupt:
        _record_failure(cfg, run_dir, dist, "interrupted (Ctrl-C); the same command resumes it from its last checkpoint",
                        step=state.step, epoch=state.epoch, status="interrupted")
        raise
    except BaseException as err:
        _record_failure(cfg, run_dir, dist, f"{type(err).__name__}: {err}", step=state.step, epoch=state.epoch)
        source = spec["block"].get("source")
        inside = error_in_file(Path(source), err) if source and isinstance(err, Exception) else None
        if inside:  # the user's own block failed: their file and line, not a traceback through ours
            raise ConfigError(f"block {cfg.model.attn} failed at step {state.step} (epoch {state.epoch + 1}): "
                              f"{inside} (recorded in {run_dir / METRICS_FILE})") from None
        raise
    finally:
        logger.close()
    if dist.is_main:
        record.write(run_dir)
        log.info("done: top-1 %.2f (best %.2f at epoch %s), %.0f img/s, %.1f s -> %s", record.final["top1"],
                 record.best["top1"], record.best["epoch"], record.train_img_per_s, record.wall_time_s,
                 run_dir / METRICS_FILE)
    return record


def _record_failure(cfg: DictConfig, run_dir: Path, dist: DistInfo, reason: str, step: int, epoch: int,
                    status: str = "failed") -> None:
    if not dist.is_main:
        return
    try:
        failed_record(cfg, run_dir, reason, step=step, epoch=epoch, status=status).write(run_dir)
    except (OSError, ConfigError) as err:  # e.g. the disk that stopped the run is still full
        log.warning("could not record the failure in %s: %s", run_dir / METRICS_FILE, err)
