"""Which device a run or a measurement uses: one resolver for training and profiling."""
from __future__ import annotations

import torch

from attn_bench.errors import ConfigError, check


def resolve_device(requested: str | torch.device, local_rank: int | None = None) -> torch.device:
    """``auto`` -> the first GPU if there is one, else the CPU; ``cuda`` always gets an index.

    Under torchrun (``local_rank`` given) a CUDA device means this process's own GPU. A device
    that does not exist here is one clear line, not a CUDA error later.
    """
    requested = str(requested)
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"unknown device '{requested}'; valid choices: auto, cpu, cuda, cuda:N") from None
    if device.type == "cpu":
        return device
    check(device.type == "cuda", f"unknown device '{requested}'; valid choices: auto, cpu, cuda, cuda:N")
    check(torch.cuda.is_available(), f"device={requested} but CUDA is not available here; use device=cpu or device=auto")
    count = torch.cuda.device_count()
    if local_rank is not None:
        check(local_rank < count, f"torchrun started more processes per node than the {count} visible GPU(s); "
                                  f"use --nproc_per_node={count} or fewer")
        return torch.device("cuda", local_rank)
    index = torch.cuda.current_device() if device.index is None else device.index
    check(index < count, f"device={requested} but only {count} GPU(s) are visible")
    return torch.device("cuda", index)
