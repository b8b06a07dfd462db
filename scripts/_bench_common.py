"""Shared bits of the benchmark scripts: machine description and the test config composer."""
from __future__ import annotations

import os
import platform

import torch
from attn_bench.cli import register
from attn_bench.config import compose


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def compose_train(overrides: list[str]):
    register()
    return compose("train", overrides)
