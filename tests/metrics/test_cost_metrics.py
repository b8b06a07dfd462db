"""``run_cost_metrics``: the flat dict the training run logs."""
from __future__ import annotations

import json

import pytest

from torch import nn

from attn_bench.metrics.cost import run_cost_metrics
from attn_bench.metrics.latency import TimingPlan
from attn_bench.models.build import build_model

# Real timings on a shared machine may well be "busy"; that is not what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::attn_bench.metrics.latency.BusyDeviceWarning")
QUICK = TimingPlan(warmup=1, warmup_s=0, repeats=3, min_repeats=1, budget_s=1.0)


def test_cost_metrics_are_flat_unit_explicit_and_cheap():
    tiny = {"channels": [16, 32, 64, 128]}
    model = build_model("resnet18", "se", 10, stem="small", timm_kwargs=tiny)
    model.train()
    metrics = run_cost_metrics(model, 32, "cpu", num_threads=1, latency_plan=QUICK, throughput_plan=QUICK)
    # cheap by construction (the speed itself is a scripts/ benchmark's business): the plan's passes, no more
    assert 1 <= metrics["latency_repeats"] <= 3 and 1 <= metrics["throughput_repeats"] <= 3
    json.dumps(metrics)
    assert not any(isinstance(v, dict) for v in metrics.values())
    for key in ("params", "attn_params", "macs", "gmacs", "flops", "gflops", "latency_ms", "latency_p10_ms",
                "latency_p90_ms", "throughput_img_per_s", "throughput_batch_size", "num_threads", "device_name"):
        assert key in metrics, key
    assert metrics["uncounted_ops"] == []
    assert metrics["gmacs"] == metrics["macs"] / 1e9 and metrics["gflops"] == metrics["flops"] / 1e9
    assert 0 < metrics["attn_params"] < metrics["params"]
    assert metrics["latency_p10_ms"] <= metrics["latency_ms"] <= metrics["latency_p90_ms"]
    assert metrics["num_threads"] == 1
    assert model.training  # left as it came


def test_cost_metrics_count_the_macs_and_flops_worked_out_by_hand():
    """A 3x3 conv (3 -> 8 channels, 16x16, no bias), a global average pool and a linear layer (8 -> 10):
    MACs 8*16*16*3*3*3 + 8*10 = 55,376; FLOPs twice that plus the pool's 8*256 additions and 8 divisions."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10, bias=False))
    metrics = run_cost_metrics(model, 16, "cpu", num_threads=1, latency_plan=QUICK, throughput_plan=QUICK)
    assert metrics["macs"] == 55_376 and metrics["flops"] == 2 * 55_376 + 8 * 256 + 8
    assert metrics["params"] == 3 * 8 * 9 + 8 * 10 and metrics["attn_params"] == 0
