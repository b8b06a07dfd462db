"""The training loop: one epoch of updates, evaluation, checkpoints, and what gets logged."""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from timm.utils import dispatch_clip_grad
from torch import nn

from attn_bench.precision import Precision
from attn_bench.rundir import BEST_CKPT, LAST_CKPT
from attn_bench.io import atomic_torch_save
from attn_bench.training.checkpoint import copy_checkpoint, rng_state, set_rng_state
from attn_bench.training import preemption
from attn_bench.training.distributed import DistInfo, all_reduce_sum
from attn_bench.training.validate import mixup_on

log = logging.getLogger("attn_bench")


EPOCH_SCALARS = {
    "eval_top1": "eval/top1", "eval_top5": "eval/top5", "eval_loss": "eval/loss",
    "train_loss": "train/loss_epoch", "train_top1": "train/top1_epoch", "img_per_s": "train/img_per_s",
    "epoch": "train/epoch",
}


class TrainingDiverged(RuntimeError):
    def __init__(self, epoch: int, step: int, value: float, what: str = "loss"):
        super().__init__(f"{what} became {value} at epoch {epoch}, step {step}; lower the learning rate or use fp32")
        self.epoch, self.step, self.value = epoch, step, value


@dataclass
class TrainState:
    """Everything that must survive an interruption for the run to continue exactly."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch
    step: int = 0  # optimizer steps completed
    train_time: float = 0.0  # seconds spent in training steps (eval excluded)
    wall_time: float = 0.0  # seconds of training and evaluation, over every process that worked on the run
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    epoch_stats: dict[str, float] = field(default_factory=dict)  # partial sums of the current epoch
    resumes: list[dict[str, int]] = field(default_factory=list)  # where each resume picked up (epoch, batch, step)
    best_ema: dict[str, Any] = field(default_factory=dict)  # the EMA weights' best epoch (trainer.ema)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def updates_per_epoch(batches: int, accumulate_steps: int) -> int:
    """Optimizer updates in an epoch of ``batches``: one per ``accumulate_steps``, the last taking the remainder."""
    return -(-batches // accumulate_steps)


def top_k_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...]) -> list[torch.Tensor]:
    """Number of samples whose target is among the top k logits, for each k (as device tensors)."""
    k_max = min(max(ks), logits.shape[1])
    hits = logits.topk(k_max, dim=1).indices.eq(target.view(-1, 1))
    return [hits[:, : min(k, k_max)].any(dim=1).sum() for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, autocast=contextlib.nullcontext,
             num_classes: int | None = None, flip: bool = False) -> dict[str, Any]:
    """Loss, top-1 and top-5 over ``loader`` (summed over ranks under DDP); what the trainer records
    each epoch and ``attn-bench eval`` recomputes. ``num_classes``: also the confusion matrix
    (``eval_confusion``, rows the true class, columns the top-1 prediction) and each class's top-1;
    ``flip``: test-time augmentation, the logits averaged over each image and its mirror image."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, top-1 and top-5 hits
    confusion = torch.zeros(num_classes ** 2 if num_classes else 0, dtype=torch.float64, device=device)
    seen = 0
    for x, y in loader:
        with autocast():
            logits = model(x)
            if flip:
                logits = (logits.float() + model(x.flip(3)).float()) / 2
        loss = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        totals += torch.stack([loss.double(), *(c.double() for c in top_k_correct(logits, y, (1, 5)))])
        if num_classes:  # the same top-1 as top_k_correct's (topk, not argmax: ties break alike)
            confusion += torch.bincount(y * num_classes + logits.topk(1, dim=1).indices[:, 0],
                                        minlength=num_classes ** 2).double()
        seen += y.numel()
    loss_sum, correct1, correct5, seen = all_reduce_sum([*totals.tolist(), seen], device)
    stats: dict[str, Any] = {"eval_loss": loss_sum / seen, "eval_top1": 100.0 * correct1 / seen,
                             "eval_top5": 100.0 * correct5 / seen, "eval_images": int(seen)}
    if num_classes:
        counts = torch.tensor(all_reduce_sum(confusion.tolist(), device)).view(num_classes, num_classes)
        rows = counts.sum(1)
        stats["eval_confusion"] = counts.long().tolist()
        stats["eval_per_class_top1"] = [100.0 * float(counts[c, c] / rows[c]) if rows[c] else None
                                        for c in range(num_classes)]
    return stats


class Trainer:
    def __init__(self, model: nn.Module, optimizer, scheduler, train_loader, eval_loader, cfg, device: torch.device,
                 dist: DistInfo, run_dir: Path, *, precision: Precision, on_log: Callable[[str, float, int], None],
                 progress=None, ema=None, num_classes: int | None = None, seed: int = 0):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.ema = ema  # timm ModelEmaV3 of the raw model, or None
        self.train_loader, self.eval_loader = train_loader, eval_loader
        self.cfg, self.device, self.dist, self.run_dir = cfg, device, dist, run_dir
        self.on_log = on_log  # (tag, value, step) -> None; rank 0 writes TensorBoard
        self.progress = progress
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.mixup, self.seed = None, seed
        if mixup_on(cfg):  # timm's Mixup makes soft targets, with the label smoothing folded in
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy

            m = cfg.mixup
            self.mixup = Mixup(mixup_alpha=m.mixup_alpha, cutmix_alpha=m.cutmix_alpha, prob=m.prob,
                               switch_prob=m.switch_prob, mode=m.mode, label_smoothing=cfg.label_smoothing,
                               num_classes=num_classes)
            self.criterion = SoftTargetCrossEntropy()
        self.precision = precision  # resolved once by the run, with its device checked
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)
        self.steps_per_epoch = len(train_loader)  # batches; the updates are ceil(batches / accumulate_steps)
        self.accumulate = int(cfg.get("accumulate_steps", 1))

    # --- state ------------------------------------------------------------------------------

    def state_dict(self, state: TrainState, raw_model: nn.Module) -> dict[str, Any]:
        ema = {"ema": self.ema.state_dict()} if self.ema is not None else {}
        return dict(model=raw_model.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), rng=rng_state(),
                    **ema, **state.as_dict())

    def load_state_dict(self, ckpt: dict[str, Any], raw_model: nn.Module) -> TrainState:
        raw_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"])
        keys = TrainState.__dataclass_fields__
        return TrainState(**{k: ckpt[k] for k in keys if k in ckpt})

    def _checkpoint_due(self) -> tuple[bool, bool]:
        """(``checkpoint_every_minutes`` have passed since the last checkpoint, a rank has been told
        to stop: time limit or preemption), in one collective: rank 0's clock decides the first for
        every rank, since saving includes a collective; any rank's signal decides the second."""
        minutes = float(self.cfg.checkpoint_every_minutes)
        due = minutes > 0 and time.monotonic() - self._last_checkpoint >= 60 * minutes
        stop = preemption.received()
        if not self.dist.enabled:
            return due, stop
        due_sum, stop_sum = all_reduce_sum([float(due and self.dist.is_main), float(stop)], self.device)
        return due_sum > 0, stop_sum > 0

    def _save(self, state: TrainState, raw_model: nn.Module, name: str) -> None:
        self._last_checkpoint = time.monotonic()
        self._update_wall_time(state)
        if self.dist.is_main:
            atomic_torch_save(self.state_dict(state, raw_model), self.run_dir / name)

    # --- loop -------------------------------------------------------------------------------

    def _autocast(self):
        return self.precision.autocast(self.device)

    def _accumulation(self, batch: int) -> tuple[int, bool]:
        """(micro-batches in the update that batch ``batch`` of the epoch belongs to, whether it is that
        update's last). Updates group ``accumulate_steps`` batches from the epoch's first; the epoch's
        last update takes the remainder, its loss divided by that count (timm's train.py)."""
        k, batches = self.accumulate, self.steps_per_epoch
        group_start = batch - batch % k
        size = min(k, batches - group_start)
        return size, batch == group_start + size - 1

    def update_boundary(self, batch: int) -> bool:
        """Whether ``batch`` batches done in an epoch ends an update (no gradient is half-accumulated):
        the only places a checkpoint is written, so that a resumed run redoes whole updates."""
        return batch % self.accumulate == 0 or batch == self.steps_per_epoch

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, state: TrainState) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: forward and backward, and the update when it completes one (``accumulate_steps``).
        Returns the loss and the number correct as device tensors: reading them here would stall a GPU
        every step, so the loop reads them only at its sync points."""
        size, update = self._accumulation(state.batch)
        first = state.batch % self.accumulate == 0
        target = y
        if self.mixup is not None:
            # timm draws lambda from numpy's global RNG: seeded from (seed, batch of the run), so that a
            # resumed run mixes exactly as an uninterrupted one (the batch of the run is the step unaccumulated)
            np.random.seed((self.seed * 1_000_003 + state.epoch * self.steps_per_epoch + state.batch) % 2**32)
            x, target = self.mixup(x, y)
        if first:
            self.optimizer.zero_grad(set_to_none=True)
        no_sync = getattr(self.model, "no_sync", None)  # DDP: all-reduce once, at the update's batch
        with no_sync() if no_sync is not None and not update else contextlib.nullcontext():
            with self._autocast():
                logits = self.model(x)
                loss = self.criterion(logits, target)
            self.scaler.scale(loss / size if size > 1 else loss).backward()
        if first:
            self._step_counter += 1  # divergence is reported at the update this batch belongs to
        loss = loss.detach().float()
        self._watch_divergence(loss)
        if update:
            self._update(state)
        return loss, (logits.detach().argmax(1) == y).sum()

    def _update(self, state: TrainState) -> None:
        if self.cfg.clip_grad is not None:  # on the true gradients: unscaled first (fp16), as timm's train.py does
            self.scaler.unscale_(self.optimizer)
            dispatch_clip_grad(self.model.parameters(), value=float(self.cfg.clip_grad), mode=self.cfg.clip_mode)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        state.step += 1
        self.scheduler.step_update(state.step)
        if self.ema is not None:
            self.ema.update(self.model, step=state.step)  # zips state dicts in order: DDP/compile wrappers are fine

    def watch_divergence_from(self, step: int) -> None:
        """Start remembering the first non-finite loss (each epoch, from its first step)."""
        self._step_counter = torch.tensor(step, device=self.device)
        self._first_bad_step = torch.zeros((), dtype=torch.long, device=self.device)
        self._first_bad_loss = torch.zeros((), device=self.device)

    def _watch_divergence(self, loss: torch.Tensor) -> None:
        """Remember, on the device, the first step whose loss was not finite (0 while all are)."""
        first = (self._first_bad_step == 0) & ~torch.isfinite(loss)
        self._first_bad_step = torch.where(first, self._step_counter, self._first_bad_step)
        self._first_bad_loss = torch.where(first, loss, self._first_bad_loss)

    def _check_divergence(self, state: TrainState) -> None:
        """At a sync point; under DDP every rank learns of any rank's bad step, so all stop together."""
        if self.dist.enabled:  # gathered, not reduced: MAX would pick the later step and turn NaN into -inf
            local = torch.stack([self._first_bad_step.double(), self._first_bad_loss.double()])
            every = [torch.empty_like(local) for _ in range(self.dist.world_size)]
            torch.distributed.all_gather(every, local)
            bad = [b for b in every if b[0] > 0]
            if bad:
                first = min(bad, key=lambda b: float(b[0]))
                self._first_bad_step, self._first_bad_loss = first[0].long(), first[1].float()
        bad_step = int(self._first_bad_step)
        if bad_step:
            raise TrainingDiverged(state.epoch + 1, bad_step, float(self._first_bad_loss))

    @staticmethod
    def _check_finite(record: dict[str, Any], raw_model: nn.Module) -> None:
        """An epoch whose evaluation loss or weights are not finite is a diverged run, not a result."""
        if not math.isfinite(record["eval_loss"]):
            raise TrainingDiverged(record["epoch"], record["step"], record["eval_loss"], "evaluation loss")
        params = list(raw_model.named_parameters())
        finite = torch.stack([torch.isfinite(p).all() for _, p in params])
        if not bool(finite.all()):  # one host sync for the whole model; the name only when needed
            bad = params[int((~finite).nonzero()[0])][0]
            raise TrainingDiverged(record["epoch"], record["step"], float("nan"), f"weight {bad}")

    def _global_partial(self, stats: dict[str, float]) -> dict[str, float]:
        seen, correct, loss_sum = all_reduce_sum([stats["seen"], stats["correct"], stats["loss_sum"]], self.device)
        return {"loss_sum": loss_sum, "correct": correct, "seen": seen, "time": stats["time"]}

    def train_epoch(self, state: TrainState, raw_model: nn.Module) -> dict[str, float]:
        self.model.train()
        self.train_loader.set_epoch(state.epoch)
        stats = {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        if state.epoch_stats and self.dist.is_main:  # resumed mid-epoch: rank 0 carries the global partial sums
            stats = dict(state.epoch_stats)
        self.watch_divergence_from(state.step)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        task = self.progress.start_epoch(state.epoch + 1, self.steps_per_epoch, state.batch) if self.progress else None
        every, log_every = int(self.cfg.checkpoint_every_steps), int(self.cfg.log_every_steps)
        updates = updates_per_epoch(self.steps_per_epoch, self.accumulate)
        sync_every = min(log_every, max(1, updates // 50))  # progress bar ~50 updates per epoch
        unsynced, tick = 0, time.perf_counter()
        for x, y in self.train_loader.iterate(start_batch=state.batch):
            loss, batch_correct = self._train_step(x, y, state)
            loss_sum += loss.double() * y.numel()
            correct += batch_correct
            stats["seen"] += y.numel()
            state.batch += 1
            unsynced += 1
            if not self.update_boundary(state.batch):  # mid-update: nothing to log or save yet
                continue
            save = every and state.step % every == 0 and state.batch < self.steps_per_epoch
            if not (save or state.step % sync_every == 0 or state.step % log_every == 0
                    or state.batch == self.steps_per_epoch):
                continue
            # sync point: read the device values, log, maybe checkpoint
            due, stop = self._checkpoint_due()
            stop = stop and state.batch < self.steps_per_epoch  # at the epoch's end: after its checkpoint
            save = save or stop or (due and state.batch < self.steps_per_epoch)
            self._check_divergence(state)
            stats["loss_sum"] += float(loss_sum)
            stats["correct"] += int(correct)
            loss_sum.zero_(), correct.zero_()
            stats["time"] += time.perf_counter() - tick
            lr = self.optimizer.param_groups[0]["lr"]
            if state.step % log_every == 0:
                self.on_log("train/loss", float(loss), state.step)
                self.on_log("train/lr", lr, state.step)
            if task is not None:
                img_s = stats["seen"] * self.dist.world_size / max(stats["time"], 1e-9)
                self.progress.update(task, advance=unsynced, loss=float(loss), acc=stats["correct"] / stats["seen"],
                                     lr=lr, img_s=img_s)
            if save:
                state.epoch_stats = self._global_partial(stats)
                self._save(state, raw_model, LAST_CKPT)
            if stop:
                raise preemption.Preempted(state.epoch, state.batch, state.step)
            unsynced, tick = 0, time.perf_counter()
        if task is not None:
            self.progress.finish(task)
        seen, correct, loss_sum = all_reduce_sum([stats["seen"], stats["correct"], stats["loss_sum"]], self.device)
        state.train_time += stats["time"]
        return {"train_loss": loss_sum / seen, "train_top1": 100.0 * correct / seen,
                "img_per_s": seen / max(stats["time"], 1e-9), "epoch_train_time_s": stats["time"]}

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.model, self.eval_loader, self.device, self._autocast)

    def _update_wall_time(self, state: TrainState) -> None:
        state.wall_time = self._wall_base + time.perf_counter() - self._wall_start

    def fit(self, state: TrainState, raw_model: nn.Module, epochs: int) -> TrainState:
        self._wall_base, self._wall_start = state.wall_time, time.perf_counter()
        self._last_checkpoint = time.monotonic()
        while state.epoch < epochs:
            train_stats = self.train_epoch(state, raw_model)
            eval_stats = self.evaluate()
            if self.ema is not None:
                ema_stats = evaluate(self.ema.module, self.eval_loader, self.device, self._autocast)
                eval_stats.update({f"ema_{k}": v for k, v in ema_stats.items() if k != "eval_images"})
            state.epoch += 1
            state.batch, state.epoch_stats = 0, {}
            record = {"epoch": state.epoch, "step": state.step, "lr": self.optimizer.param_groups[0]["lr"],
                      **train_stats, **eval_stats}
            self._check_finite(record, raw_model)
            state.history.append(record)
            if hasattr(self.scheduler, "step_epoch"):  # plateau: the next epoch's lr from this one's top-1
                self.scheduler.step_epoch(record["eval_top1"])
            for key, tag in EPOCH_SCALARS.items():  # x = optimizer step, like the per-step scalars
                self.on_log(tag, record[key], state.step)
            log.info(
                "epoch %d/%d  train loss %.4f  top-1 %.2f | eval top-1 %.2f  top-5 %.2f | %.0f img/s",
                state.epoch, epochs, record["train_loss"], record["train_top1"], record["eval_top1"],
                record["eval_top5"], record["img_per_s"],
            )
            if self.ema is not None:
                self.on_log("eval_ema/top1", record["ema_eval_top1"], state.step)
                if not state.best_ema or record["ema_eval_top1"] > state.best_ema["eval_top1"]:
                    state.best_ema = {"epoch": state.epoch, "eval_top1": record["ema_eval_top1"],
                                      "eval_top5": record["ema_eval_top5"]}
            is_best = not state.best or record["eval_top1"] > state.best["eval_top1"]
            if is_best:
                state.best = {k: record[k] for k in ("epoch", "eval_top1", "eval_top5")}
            # best.pt first: killed in between, last.pt is still the previous epoch and the resumed run
            # redoes this one, so best.pt never lags behind the best epoch last.pt records
            self._save(state, raw_model, BEST_CKPT if is_best else LAST_CKPT)
            if is_best and self.dist.is_main:  # the same state: copy the file rather than serialise it again
                copy_checkpoint(self.run_dir / BEST_CKPT, self.run_dir / LAST_CKPT)
            if state.epoch < epochs and self._checkpoint_due()[1]:
                raise preemption.Preempted(state.epoch, state.batch, state.step)
        self._update_wall_time(state)
        return state
