"""Seeds and deterministic-algorithm switches for one run."""
from __future__ import annotations

import os
import random

import torch


def seed_everything(seed: int, deterministic: bool, cudnn_benchmark: bool) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    if deterministic:  # cuBLAS needs a fixed workspace to be deterministic (PyTorch's reproducibility notes)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Always set, so that one deterministic run does not leave the next one (same process) deterministic.
    # warn_only: an op without a deterministic CUDA kernel (e.g. adaptive pooling backward) warns, naming
    # itself, instead of stopping the run; on the CPU every op used here is deterministic.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic
