"""What a run records: its metrics.json (:class:`~attn_bench.rundir.RunRecord`) and its HParams row."""
from __future__ import annotations

import platform
import resource
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from attn_bench.attention import block_defaults, is_baseline
from attn_bench.attention.user import hash_tag
from attn_bench.metrics.complexity import count_params
from attn_bench.rundir import RunRecord
from attn_bench.training.distributed import DistInfo
from attn_bench.training.trainer import TrainState

HPARAM_KEYS = {  # every setting that tells two runs of a sweep apart
    "backbone": "model.backbone", "timm_kwargs": "model.timm_kwargs", "stem": "model.stem", "attn": "model.attn",
    "attn_args": "model.attn_args", "attn_stages": "model.attn_stages", "attn_position": "model.attn_position",
    "img_size": "data.img_size", "dataset": "data.name", "epochs": "trainer.epochs",
    "batch_size": "trainer.batch_size", "accumulate_steps": "trainer.accumulate_steps", "optimizer": "trainer.optimizer.name", "lr": "trainer.optimizer.lr",
    "weight_decay": "trainer.optimizer.weight_decay", "precision": "trainer.precision", "ema": "trainer.ema.enabled", "ema_decay": "trainer.ema.decay", "seed": "seed",
    "label_smoothing": "trainer.label_smoothing", "clip_grad": "trainer.clip_grad", "clip_mode": "trainer.clip_mode",
    "drop_path_rate": "model.drop_path_rate", "scheduler": "trainer.scheduler.name",
    "warmup_epochs": "trainer.scheduler.warmup_epochs", "lr_base": "trainer.optimizer.lr_base",
    "augment": "data.augment", "random_erasing": "data.random_erasing", "crop_padding": "data.crop_padding",
    "mixup_alpha": "trainer.mixup.mixup_alpha", "cutmix_alpha": "trainer.mixup.cutmix_alpha",
}
SCHEDULER_HPARAMS = {  # the settings each schedule reads (the others would only look like differences)
    "multistep": ("decay_epochs", "decay_rate"), "step": ("step_epochs", "decay_rate"),
    "plateau": ("patience_epochs", "decay_rate"),
}


def library_versions() -> dict[str, str]:
    import hydra
    import omegaconf
    import timm
    import torchvision

    import attn_bench

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "hydra": hydra.__version__, "omegaconf": omegaconf.__version__,
            "attn_bench": attn_bench.__version__}


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _identity(cfg: DictConfig, run_dir) -> dict[str, Any]:
    return {"config": OmegaConf.to_container(cfg, resolve=True), "seed": int(cfg.seed), "run_dir": str(run_dir),
            "versions": library_versions()}


def completed_record(cfg: DictConfig, state: TrainState, raw_model, placement: dict[str, Any], device: torch.device,
                     dist: DistInfo, run_dir) -> RunRecord:
    last = state.history[-1] if state.history else {}
    params = count_params(raw_model)
    return RunRecord(
        status="completed", **_identity(cfg, run_dir),
        final={"top1": last.get("eval_top1"), "top5": last.get("eval_top5"), "loss": last.get("eval_loss")},
        best={"top1": state.best.get("eval_top1"), "top5": state.best.get("eval_top5"), "epoch": state.best.get("epoch")},
        final_ema={"top1": last["ema_eval_top1"], "top5": last["ema_eval_top5"], "loss": last["ema_eval_loss"]}
        if "ema_eval_top1" in last else None,
        best_ema={"top1": state.best_ema["eval_top1"], "top5": state.best_ema["eval_top5"],
                  "epoch": state.best_ema["epoch"]} if state.best_ema else None,
        params=params["params"], attn_params=params["attn_params"], epochs=state.epoch, steps=state.step,
        wall_time_s=state.wall_time, train_time_s=state.train_time,
        train_img_per_s=sum(h["img_per_s"] * h["epoch_train_time_s"] for h in state.history) / max(state.train_time, 1e-9),
        peak_memory_mb=_peak_memory_mb(device),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        world_size=dist.world_size, history=state.history, resumed_from=state.resumes or None,
        placement=placement,
    )


def failed_record(cfg: DictConfig, run_dir, reason: str, step: int, epoch: int, status: str = "failed") -> RunRecord:
    """A run that stopped: ``failed``, or ``interrupted`` (Ctrl-C), which the same command resumes."""
    return RunRecord(status=status, reason=reason, failed_at={"epoch": epoch, "step": step}, **_identity(cfg, run_dir))


def _effective_args(attn: str, args: dict[str, Any]) -> dict[str, Any]:
    """The block's arguments as it was built: its defaults (SE's ``rd_ratio``) under the resolved ones; the
    baseline has none. Per-stage and per-slot values are the placement's ``stage_args`` (recorded beside)."""
    return {} if is_baseline(attn) else {**block_defaults(attn), **args}


def hparams(cfg: DictConfig, record: RunRecord) -> tuple[dict[str, Any], dict[str, float]]:
    """The HParams row: the run's settings, and its results as ``hparam/...`` metrics."""
    values = {name: OmegaConf.select(cfg, key) for name, key in HPARAM_KEYS.items()}
    scheduler, optimizer = cfg.trainer.scheduler, cfg.trainer.optimizer
    values.update({key: scheduler[key] for key in SCHEDULER_HPARAMS.get(scheduler.name, ())})
    if optimizer.get("lr_base") is not None:  # the lr was derived: from what
        values.update(lr_base_size=optimizer.lr_base_size, lr_base_scale=optimizer.lr_base_scale)
    values = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}
    if record.images:  # what the splits held (a subset, a size, skipped files): the numbers, not the settings
        values.update(train_images=record.images["train"], test_images=record.images["test"])
    if record.placement:  # where the block went, as resolved (placement=paper fills in the paper's choice)
        where = record.placement
        values.update(placement=where["placement"], attn_site=where["site"], attn_stages=str(where["stages"]),
                      attn_position=where["position"], attn_args=str(where["args"]),
                      attn_effective_args=str(_effective_args(cfg.model.attn, where["args"])))
        if where.get("stage_args"):  # per-stage arguments of a released network (ECA-Net50's kernel sizes)
            values["attn_stage_args"] = str(where["stage_args"])
        if where.get("note"):  # "not a published network" (SK units in a ResNet)
            values["attn_note"] = where["note"]
    if record.block and record.block.get("source_sha256"):  # a user's block: which version of it
        values["attn"] += hash_tag(record.block["source_sha256"])
    results = {"hparam/top1": record.final["top1"], "hparam/top5": record.final["top5"],
               "hparam/best_top1": record.best["top1"], "hparam/params_m": record.params / 1e6,
               "hparam/attn_params": record.attn_params,
               "hparam/train_img_per_s": record.train_img_per_s, "hparam/peak_memory_mb": record.peak_memory_mb}
    if record.final_ema:
        results.update({"hparam/top1_ema": record.final_ema["top1"], "hparam/best_top1_ema": record.best_ema["top1"]})
    if record.cost:
        results.update({"hparam/gmacs": record.cost["gmacs"], "hparam/latency_ms": record.cost["latency_ms"],
                        "hparam/throughput_img_per_s": record.cost["throughput_img_per_s"]})
        # a timing taken while the machine was busy says so next to it, as report.md's * does
        values.update(latency_busy=bool(record.cost.get("latency_busy")),
                      throughput_busy=bool(record.cost.get("throughput_busy")))
    return values, results
