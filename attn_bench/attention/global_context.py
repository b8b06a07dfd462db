"""Global Context (GC) block.

Paper: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
Yue Cao, Jiarui Xu, Stephen Lin, Fangyun Wei, Han Hu, ICCV Workshops 2019,
arXiv:1904.11492 (extended as "Global Context Networks", TPAMI 2020, arXiv:2012.13375).

Reference implementation: github.com/xvjiarui/GCNet, ``mmdet/ops/gcb/context_block.py``
(``ContextBlock``; the same code later moved to mmcv as ``mmcv.cnn.ContextBlock``).

* Context modelling, ``pooling='att'``: a 1x1 conv C -> 1 (with bias) gives one logit
  per position, softmax over the H*W positions, context = attention-weighted sum of
  the features (one C-vector per image). ``pooling='avg'``: global average pool.
* Transform (one per fusion): 1x1 conv C -> C_r, LayerNorm over [C_r, 1, 1], ReLU,
  1x1 conv C_r -> C (all convs with bias).
* Fusion: ``'channel_add'`` broadcasts the transform's output onto every position
  (x + t); ``'channel_mul'`` rescales (x * sigmoid(t)). Both may be used, as in the
  official ``fusion_types`` tuple; the multiplication is applied first, then the
  addition, as in the official forward. Give several as ``'channel_mul+channel_add'``
  (or ``,``-separated, or a list).

Defaults: ``rd_ratio=1/16`` (the paper's r = 16), hidden width ``floor(C * rd_ratio)``
(official ``int(inplanes * ratio)``), ``pooling='att'``, ``fusion='channel_add'``
(the paper's best and the official default), ReLU.
Parameters: ``(C + 1 if pooling == 'att' else 0) + n_fusions * (2*C*C_r + 3*C_r + C)``
(each transform: conv C*C_r + C_r, LayerNorm 2*C_r, conv C_r*C + C).

Initialisation (official ``reset_parameters``): the attention conv uses mmcv's
``kaiming_init(mode='fan_in')`` = ``kaiming_normal_(mode='fan_in', nonlinearity='relu')``
with zero bias; the LAST conv of every transform is zero (weight and bias,
``constant_init(m, 0)``); the first conv keeps the PyTorch default. Hence with
``channel_add`` the block is exactly the identity at initialisation, and a
``channel_mul`` branch starts as a uniform x * 0.5. (The official mmdet ResNet keeps
this init when it loads an ImageNet checkpoint; its from-scratch ``init_weights``
re-initialises every Conv2d with kaiming, which would undo the zero init - a backbone
wrapper that re-inits all convs must skip this block.)

Placement (paper Sec. 5 / official mmdet ResNet): on the residual branch after the
last 1x1 conv + BN of the bottleneck, before the addition with the identity path;
the paper's main results insert it in stages c3-c5.

Deviations from the paper: none.

timm: ``timm.layers.GlobalContext`` has the same structure but different defaults:
``rd_ratio=1/8``, ``fuse_scale=True, fuse_add=False`` (i.e. channel_mul, not the
paper's channel_add), widths rounded to the nearest integer (``make_divisible`` with
divisor 1) rather than floored, LayerNorm eps 1e-6 instead of PyTorch's 1e-5, and only
the last conv's *weight* is zeroed (its bias keeps the default init, so timm's add
branch is not an identity at init). With matching settings and eps it computes the same
function (tested).

Traps in popular copies: forgetting the zero init of the last conv; softmax over the
channel axis instead of the spatial positions; BatchNorm instead of LayerNorm in the
transform (BN on a 1x1 map needs batch statistics); sigmoid on the add branch.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence, Union

import torch
from torch import nn

from attn_bench.attention._args import check_channels, hidden_channels, make_act
from attn_bench.errors import check

_NAME = "gc"
_FUSIONS = ("channel_add", "channel_mul")
_POOLINGS = ("att", "avg")


def parse_fusion(fusion: Union[str, Sequence[str]]) -> tuple[str, ...]:
    """'channel_add', 'channel_mul+channel_add', 'a,b' or a list -> tuple of valid names."""
    if isinstance(fusion, str):
        names = [part.strip() for part in fusion.replace(",", "+").split("+")]
    elif isinstance(fusion, Sequence):
        names = [str(part).strip() for part in fusion]
    else:
        names = []
    valid = names and all(n in _FUSIONS for n in names) and len(set(names)) == len(names)
    check(bool(valid),
          f"{_NAME}: fusion={fusion!r} must name one or both of {', '.join(_FUSIONS)} "
          f"without repeats (e.g. 'channel_add' or 'channel_mul+channel_add')")
    return tuple(n for n in _FUSIONS if n in names)


def _transform(channels: int, hidden: int, act_layer: str) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        fc1=nn.Conv2d(channels, hidden, kernel_size=1),
        norm=nn.LayerNorm([hidden, 1, 1]),
        act=make_act(_NAME, "act_layer", act_layer),
        fc2=nn.Conv2d(hidden, channels, kernel_size=1),
    ))


class GlobalContext(nn.Module):
    """out = x * sigmoid(T_mul(ctx)) [if channel_mul] + T_add(ctx) [if channel_add]."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: Optional[int] = None,
        pooling: str = "att",
        fusion: str = "channel_add",
        act_layer: str = "relu",
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        channels = check_channels(_NAME, channels)
        hidden = hidden_channels(_NAME, channels, rd_ratio, rd_channels)
        check(pooling in _POOLINGS, f"{_NAME}: pooling={pooling!r} must be one of {', '.join(_POOLINGS)}")
        self.fusions = parse_fusion(fusion)
        gate = make_act(_NAME, "gate_layer", gate_layer)  # validated even when unused
        self.conv_attn = nn.Conv2d(channels, 1, kernel_size=1) if pooling == "att" else None
        self.mlp_mul = _transform(channels, hidden, act_layer) if "channel_mul" in self.fusions else None
        self.gate = gate if self.mlp_mul is not None else None
        self.mlp_add = _transform(channels, hidden, act_layer) if "channel_add" in self.fusions else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.conv_attn is not None:
            nn.init.kaiming_normal_(self.conv_attn.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_attn.bias)
        for mlp in (self.mlp_mul, self.mlp_add):
            if mlp is not None:
                nn.init.zeros_(mlp.fc2.weight)
                nn.init.zeros_(mlp.fc2.bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, 1, 1) global context vector."""
        if self.conv_attn is None:
            return x.mean(dim=(2, 3), keepdim=True)
        n, c, h, w = x.shape
        attn = self.conv_attn(x).view(n, h * w).softmax(dim=-1)
        return torch.einsum("ncp,np->nc", x.reshape(n, c, h * w), attn).view(n, c, 1, 1)

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor | None:
        """The softmax weights over positions, (N, H, W); None for average pooling (``attn-bench visualize``)."""
        if self.conv_attn is None:
            return None
        n, _, h, w = x.shape
        return self.conv_attn(x).view(n, h * w).softmax(dim=-1).view(n, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context(x)
        out = x
        if self.mlp_mul is not None:
            out = out * self.gate(self.mlp_mul(ctx))
        if self.mlp_add is not None:
            out = out + self.mlp_add(ctx)
        return out
