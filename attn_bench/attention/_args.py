"""Argument checks shared by the attention blocks.

Every failure is a :class:`~attn_bench.errors.ConfigError` whose one-line
message starts with the block's registry name and names the argument, its
value and the reason.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

from timm.layers import create_act_layer, get_act_layer, make_divisible
from torch import nn

from attn_bench.errors import check


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_channels(block: str, channels: Any) -> int:
    check(_is_int(channels) and channels >= 1, f"{block}: channels={channels!r} must be a positive integer")
    return channels


def check_positive_int(block: str, arg: str, value: Any) -> int:
    check(_is_int(value) and value >= 1, f"{block}: {arg}={value!r} must be a positive integer")
    return value


def check_positive(block: str, arg: str, value: Any) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    check(ok, f"{block}: {arg}={value!r} must be a positive number")
    return float(value)


def check_odd_kernel(block: str, arg: str, value: Any) -> int:
    check(_is_int(value) and value >= 1, f"{block}: {arg}={value!r} must be a positive integer")
    check(value % 2 == 1, f"{block}: {arg}={value} must be odd so that 'same' padding keeps the size")
    return value


def hidden_channels(
    block: str, channels: int, rd_ratio: Any, rd_channels: Any = None, rd_divisor: Any = 1
) -> int:
    """Width of a reduction MLP: ``rd_channels`` if given, else ``floor(channels * rd_ratio)``.

    With ``rd_divisor > 1`` the width is rounded to the nearest multiple of the
    divisor (never below it), exactly as timm's ``SEModule`` does.
    """
    if rd_channels is not None:
        check(_is_int(rd_channels) and rd_channels >= 1,
              f"{block}: rd_channels={rd_channels!r} must be a positive integer (or None to use rd_ratio)")
        return rd_channels
    rd_ratio = check_positive(block, "rd_ratio", rd_ratio)
    check(rd_ratio <= 1, f"{block}: rd_ratio={rd_ratio} must be in (0, 1] (a reduction, not an expansion)")
    check(_is_int(rd_divisor) and rd_divisor >= 1, f"{block}: rd_divisor={rd_divisor!r} must be a positive integer")
    if rd_divisor == 1:
        # round() first so that e.g. 9 * (1/3) = 2.9999999999999996 still floors to 3.
        hidden = math.floor(round(channels * rd_ratio, 6))
    else:
        hidden = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
    check(hidden >= 1,
          f"{block}: rd_ratio={rd_ratio:g} gives {hidden} hidden channels for channels={channels} "
          f"(need >= 1); raise rd_ratio or set rd_channels")
    return hidden


def make_act(block: str, arg: str, value: Any) -> nn.Module:
    """Instantiate an activation given by timm name (e.g. 'relu', 'hard_sigmoid') or class."""
    try:
        layer = get_act_layer(value)
    except (KeyError, TypeError):
        layer = None
    check(layer is not None,
          f"{block}: {arg}={value!r} is not a known activation "
          f"(use a timm name such as 'relu', 'sigmoid', 'hard_sigmoid', 'hard_swish')")
    return create_act_layer(layer)
