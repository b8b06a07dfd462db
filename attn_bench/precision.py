"""One vocabulary for numeric precision: training, profiling and checks all resolve it here
(cf. timm's ``benchmark.py`` ``resolve_precision``)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from attn_bench.errors import ConfigError, check

PRECISIONS = ("fp32", "bf16", "fp16")
_AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str
    amp_dtype: torch.dtype | None  # autocast dtype; None = no autocast
    grad_scaler: bool  # fp16 training needs loss scaling

    def autocast(self, device: torch.device):
        """The context a forward pass runs in at this precision on ``device`` (none for fp32)."""
        return torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()


def resolve_precision(name: str | None, device: torch.device | None = None, key: str = "trainer.precision") -> Precision:
    """``fp32`` / ``bf16`` / ``fp16`` (``None`` = fp32). With ``device``, also checks that it runs there."""
    name = "fp32" if name is None else str(name)
    check(name in PRECISIONS, f"unknown {key} '{name}'; valid choices: {', '.join(PRECISIONS)}")
    if device is not None and name == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key}=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if device is not None and name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{key}=bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16")
    return Precision(name, _AMP_DTYPES[name], name == "fp16")
