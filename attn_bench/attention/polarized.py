"""Polarized Self-Attention (PSA).

Paper: "Polarized Self-Attention: Towards High-quality Pixel-wise Regression", Huajun Liu, Fuqiang
Liu, Xinyi Fan, Dong Huang, arXiv:2107.00782 (2021).

Official code followed, line for line: github.com/DeLightCMU/PSA,
``semantic-segmentation/network/PSA.py`` (``PSA_p``: parallel, our default; ``PSA_s``:
sequential), with inplanes = planes = C and Ci = C/2. All q/v convs are 1x1 without bias.

* Channel-only branch (the official ``spatial_pool``): q = softmax over the H*W positions of a
  1x1 conv C -> 1; v = 1x1 conv C -> Ci; the q-weighted sum of v over the positions (N, Ci, 1, 1),
  ``conv_up`` to C channels, sigmoid: a per-channel gate, constant over space.
  ``conv_up``: parallel, one 1x1 conv Ci -> C without bias; sequential, 1x1 conv Ci -> Ci/4 (bias),
  LayerNorm([Ci/4, 1, 1]), ReLU, 1x1 conv Ci/4 -> C (bias).
* Spatial-only branch (the official ``channel_pool``): q = global average pool of a 1x1 conv
  C -> Ci; v = 1x1 conv C -> Ci; per position the q . v product, then parallel: softmax over the
  positions of that product; sequential: softmax over the positions of v, per channel, before the
  product; then sigmoid: a per-position gate, constant over the channels.
* Parallel: out = x * channel_gate + x * spatial_gate. Sequential: the spatial branch applied to
  the output of the channel branch.

Initialisation (official ``reset_parameters``): mmcv ``kaiming_init(mode='fan_in')`` (normal, ReLU
gain, zero bias) on the four q/v convs; ``conv_up`` keeps PyTorch's default. The block is not the
identity at initialisation.

Defaults: ``layout='parallel'``. Parameters: parallel 2C^2 + C; sequential 27C^2/16 + 19C/8
(C divisible by 8).

Where the official code differs from the paper (we follow the code; issue #5 of the official
repository): the paper's channel branch has a LayerNorm before the sigmoid (the parallel code has
none, the sequential a bottleneck MLP); the paper's spatial branch applies the softmax to the
pooled query over its Ci channels, the code over the positions as above. In the parallel code the
spatial gate is sigmoid(softmax over H*W), close to sigmoid(1/HW) ~ 0.5 everywhere: near-constant,
as the code is.

Placement (``placement=paper``): the paper adds PSA "after the first 3x3 convolution in every
residual block" (ResNet / HRNet); for bottlenecks that is the ``mid`` site (right after the 3x3
conv, before its BN; the released HRNet code puts it after that conv's BN and ReLU in its basic
blocks, one BN + ReLU later). Not published: a classification network. The paper's experiments are
keypoint estimation and segmentation, and the official code (DeLightCMU/PSA) releases only those
HRNets, so there is no ImageNet placement and no parameter count for a classification backbone.
BasicBlocks and MobileNets (where the ``mid`` site follows the *second* 3x3 conv, SimAM's site, not
the first) get the ``residual`` site, logged.

Traps in circulating copies: "PSA" in many blog posts is EPSANet's *Pyramid Squeeze Attention*, a
different module; External-Attention-pytorch's ``PolarizedSelfAttention`` follows the paper's
equations rather than the official code (softmax over Ci, LayerNorm, biases everywhere).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from attn_bench.attention._args import check_channels
from attn_bench.errors import check

_NAME = "psa"
_LAYOUTS = ("parallel", "sequential")


def _conv(c_in: int, c_out: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, bias=bias)


def _conv_up(inner: int, channels: int, layout: str) -> nn.Module:
    if layout == "parallel":
        return _conv(inner, channels)
    hidden = inner // 4
    return nn.Sequential(OrderedDict(
        fc1=_conv(inner, hidden, bias=True), norm=nn.LayerNorm([hidden, 1, 1]), act=nn.ReLU(),
        fc2=_conv(hidden, channels, bias=True),
    ))


class PolarizedSelfAttention(nn.Module):
    """Parallel: x * sigmoid(channel-only) + x * sigmoid(spatial-only); sequential: one after the other."""

    def __init__(self, channels: int, layout: str = "parallel"):
        super().__init__()
        channels = check_channels(_NAME, channels)
        check(layout in _LAYOUTS, f"{_NAME}: layout={layout!r} must be one of {', '.join(_LAYOUTS)}")
        check(channels >= 2 and (layout == "parallel" or channels >= 8),
              f"{_NAME}: channels={channels} too few for the {layout} layout (needs >= {2 if layout == 'parallel' else 8})")
        self.layout = layout
        inner = channels // 2
        self.ch_q, self.ch_v = _conv(channels, 1), _conv(channels, inner)
        self.ch_up = _conv_up(inner, channels, layout)
        self.sp_q, self.sp_v = _conv(channels, inner), _conv(channels, inner)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.ch_q, self.ch_v, self.sp_q, self.sp_v):
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, 1, 1)."""
        q = self.ch_q(x).flatten(2).softmax(dim=-1)  # N, 1, HW
        v = self.ch_v(x).flatten(2)  # N, Ci, HW
        return torch.sigmoid(self.ch_up(torch.matmul(v, q.transpose(1, 2)).unsqueeze(-1)))

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1, H, W)."""
        n, _, h, w = x.shape
        q = self.sp_q(x).mean(dim=(2, 3)).unsqueeze(1)  # N, 1, Ci
        v = self.sp_v(x).flatten(2)  # N, Ci, HW
        if self.layout == "sequential":
            return torch.sigmoid(torch.matmul(q, v.softmax(dim=-1)).view(n, 1, h, w))
        return torch.sigmoid(torch.matmul(q, v).softmax(dim=-1).view(n, 1, h, w))

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial-only gate, (N, H, W) (``attn-bench visualize``)."""
        y = x * self.channel_gate(x) if self.layout == "sequential" else x
        return self.spatial_gate(y)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "sequential":
            y = x * self.channel_gate(x)
            return y * self.spatial_gate(y)
        return x * self.channel_gate(x) + x * self.spatial_gate(x)
