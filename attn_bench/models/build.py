"""``build_model``: the one place a backbone, its stem and its attention come together."""
from __future__ import annotations

from typing import Any, Iterable

from torch import nn

from attn_bench.errors import ConfigError
from attn_bench.models.backbones import STEMS, create_backbone, use_small_stem
from attn_bench.models.placement import place_attention


def build_model(
    backbone: str,
    attn: str = "none",
    num_classes: int = 1000,
    *,
    stem: str = "imagenet",
    attn_args: dict[str, Any] | None = None,
    attn_stages: Iterable[int] | None = None,
    attn_position: str = "every",
    timm_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Build exactly the model the CLI trains.

    Args:
        backbone: a timm model name from ``SUPPORTED_BACKBONES`` (randomly initialised).
        attn: attention block name (``none`` is the plain backbone with every SE slot cleared).
        num_classes: classifier width.
        stem: ``imagenet`` (timm's stem) or ``small`` (3x3 stride-1 conv, no max-pool, for 32 px).
        attn_args: keyword arguments for the attention block, e.g. ``{"rd_ratio": 0.125}``.
        attn_stages: 1-based stage numbers that get attention; ``None`` means all.
        attn_position: ``every`` block of a chosen stage, or only the ``last`` block of each.
        timm_kwargs: passed to ``timm.create_model``, e.g. ``{"channels": [16, 32, 64, 128]}``.
    """
    if stem not in STEMS:
        raise ConfigError(f"unknown stem '{stem}'; valid choices: {', '.join(STEMS)}")
    model = create_backbone(backbone, num_classes, **(timm_kwargs or {}))
    if stem == "small":
        use_small_stem(model)
    place_attention(model, attn, attn_args, attn_stages, attn_position)
    return model
