"""``validate_config``: every check a training job runs before it builds anything.

A job calls it first, and a sweep calls exactly this for every job before any job starts; each
layer checks its own node (``trainer``, ``data``, ``model``).
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from attn_bench import data, models
from attn_bench.errors import ConfigError, check_number
from attn_bench.training import validate as trainer


def validate_config(cfg: DictConfig) -> dict[str, Any] | None:
    """Every check, one line for the first mistake; returns where the block goes (``models.check``)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing value(s) for {', '.join(missing)}; set them on the command line, "
                          f"e.g. {missing[0]}=<value>")
    check_number(cfg.seed, "seed", integer=True)
    trainer.check(cfg.trainer)
    data.check(cfg.data)
    return models.check(cfg.model, int(cfg.data.num_classes), int(cfg.data.img_size))
