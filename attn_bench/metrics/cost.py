"""``run_cost_metrics``: every cost figure of a model as one flat, JSON-ready dict.

Keys carry their unit: counts (``params``, ``macs``, ``flops``), ``g``-prefixed billions
(``gmacs``, ``gflops``), ``_ms`` milliseconds, ``_img_per_s`` images per second. Operation
counts come from :mod:`attn_bench.metrics.complexity` (eval mode, batch 1, CPU), timings from
:mod:`attn_bench.metrics.latency` on ``device``. The default plans keep the whole call to a
few seconds on a CPU for small models, so it can run at the end of every training run.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attn_bench.metrics.complexity import count_ops, count_params
from attn_bench.metrics.latency import TimingPlan, measure_latency, measure_throughput

LATENCY_PLAN = TimingPlan(warmup=3, warmup_s=0.5, repeats=20, min_repeats=5, budget_s=2.0)
THROUGHPUT_PLAN = TimingPlan(warmup=1, warmup_s=1.5, repeats=5, min_repeats=2, budget_s=3.0)
_SHARED_TIMING_KEYS = ("device", "device_name", "dtype", "amp", "channels_last", "num_threads", "torch_version")


def _timing_fields(prefix: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{prefix}_p10_ms": result["p10_ms"], f"{prefix}_p90_ms": result["p90_ms"],
        f"{prefix}_iqr_ms": result["iqr_ms"], f"{prefix}_cv": result["cv"], f"{prefix}_repeats": result["repeats"],
        f"{prefix}_batch_size": result["batch_size"], f"{prefix}_busy": result["busy"],
        f"{prefix}_other_cpu_cores": result["other_cpu_cores"],
    }


def run_cost_metrics(
    model: nn.Module,
    img_size: int,
    device: str | torch.device = "cpu",
    num_threads: int | None = None,
    *,
    latency_plan: TimingPlan = LATENCY_PLAN,
    throughput_plan: TimingPlan = THROUGHPUT_PLAN,
    throughput_batch: int | None = None,
    amp_dtype: str | torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Parameters, MACs/FLOPs, batch-1 latency and large-batch throughput of ``model``.

    ``model`` comes back in the train/eval state and on the device it had. ``uncounted_ops``
    lists aten ops the FLOP count could not price (an empty list means the count is complete).
    """
    ops = count_ops(model, img_size)
    timing = {"num_threads": num_threads, "amp_dtype": amp_dtype, "channels_last": channels_last}
    latency = measure_latency(model, img_size, device, plan=latency_plan, **timing)
    throughput = measure_throughput(model, img_size, device, throughput_batch, plan=throughput_plan, **timing)
    return {
        **count_params(model),
        "img_size": img_size, "macs": ops.macs, "gmacs": ops.gmacs, "flops": ops.flops, "gflops": ops.gflops,
        "uncounted_ops": ops.uncounted_ops,
        "latency_ms": latency["median_ms"], **_timing_fields("latency", latency),
        "throughput_img_per_s": throughput["img_per_s"], "throughput_batch_ms": throughput["median_ms"],
        **_timing_fields("throughput", throughput),
        **{key: latency[key] for key in _SHARED_TIMING_KEYS},
    }
