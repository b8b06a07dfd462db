"""Checks on a composed training config, before anything is built or trained."""
from __future__ import annotations

from omegaconf import DictConfig

from attn_bench.attention import list_blocks
from attn_bench.data.datasets import check_dataset_name
from attn_bench.errors import check
from attn_bench.models import SUPPORTED_BACKBONES
from attn_bench.training.optim import OPTIMIZERS, SCHEDULERS

PRECISIONS = ("fp32", "bf16", "fp16")


def _choice(value, choices, what: str) -> None:
    check(value in choices, f"unknown {what} '{value}'; valid choices: {', '.join(map(str, choices))}")


def validate_config(cfg: DictConfig) -> None:
    _choice(cfg.model.backbone, SUPPORTED_BACKBONES, "backbone")
    _choice(cfg.model.attn, list_blocks(), "attention block")
    check_dataset_name(cfg.data.name)
    t = cfg.trainer
    _choice(t.optimizer.name, OPTIMIZERS, "optimizer")
    _choice(t.scheduler.name, SCHEDULERS, "scheduler")
    _choice(t.precision, PRECISIONS, "precision")
    check(isinstance(t.epochs, int) and t.epochs > 0, f"trainer.epochs must be a positive integer, got {t.epochs}")
    check(isinstance(t.batch_size, int) and t.batch_size > 0,
          f"trainer.batch_size must be a positive integer, got {t.batch_size}")
    check(t.optimizer.lr > 0, f"trainer.optimizer.lr must be positive, got {t.optimizer.lr}")
    check(t.optimizer.weight_decay >= 0, f"trainer.optimizer.weight_decay must be >= 0, got {t.optimizer.weight_decay}")
    check(0 <= t.label_smoothing < 1, f"trainer.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    check(t.scheduler.warmup_epochs >= 0, f"trainer.scheduler.warmup_epochs must be >= 0, got {t.scheduler.warmup_epochs}")
    check(t.log_every_steps > 0, f"trainer.log_every_steps must be positive, got {t.log_every_steps}")
    check(t.checkpoint_every_steps >= 0, f"trainer.checkpoint_every_steps must be >= 0, got {t.checkpoint_every_steps}")
    check(cfg.data.num_classes > 1, f"data.num_classes must be at least 2, got {cfg.data.num_classes}")
    check(cfg.data.img_size >= 8, f"data.img_size must be at least 8, got {cfg.data.img_size}")


def per_rank_batch(cfg: DictConfig, world_size: int) -> int:
    """``trainer.batch_size`` is the global batch; each of ``world_size`` processes takes an equal share."""
    t = cfg.trainer
    check(t.batch_size % world_size == 0,
          f"trainer.batch_size {t.batch_size} is not divisible by the {world_size} processes")
    return t.batch_size // world_size


def validate_sizes(cfg: DictConfig, train_samples: int, world_size: int) -> None:
    """Checks that need the dataset's size (known once it is loaded)."""
    t = cfg.trainer
    if t.drop_last:
        check(t.batch_size // world_size <= train_samples,
              f"trainer.batch_size {t.batch_size} is larger than the {train_samples * world_size} training images "
              f"and drop_last is on, so no step would run; lower the batch size or set trainer.drop_last=false")
