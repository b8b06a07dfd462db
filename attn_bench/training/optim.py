"""Optimiser and schedule from timm: weight decay skips norm and bias parameters (unless
``trainer.optimizer.decay_norm_and_bias``); the schedule (``trainer.scheduler.name``) is timm's
cosine, tanh or poly decay, or step decay at ``decay_epochs`` (``multistep``), after a linear warm-up."""
from __future__ import annotations

from omegaconf import DictConfig
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, PolyLRScheduler, TanhLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = {"cosine": CosineLRScheduler, "tanh": TanhLRScheduler, "poly": PolyLRScheduler,
              "multistep": MultiStepLRScheduler}


def build_optimizer(model: nn.Module, cfg: DictConfig):
    skip_norm_and_bias = not cfg.get("decay_norm_and_bias", False)
    if cfg.name == "sgd":
        # timm's 'sgd' is nesterov SGD and 'momentum' the classic one.
        opt = "sgd" if cfg.nesterov else "momentum"
        return create_optimizer_v2(model, opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                   filter_bias_and_bn=skip_norm_and_bias)
    return create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                               filter_bias_and_bn=skip_norm_and_bias)


def build_scheduler(optimizer, cfg: DictConfig, epochs: int, steps_per_epoch: int) -> Scheduler:
    """``cfg.name`` decay to ``min_lr`` over all updates after a linear warm-up (both in optimizer steps)."""
    total = epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    if cfg.name == "multistep":  # the lr drops once decay_epochs[i] epochs are done (timm counts from the next update)
        return MultiStepLRScheduler(optimizer, decay_t=[int(round(e * steps_per_epoch)) + 1 for e in cfg.decay_epochs],
                                    decay_rate=cfg.decay_rate, warmup_t=warmup, warmup_lr_init=cfg.warmup_lr,
                                    warmup_prefix=False, t_in_epochs=False)  # epochs counted from the start
    return SCHEDULERS[cfg.name](
        optimizer,
        t_initial=max(total - warmup, 1),
        lr_min=cfg.min_lr,
        warmup_t=warmup,
        warmup_lr_init=cfg.warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )
