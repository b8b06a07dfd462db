"""Checks on a composed training config, before anything is built or trained."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from attn_bench.attention import list_blocks
from attn_bench.data.datasets import check_dataset_name
from attn_bench.errors import ConfigError, check
from attn_bench.models import SUPPORTED_BACKBONES
from attn_bench.training.optim import OPTIMIZERS, SCHEDULERS

PRECISIONS = ("fp32", "bf16", "fp16")


def _choice(value, choices, what: str) -> None:
    check(value in choices, f"unknown {what} '{value}'; valid choices: {', '.join(map(str, choices))}")


FIXED_SIZE_DATASETS = {"synthetic": 32, "cifar10": 32, "cifar100": 32}


def _number(value, key: str, kind=(int, float)) -> None:
    ok = isinstance(value, kind) and not isinstance(value, bool)
    check(ok, f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")


def _check_types(cfg: DictConfig) -> None:
    t = cfg.trainer
    for key in ("epochs", "batch_size", "log_every_steps", "checkpoint_every_steps"):
        _number(t[key], f"trainer.{key}", int)
    for key in ("lr", "weight_decay", "momentum"):
        if key in t.optimizer:
            _number(t.optimizer[key], f"trainer.optimizer.{key}")
    for key in ("warmup_epochs", "warmup_lr", "min_lr"):
        _number(t.scheduler[key], f"trainer.scheduler.{key}")
    _number(t.label_smoothing, "trainer.label_smoothing")
    _number(cfg.data.num_classes, "data.num_classes", int)
    _number(cfg.data.img_size, "data.img_size", int)
    _number(cfg.seed, "seed", int)


def validate_config(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing value(s) for {', '.join(missing)}; set them on the command line, "
                          f"e.g. {missing[0]}=<value>")
    _check_types(cfg)
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
    fixed = FIXED_SIZE_DATASETS.get(cfg.data.name)
    check(fixed is None or cfg.data.img_size == fixed,
          f"{cfg.data.name} images are {fixed}x{fixed}; data.img_size={cfg.data.img_size} is not supported for it")
    for key in ("subset_per_class", "eval_subset_per_class"):
        value = cfg.data.get(key)
        check(value is None or (isinstance(value, int) and value > 0),
              f"data.{key} must be a positive integer or null, got {value!r}")


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
