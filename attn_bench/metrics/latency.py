"""Inference timing: batch-1 latency and large-batch throughput, with their spread.

Method: eval mode under ``torch.inference_mode``, a fixed random input, untimed warm-up passes
(at least ``warmup`` of them and for at least ``warmup_s`` seconds: the first passes at a new
shape in a process are slow while allocator and kernel caches fill -- 1.6x for ResNet-50 at
batch 8 on a CPU, over the first three passes), then timed passes, ``time.perf_counter`` around
each. On CUDA every pass ends with ``torch.cuda.synchronize`` so that the clock sees the kernels
finish, not just their launch. On the CPU the intra-op thread count is set for the measurement and restored
afterwards. Optional: autocast to bf16/fp16, channels_last memory format.

Repeats follow a :class:`TimingPlan`: at least ``min_repeats`` and at most ``repeats`` passes,
and no new pass once the timed passes add up to ``budget_s`` (so a very slow model gets the
minimum, a fast one the maximum). The result says how many ran.

Reported: median (the figure to quote), mean, p10/p25/p75/p90, IQR, coefficient of variation,
``img_per_s = batch_size / median``. ``busy`` is set, and a :class:`BusyDeviceWarning` issued,
when either

* the relative IQR (IQR / median) exceeds ``BUSY_RELATIVE_IQR`` = 10 %: repeated passes over the
  same input on an idle device vary by a few percent, so a wider middle half means something else
  competed for the device (other processes, frequency scaling); or
* (CPU, Linux) other processes used more than ``CONTENDED_CORES`` = 0.5 cores beyond the cores
  our threads left free while we timed (from ``/proc/stat``). Spread alone misses this case:
  with every core oversubscribed, OpenMP threads wait on each other at each barrier and a
  forward pass can be 10-100x slower yet steady (seen on a shared 2-core machine).

A busy median is still the best estimate of that run but should not be compared across runs.
"""
from __future__ import annotations

import copy
import os
import platform
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from attn_bench.devices import resolve_device
from attn_bench.errors import check
from attn_bench.metrics.complexity import eval_mode
from attn_bench.precision import resolve_precision

BUSY_RELATIVE_IQR = 0.10
CONTENDED_CORES = 0.5
THROUGHPUT_BATCH = {"cpu": 8, "cuda": 64}  # CPU: 8 keeps a ResNet-50 pass under a second


class BusyDeviceWarning(RuntimeWarning):
    """The timings spread widely or other processes competed for the CPU (module docstring)."""


@dataclass(frozen=True)
class TimingPlan:
    warmup: int = 3  # at least this many warm-up passes
    warmup_s: float = 0.5  # and warm up for at least this long
    repeats: int = 20  # at most
    min_repeats: int = 5  # at least, whatever the budget
    budget_s: float = 2.0  # no new timed pass once the timed passes reach this

    def __post_init__(self) -> None:
        check(self.warmup >= 0 and self.warmup_s >= 0, f"timing warmup={self.warmup} and warmup_s must be >= 0")
        check(1 <= self.min_repeats <= self.repeats,
              f"timing needs 1 <= min_repeats <= repeats, got min_repeats={self.min_repeats}, repeats={self.repeats}")
        check(self.budget_s >= 0, f"timing budget_s={self.budget_s} must be >= 0")


def resolve_amp(amp: str | torch.dtype | None) -> torch.dtype | None:
    if amp is None or isinstance(amp, torch.dtype):
        return amp
    return resolve_precision(amp, key="amp dtype").amp_dtype


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or "cpu")


@contextmanager
def cpu_threads(num_threads: int | None) -> Iterator[int]:
    """Use ``num_threads`` intra-op threads inside the block (``None``: keep the current count)."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        check(int(num_threads) >= 1, f"threads={num_threads} must be >= 1")
        torch.set_num_threads(int(num_threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_calls(fn: Callable[[], object], plan: TimingPlan, sync: Callable[[], None]) -> list[float]:
    """Seconds taken by each timed call of ``fn`` after the untimed warm-up calls."""
    started, warmed = time.perf_counter(), 0
    while warmed < plan.warmup or time.perf_counter() - started < plan.warmup_s:
        fn()
        sync()
        warmed += 1
    times: list[float] = []
    while len(times) < plan.repeats and (len(times) < plan.min_repeats or sum(times) < plan.budget_s):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def summarize(times_s: list[float]) -> dict[str, float]:
    ms = np.asarray(times_s) * 1e3
    p10, p25, p50, p75, p90 = np.percentile(ms, [10, 25, 50, 75, 90])
    return {
        "median_ms": float(p50), "mean_ms": float(ms.mean()), "p10_ms": float(p10), "p25_ms": float(p25),
        "p75_ms": float(p75), "p90_ms": float(p90), "iqr_ms": float(p75 - p25),
        "relative_iqr": float((p75 - p25) / p50), "cv": float(ms.std() / ms.mean()), "repeats": len(ms),
    }


def _prepared(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``model`` itself if it is ready as it is, else a copy moved / converted (the caller's stays)."""
    on_device = all(p.device == device for p in model.parameters())
    if on_device and not channels_last:
        return model
    copied = copy.deepcopy(model).to(device)
    return copied.to(memory_format=torch.channels_last) if channels_last else copied


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(all CPU ticks, busy ticks of every process, ticks of this process) from /proc; None off Linux."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
        with open("/proc/self/stat") as own:
            utime, stime = map(int, own.read().rsplit(")", 1)[1].split()[11:13])
    except (OSError, ValueError):
        return None
    busy = user + nice + system + irq + softirq + steal
    return busy + idle + iowait, busy, utime + stime


@contextmanager
def other_cpu_use() -> Iterator[dict[str, float | None]]:
    """Measures, into the yielded dict's ``cores``, how many cores other processes kept busy."""
    result: dict[str, float | None] = {"cores": None}
    before = _cpu_ticks()
    yield result
    after = _cpu_ticks()
    if before and after and after[0] > before[0]:
        total, busy, own = (a - b for a, b in zip(after, before))
        result["cores"] = max(busy - own, 0) / total * (os.cpu_count() or 1)


def _busy_reason(stats: dict[str, float], other_cores: float | None, threads: int) -> str | None:
    if stats["relative_iqr"] > BUSY_RELATIVE_IQR:
        return (f"timings spread widely (IQR {stats['relative_iqr']:.0%} of the median, threshold "
                f"{BUSY_RELATIVE_IQR:.0%}): the device was probably busy; compare these timings with care")
    free_cores = max((os.cpu_count() or 1) - threads, 0)
    if other_cores is not None and other_cores > free_cores + CONTENDED_CORES:
        return (f"other processes kept {other_cores:.1f} CPU cores busy while {threads} threads were timed on "
                f"{os.cpu_count()} cores: the timings are slowed by contention; compare them with care")
    return None


def measure(
    model: nn.Module,
    img_size: int,
    device: str | torch.device = "cpu",
    *,
    batch_size: int = 1,
    plan: TimingPlan = TimingPlan(),
    num_threads: int | None = None,
    amp_dtype: str | torch.dtype | None = None,
    channels_last: bool = False,
    in_chans: int = 3,
) -> dict:
    """Time forward passes of a ``(batch_size, in_chans, img_size, img_size)`` input in eval mode."""
    device, amp_dtype = resolve_device(device), resolve_amp(amp_dtype)
    model = _prepared(model, device, channels_last)
    x = torch.randn(batch_size, in_chans, img_size, img_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    threads = cpu_threads(num_threads) if device.type == "cpu" else nullcontext(torch.get_num_threads())
    with threads as used_threads, eval_mode(model), torch.inference_mode(), autocast, other_cpu_use() as others:
        stats = summarize(time_calls(lambda: model(x), plan, _synchronizer(device)))
    other_cores = others["cores"] if device.type == "cpu" else None
    busy = _busy_reason(stats, other_cores, used_threads)
    if busy:
        warnings.warn(f"{type(model).__name__} at batch {batch_size}: {busy}", BusyDeviceWarning, stacklevel=2)
    dtype = amp_dtype or next(model.parameters(), x).dtype
    return {
        **stats,
        "img_per_s": batch_size / (stats["median_ms"] / 1e3),
        "batch_size": batch_size, "warmup": plan.warmup, "device": str(device), "device_name": device_name(device),
        "dtype": str(dtype).removeprefix("torch."), "amp": amp_dtype is not None, "channels_last": channels_last,
        "num_threads": used_threads, "torch_version": torch.__version__, "other_cpu_cores": other_cores,
        "busy": busy is not None, "busy_reason": busy,
    }


def measure_latency(model: nn.Module, img_size: int, device: str | torch.device = "cpu", **kwargs) -> dict:
    """Batch-1 latency (``median_ms`` is the latency to quote)."""
    return measure(model, img_size, device, batch_size=1, **kwargs)


def measure_throughput(
    model: nn.Module, img_size: int, device: str | torch.device = "cpu", batch_size: int | None = None, **kwargs
) -> dict:
    """Images per second at a large batch (default: ``THROUGHPUT_BATCH`` for the device type)."""
    device = resolve_device(device)
    batch_size = batch_size or THROUGHPUT_BATCH.get(device.type, THROUGHPUT_BATCH["cuda"])
    return measure(model, img_size, device, batch_size=batch_size, **kwargs)
