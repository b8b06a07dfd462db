"""Name -> attention block factory, in the spirit of timm's ``create_attn``.

Every block class takes ``channels`` as its first argument and maps an
``(N, C, H, W)`` tensor to a tensor of the same shape. Classes are imported
lazily so that listing the names costs nothing.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

from attn_bench.errors import ConfigError

_BLOCKS: dict[str, str] = {
    "se": "attn_bench.attention.squeeze_excite:SqueezeExcite",
    "eca": "attn_bench.attention.eca:EfficientChannelAttn",
    "gc": "attn_bench.attention.global_context:GlobalContext",
    "ca": "attn_bench.attention.coord_attn:CoordAttention",
    "gam": "attn_bench.attention.gam:GAM",
    "cbam": "attn_bench.attention.cbam:CBAM",
    "bam": "attn_bench.attention.bam:BAM",
    "simam": "attn_bench.attention.simam:SimAM",
    "triplet": "attn_bench.attention.triplet:TripletAttention",
}

BASELINE = "none"


def list_blocks(include_baseline: bool = True) -> list[str]:
    """Names accepted by ``model.attn``, baseline first."""
    return ([BASELINE] if include_baseline else []) + list(_BLOCKS)


def get_block_class(name: str) -> type[nn.Module]:
    if name not in _BLOCKS:
        raise ConfigError(f"unknown attention block '{name}'; valid choices: {', '.join(list_blocks())}")
    module_name, class_name = _BLOCKS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def block_defaults(name: str) -> dict[str, Any]:
    """Keyword arguments and their defaults, as the block's signature states them."""
    if name == BASELINE:
        return {}
    params = list(inspect.signature(get_block_class(name).__init__).parameters.values())[2:]
    return {p.name: p.default for p in params if p.kind is p.POSITIONAL_OR_KEYWORD}


def create_block(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build block ``name`` for ``channels`` channels; ``none`` gives ``nn.Identity``."""
    if name == BASELINE:
        if kwargs:
            raise ConfigError(f"attention 'none' takes no arguments, got {sorted(kwargs)}")
        return nn.Identity()
    cls = get_block_class(name)
    unknown = sorted(set(kwargs) - set(block_defaults(name)))
    if unknown:
        raise ConfigError(
            f"attention '{name}' has no argument(s) {', '.join(unknown)}; "
            f"valid: {', '.join(block_defaults(name)) or '(none)'}"
        )
    return cls(channels, **kwargs)
