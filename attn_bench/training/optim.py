"""Optimiser and schedule from timm: weight decay skips norm and bias parameters and those an attention
block names in its ``no_weight_decay()`` (unless ``trainer.optimizer.decay_norm_and_bias``); the schedule
(``trainer.scheduler.name``) is timm's cosine, tanh or poly decay, step decay every ``step_epochs`` (``step``) or at ``decay_epochs`` (``multistep``), or a
decay when the eval top-1 stops rising (``plateau``), after a linear warm-up.

A block may ask for its own learning rate: an ``lr_scale`` attribute (the spatial transformer's
``loc_lr_mult``) puts its parameters in a parameter group with timm's ``lr_scale``, which timm's
schedulers multiply into every learning rate they set, so the ratio holds under any optimizer
(scaling the gradient would not: Adam normalises it away)."""
from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig
from timm.optim import create_optimizer_v2, param_groups_weight_decay
import torch
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, PolyLRScheduler, StepLRScheduler, TanhLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn

from attn_bench.models import attention_modules

log = logging.getLogger("attn_bench")

OPTIMIZERS = ("sgd", "adamw")


class PlateauOnTop1:
    """The lr multiplied by ``decay_rate`` when the epoch's eval top-1 has not risen for ``patience`` epochs
    (torch's ``ReduceLROnPlateau``, mode max, as timm's ``plateau`` with its top-1 metric), after the same linear
    warm-up by update as the other schedules; timm's scheduler interface (``step_update``, state dict).
    timm's own ``PlateauLRScheduler`` is deprecated and does not save its patience and cooldown counters, so a
    resumed run would restart them; this one saves all of torch's state, and a resume is exact."""

    def __init__(self, optimizer, decay_rate: float, patience: int, min_lr: float, warmup: int, warmup_lr: float):
        self.optimizer, self.warmup, self.warmup_lr = optimizer, warmup, warmup_lr
        self.base = [group["lr"] for group in optimizer.param_groups]
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=decay_rate,
                                                                  patience=patience, min_lr=min_lr)

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        if num_updates > self.warmup:
            return  # the plateau decides from here on
        for group, base in zip(self.optimizer.param_groups, self.base):
            lr = self.warmup_lr + (base - self.warmup_lr) * num_updates / self.warmup if self.warmup else base
            group["lr"] = lr * group.get("lr_scale", 1.0)  # as timm's update_groups

    def step_epoch(self, metric: float) -> None:
        """After each epoch's evaluation, with its top-1."""
        self.plateau.step(metric)

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state["plateau"])


SCHEDULERS = {"cosine": CosineLRScheduler, "tanh": TanhLRScheduler, "poly": PolyLRScheduler,
              "multistep": MultiStepLRScheduler, "step": StepLRScheduler, "plateau": PlateauOnTop1}


def _lr_scales(model: nn.Module) -> dict[int, float]:
    """id(parameter) -> learning-rate scale, for the parameters of attention blocks that ask for one."""
    scales = {}
    for block in attention_modules(model):
        scale = float(getattr(block, "lr_scale", 1.0))  # optional: most blocks train at the network's rate
        if scale != 1.0:
            scales.update({id(p): scale for p in block.parameters()})
    return scales


def _blocks_no_weight_decay(model: nn.Module) -> set[str]:
    """The full names of the parameters attention blocks keep out of weight decay (a block's ``no_weight_decay()``,
    timm's convention for models: GCT's gating bias, as its official optimiser)."""
    own = {id(p) for block in attention_modules(model) for name, p in block.named_parameters()
           if name in getattr(block, "no_weight_decay", lambda: set())()}
    return {name for name, p in model.named_parameters() if id(p) in own}


def _param_groups(model: nn.Module, weight_decay: float, skip_norm_and_bias: bool, scales: dict[int, float],
                  no_decay: set[str]):
    """timm's own weight-decay groups (as create_optimizer_v2 makes them, with the blocks' ``no_weight_decay``
    added to the model's), each split by the blocks' lr scales."""
    excluded = set(getattr(model, "no_weight_decay", lambda: set())()) | no_decay
    groups = param_groups_weight_decay(model, weight_decay, weight_decay_exclude_1d=skip_norm_and_bias,
                                       no_weight_decay_list=excluded)
    split = []
    for group in groups:
        by_scale: dict[float, list] = {}
        for param in group["params"]:
            by_scale.setdefault(scales.get(id(param), 1.0), []).append(param)
        split += [{**group, "params": params, **({"lr_scale": scale} if scale != 1.0 else {})}
                  for scale, params in by_scale.items()]
    return split


LR_BASE_SCALES = ("auto", "linear", "sqrt")


def resolve_lr(t: DictConfig) -> None:
    """``trainer.optimizer.lr`` from ``lr_base`` where that is set (timm's ``--lr-base`` rule on the global
    batch: linear, or sqrt for adaptive optimizers under ``auto``), written into the config so that the run
    records, trains with and resumes with that one number; said in a line. Nothing where ``lr_base`` is null."""
    o = t.optimizer
    if o.get("lr_base") is None:
        return
    scale = o.lr_base_scale if o.lr_base_scale != "auto" else ("sqrt" if o.name == "adamw" else "linear")
    update_batch = t.batch_size * int(t.get("accumulate_steps", 1))  # timm: batch x ranks x grad-accum steps
    ratio = update_batch / o.lr_base_size
    o.lr = float(o.lr_base * (ratio ** 0.5 if scale == "sqrt" else ratio))
    log.info("trainer.optimizer.lr = %g: lr_base %g x (batch %d / %d)%s (timm's --lr-base rule; it replaces lr)",
             o.lr, o.lr_base, update_batch, o.lr_base_size, "^0.5" if scale == "sqrt" else "")


def build_optimizer(model: nn.Module, cfg: DictConfig):
    skip_norm_and_bias = not cfg.get("decay_norm_and_bias", False)
    scales = _lr_scales(model)
    no_decay = _blocks_no_weight_decay(model) if skip_norm_and_bias else set()  # timm: honoured when filtering
    groups = {}
    if scales or no_decay:
        groups["param_group_fn"] = lambda m: _param_groups(m, cfg.weight_decay, skip_norm_and_bias, scales, no_decay)
    if cfg.name == "sgd":
        # timm's 'sgd' is nesterov SGD and 'momentum' the classic one.
        opt = "sgd" if cfg.nesterov else "momentum"
        return create_optimizer_v2(model, opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                   filter_bias_and_bn=skip_norm_and_bias, **groups)
    return create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                               filter_bias_and_bn=skip_norm_and_bias, **groups)


def build_scheduler(optimizer, cfg: DictConfig, epochs: int, steps_per_epoch: int) -> Scheduler | PlateauOnTop1:
    """``cfg.name`` decay to ``min_lr`` over all updates after a linear warm-up (both in optimizer steps)."""
    total = epochs * steps_per_epoch
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    if cfg.name == "plateau":
        return _from_the_start(PlateauOnTop1(optimizer, cfg.decay_rate, int(cfg.patience_epochs), cfg.min_lr, warmup,
                                             cfg.warmup_lr))
    if cfg.name == "step":  # the lr drops every step_epochs epochs, counted from the start (warm-up included)
        return _from_the_start(StepLRScheduler(
            optimizer, decay_t=int(round(cfg.step_epochs * steps_per_epoch)), decay_rate=cfg.decay_rate,
            warmup_t=warmup, warmup_lr_init=cfg.warmup_lr, warmup_prefix=False, t_in_epochs=False))
    if cfg.name == "multistep":  # the lr drops once decay_epochs[i] epochs are done (timm counts from the next update)
        return _from_the_start(MultiStepLRScheduler(
            optimizer, decay_t=[int(round(e * steps_per_epoch)) + 1 for e in cfg.decay_epochs],
            decay_rate=cfg.decay_rate, warmup_t=warmup, warmup_lr_init=cfg.warmup_lr,
            warmup_prefix=False, t_in_epochs=False))  # epochs counted from the start
    return _from_the_start(SCHEDULERS[cfg.name](
        optimizer,
        t_initial=max(total - warmup, 1),
        lr_min=cfg.min_lr,
        warmup_t=warmup,
        warmup_lr_init=cfg.warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    ))


def _from_the_start(scheduler):
    """The learning rates of update 0 set in every group now (timm sets them only after each update, and
    without a warm-up not at all before the first), so a group's ``lr_scale`` holds from the first step."""
    scheduler.step_update(0)
    return scheduler
