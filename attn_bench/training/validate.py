"""Checks on a ``trainer`` config node, before anything is built or trained."""
from __future__ import annotations

from omegaconf import DictConfig

from attn_bench.config import check_group_keys
from attn_bench.errors import check as require
from attn_bench.errors import check_number
from attn_bench.precision import resolve_precision
from attn_bench.training.optim import LR_BASE_SCALES, OPTIMIZERS, SCHEDULERS


def _choice(value, choices, what: str) -> None:
    require(value in choices, f"unknown {what} '{value}'; valid choices: {', '.join(map(str, choices))}")


def _check_types(t: DictConfig) -> None:
    for key in ("epochs", "batch_size", "accumulate_steps", "log_every_steps", "checkpoint_every_steps"):
        check_number(t[key], f"trainer.{key}", integer=True)
    for key in ("lr", "weight_decay", "momentum"):
        if key in t.optimizer:
            check_number(t.optimizer[key], f"trainer.optimizer.{key}")
    for key in ("warmup_epochs", "warmup_lr", "min_lr"):
        check_number(t.scheduler[key], f"trainer.scheduler.{key}")
    check_number(t.label_smoothing, "trainer.label_smoothing")
    check_number(t.checkpoint_every_minutes, "trainer.checkpoint_every_minutes")
    check_number(t.ema.decay, "trainer.ema.decay")
    for key in ("mixup_alpha", "cutmix_alpha", "prob", "switch_prob"):
        check_number(t.mixup[key], f"trainer.mixup.{key}")
    for key in ("enabled", "warmup"):
        require(isinstance(t.ema[key], bool), f"trainer.ema.{key} must be true or false, got {t.ema[key]!r}")


CLIP_MODES = ("norm", "value", "agc")  # timm's dispatch_clip_grad


def _check_lr_base(o: DictConfig) -> None:
    if o.get("lr_base") is not None:
        check_number(o.lr_base, "trainer.optimizer.lr_base")
        require(o.lr_base > 0, f"trainer.optimizer.lr_base must be positive (null = use lr), got {o.lr_base}")
    size = o.get("lr_base_size", 256)
    check_number(size, "trainer.optimizer.lr_base_size", integer=True)
    require(size > 0, f"trainer.optimizer.lr_base_size must be a positive integer, got {size}")
    _choice(o.get("lr_base_scale", "auto"), LR_BASE_SCALES, "trainer.optimizer.lr_base_scale")


def mixup_on(t: DictConfig) -> bool:
    return t.mixup.mixup_alpha > 0 or t.mixup.cutmix_alpha > 0


def _check_scheduler(s: DictConfig) -> None:
    """The keys the chosen schedule reads (multistep's epochs, step's period, plateau's patience, their decay)."""
    if s.name == "multistep":
        epochs = list(s.decay_epochs or [])
        require(bool(epochs) and all(isinstance(e, (int, float)) and 0 < e for e in epochs) and epochs == sorted(epochs),
                f"trainer.scheduler.decay_epochs must be increasing positive epochs, got {epochs}")
    if s.name in ("step", "plateau", "multistep"):
        check_number(s.decay_rate, "trainer.scheduler.decay_rate")
        require(0 < s.decay_rate <= 1,
                f"trainer.scheduler.decay_rate must be in (0, 1], got {s.decay_rate}")
    if s.name == "step":
        check_number(s.step_epochs, "trainer.scheduler.step_epochs")
        require(s.step_epochs > 0, f"trainer.scheduler.step_epochs must be positive, got {s.step_epochs}")
    if s.name == "plateau":
        check_number(s.patience_epochs, "trainer.scheduler.patience_epochs", integer=True)
        require(s.patience_epochs >= 0,
                f"trainer.scheduler.patience_epochs must be >= 0, got {s.patience_epochs}")


def check(t: DictConfig) -> None:
    """Every mistake a ``trainer`` node can hold that shows without a device or data."""
    check_group_keys("trainer", t)
    _check_types(t)
    _choice(t.optimizer.name, OPTIMIZERS, "optimizer")
    _choice(t.scheduler.name, SCHEDULERS, "scheduler")
    require(isinstance(t.optimizer.get("decay_norm_and_bias", False), bool),
            f"trainer.optimizer.decay_norm_and_bias must be true or false, got {t.optimizer.get('decay_norm_and_bias')!r}")
    _check_scheduler(t.scheduler)
    resolve_precision(t.precision)
    require(t.epochs > 0, f"trainer.epochs must be a positive integer, got {t.epochs}")
    require(t.batch_size > 0, f"trainer.batch_size must be a positive integer, got {t.batch_size}")
    require(t.optimizer.lr > 0, f"trainer.optimizer.lr must be positive, got {t.optimizer.lr}")
    _check_lr_base(t.optimizer)
    require(t.optimizer.weight_decay >= 0, f"trainer.optimizer.weight_decay must be >= 0, got {t.optimizer.weight_decay}")
    require(0 <= t.label_smoothing < 1, f"trainer.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    require(t.accumulate_steps > 0, f"trainer.accumulate_steps must be a positive integer, got {t.accumulate_steps}")
    if t.clip_grad is not None:
        check_number(t.clip_grad, "trainer.clip_grad")
        require(t.clip_grad > 0, f"trainer.clip_grad must be positive (null = no clipping), got {t.clip_grad}")
    _choice(t.clip_mode, CLIP_MODES, "trainer.clip_mode")
    require(t.scheduler.warmup_epochs >= 0, f"trainer.scheduler.warmup_epochs must be >= 0, got {t.scheduler.warmup_epochs}")
    require(t.log_every_steps > 0, f"trainer.log_every_steps must be positive, got {t.log_every_steps}")
    require(t.checkpoint_every_steps >= 0, f"trainer.checkpoint_every_steps must be >= 0, got {t.checkpoint_every_steps}")
    require(t.limit_batches is None or (isinstance(t.limit_batches, int) and not isinstance(t.limit_batches, bool)
                                        and t.limit_batches > 0),
            f"trainer.limit_batches must be a positive integer or null, got {t.limit_batches!r}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        require(t.mixup[key] >= 0, f"trainer.mixup.{key} must be >= 0 (0 = off), got {t.mixup[key]}")
    for key in ("prob", "switch_prob"):
        require(0 <= t.mixup[key] <= 1, f"trainer.mixup.{key} must be in [0, 1], got {t.mixup[key]}")
    _choice(t.mixup.mode, ("batch", "pair", "elem"), "trainer.mixup.mode")
    require(not mixup_on(t) or t.batch_size % 2 == 0,
            f"trainer.mixup pairs images within a batch: trainer.batch_size must be even, got {t.batch_size}")
    require(0 < t.ema.decay < 1, f"trainer.ema.decay must be in (0, 1), got {t.ema.decay}")
    require(t.checkpoint_every_minutes >= 0,
            f"trainer.checkpoint_every_minutes must be >= 0, got {t.checkpoint_every_minutes}")


def per_rank_batch(t: DictConfig, world_size: int) -> int:
    """``trainer.batch_size`` is the global batch; each of ``world_size`` processes takes an equal share."""
    require(t.batch_size % world_size == 0,
            f"trainer.batch_size {t.batch_size} is not divisible by the {world_size} processes")
    return t.batch_size // world_size


def check_sizes(t: DictConfig, train_samples: int, world_size: int) -> None:
    """Checks that need the dataset's size (known once it is loaded)."""
    if t.drop_last:
        require(t.batch_size // world_size <= train_samples,
                f"trainer.batch_size {t.batch_size} is larger than the {train_samples * world_size} training images "
                f"and drop_last is on, so no step would run; lower the batch size or set trainer.drop_last=false")
