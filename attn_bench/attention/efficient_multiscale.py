"""Efficient Multi-scale Attention (EMA) with cross-spatial learning.

Paper: "Efficient Multi-Scale Attention Module with Cross-Spatial Learning", Daliang Ouyang, Su He,
Guozhong Zhang, Mingzhu Luo, Huaiyong Guo, Jian Zhan, Zhijie Huang, ICASSP 2023, arXiv:2305.13563.

Reference implementation: github.com/YOLOonMe/EMA-attention-module, ``EMA_attention_module``
(``EMA``) and, for where it goes, the timm it trained its ImageNet MobileNetV2 with:
``timm/models/layers/ema.py`` (``EmaModule``, the same module) and ``timm/models/efficientnet_blocks.py``.
The channels are split into ``factor`` groups; in each group of C/G channels:

    x1 = GN(x * sigmoid(1x1 conv of [pool_h(x), pool_w(x)] split back to h and w))   the 1x1 branch (CA-like)
    x2 = 3x3 conv(x)                                                                  the 3x3 branch
    w  = softmax_c(mean(x1)) . x2 + softmax_c(mean(x2)) . x1     (one map per group: cross-spatial learning)
    out = x * sigmoid(w)

Defaults (the official ones): ``factor=32`` groups, one GroupNorm group per channel (C/G groups of
C/G channels), both convs C/G -> C/G with bias, PyTorch's default initialisation. Parameters per
block: ``10 * (C/G)^2 + 4 * C/G`` (the convs' weights and biases, the GroupNorm's affine); the groups
share them. ``channels`` must be a multiple of ``factor`` (the official reshape), otherwise one line.

Placement (official ``efficientnet_blocks.py``): after the depthwise conv's BN and activation of an
``InvertedResidual`` whose expanded width exceeds 144 (a ``DepthwiseSeparableConv`` whose width
exceeds 320): attn-bench's ``residual`` site of those MobileNet blocks. MobileNetV2 then has EMA in
13 of 17 blocks: +44,400 parameters, 3,549,272 in all (the README's 3.55M, tested). Its ResNet
placement is not released: the README's CIFAR ResNet-50 (23.71M -> 23.85M) matches none counted here
(after the last BN of all 16 bottlenecks +198,368; after conv2 +12,752), so on a ResNet
``placement=paper`` puts it at the residual site of every block and the row says it is not a
published network.

timm has no EMA. Trap of popular copies: the module under the name "EMA" is often mistaken for an
exponential moving average of weights (timm's ``ModelEma``), which is unrelated.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_positive_int
from attn_bench.errors import check

_NAME = "ema"


class EfficientMultiScaleAttention(nn.Module):
    """The official EMA: grouped 1x1 (directional pooling) and 3x3 branches, crossed through softmax-pooled maps."""

    def __init__(self, channels: int, factor: int = 32):
        super().__init__()
        channels = check_channels(_NAME, channels)
        self.groups = check_positive_int(_NAME, "factor", factor)
        check(channels % factor == 0, f"{_NAME}: factor={factor} groups must divide the channels ({channels})")
        width = channels // factor
        self.gn = nn.GroupNorm(width, width)
        self.conv1x1 = nn.Conv2d(width, width, 1)
        self.conv3x3 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        group_x = x.reshape(b * self.groups, c // self.groups, h, w)
        x_h = group_x.mean(3, keepdim=True)  # (bg, c/g, h, 1)
        x_w = group_x.mean(2, keepdim=True).transpose(2, 3)  # (bg, c/g, w, 1)
        gate_h, gate_w = self.conv1x1(torch.cat([x_h, x_w], dim=2)).split([h, w], dim=2)
        x1 = self.gn(group_x * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(group_x)
        flat1, flat2 = x1.flatten(2), x2.flatten(2)  # (bg, c/g, hw)
        attn1 = flat1.mean(2).softmax(1).unsqueeze(1)  # (bg, 1, c/g): softmax over the group's channels
        attn2 = flat2.mean(2).softmax(1).unsqueeze(1)
        weights = (attn1 @ flat2 + attn2 @ flat1).reshape(b * self.groups, 1, h, w)
        return (group_x * weights.sigmoid()).reshape(b, c, h, w)
