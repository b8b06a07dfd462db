"""Latency / throughput measurement: fields, sanity, plans, thread handling, busy warning."""
from __future__ import annotations

import os
import time

import pytest
import torch
from torch import nn

from attn_bench.errors import ConfigError
from attn_bench.metrics import latency
from attn_bench.metrics.latency import (
    BusyDeviceWarning, TimingPlan, measure_latency, measure_throughput, summarize, time_calls,
)

# Real timings on a shared machine may well be "busy"; that is not what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::attn_bench.metrics.latency.BusyDeviceWarning")
QUICK = TimingPlan(warmup=1, warmup_s=0, repeats=5, min_repeats=5, budget_s=10.0)
FIELDS = {
    "median_ms", "mean_ms", "p10_ms", "p25_ms", "p75_ms", "p90_ms", "iqr_ms", "relative_iqr", "cv", "repeats",
    "img_per_s", "batch_size", "warmup", "device", "device_name", "dtype", "amp", "channels_last", "num_threads",
    "torch_version", "other_cpu_cores", "busy", "busy_reason",
}


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


def test_latency_result_has_documented_fields_and_sane_values():
    result = measure_latency(small_cnn(), 16, "cpu", plan=QUICK)
    assert set(result) == FIELDS
    assert result["median_ms"] > 0
    assert result["p10_ms"] <= result["p25_ms"] <= result["median_ms"] <= result["p75_ms"] <= result["p90_ms"]
    assert result["repeats"] == 5 and result["batch_size"] == 1 and result["device"] == "cpu"
    assert result["dtype"] == "float32" and result["torch_version"] == torch.__version__


class Sleeps(nn.Module):
    """A forward pass that takes a known wall time, whatever the batch."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.scale = seconds, nn.Parameter(torch.ones(1))

    def forward(self, x):
        time.sleep(self.seconds)
        return x.mean((2, 3)) * self.scale


def test_throughput_uses_a_large_batch_and_reports_images_per_second():
    assert measure_throughput(small_cnn(), 16, "cpu", plan=QUICK)["batch_size"] == latency.THROUGHPUT_BATCH["cpu"]
    result = measure_throughput(Sleeps(0.05), 16, "cpu", batch_size=8, plan=QUICK)
    # a pass is 50 ms (plus a little): 8 images per 0.05-0.1 s, whatever formula the code uses
    assert result["batch_size"] == 8 and 8 / 0.1 <= result["img_per_s"] <= 8 / 0.05
    assert 50 <= result["median_ms"] <= 100


def test_threads_are_fixed_while_timing_and_restored_after():
    before = torch.get_num_threads()
    assert measure_latency(small_cnn(), 16, plan=QUICK, num_threads=1)["num_threads"] == 1
    assert torch.get_num_threads() == before


def test_model_state_is_untouched_by_channels_last_and_amp():
    model = small_cnn().train()
    result = measure_latency(model, 16, plan=QUICK, channels_last=True, amp_dtype="bf16")
    assert result["channels_last"] and result["amp"] and result["dtype"] == "bfloat16"
    assert model.training and model[0].weight.is_contiguous()


def test_plan_stops_at_the_budget_but_not_before_min_repeats():
    plan = TimingPlan(warmup=0, warmup_s=0, repeats=100, min_repeats=3, budget_s=0.05)
    times = time_calls(lambda: time.sleep(0.02), plan, lambda: None)
    assert 3 <= len(times) <= 4
    unlimited = TimingPlan(warmup=0, warmup_s=0, repeats=7, min_repeats=1, budget_s=60)
    assert len(time_calls(lambda: None, unlimited, lambda: None)) == 7


def test_warm_up_lasts_at_least_warmup_s():
    """One-sided, so a busy machine cannot fail it: the timed call starts no sooner than warmup_s after the first."""
    starts = []
    plan = TimingPlan(warmup=1, warmup_s=0.05, repeats=1, min_repeats=1, budget_s=0)
    time_calls(lambda: (starts.append(time.perf_counter()), time.sleep(0.01)), plan, lambda: None)
    assert len(starts) >= 3 and starts[-1] - starts[0] >= 0.05


def test_bad_plan_and_amp_are_config_errors():
    with pytest.raises(ConfigError, match="min_repeats"):
        TimingPlan(repeats=2, min_repeats=3)
    with pytest.raises(ConfigError, match="amp"):
        measure_latency(small_cnn(), 16, plan=QUICK, amp_dtype="fp8")


def test_busy_device_is_flagged_and_warned(monkeypatch):
    monkeypatch.setattr(latency, "time_calls", lambda fn, plan, sync: [0.010, 0.010, 0.011, 0.030, 0.031, 0.030])
    with pytest.warns(BusyDeviceWarning, match="busy"):
        result = measure_latency(small_cnn(), 16, plan=QUICK)
    assert result["busy"] and result["relative_iqr"] > latency.BUSY_RELATIVE_IQR


def test_cpu_contention_is_flagged_even_when_timings_are_steady(monkeypatch):
    monkeypatch.setattr(latency, "time_calls", lambda fn, plan, sync: [0.010] * 5)
    ticks = iter([(1000, 0, 0), (2000, 1000, 0)])  # others kept every core busy, we used none
    monkeypatch.setattr(latency, "_cpu_ticks", lambda: next(ticks))
    with pytest.warns(BusyDeviceWarning, match="other processes"):
        result = measure_latency(small_cnn(), 16, plan=QUICK, num_threads=1)
    assert result["busy"] and result["other_cpu_cores"] == pytest.approx(os.cpu_count())


def test_summary_of_steady_timings_is_not_busy():
    stats = summarize([0.010, 0.0101, 0.0099, 0.0100, 0.0102])
    assert stats["relative_iqr"] < latency.BUSY_RELATIVE_IQR
    assert stats["median_ms"] == pytest.approx(10.0)
