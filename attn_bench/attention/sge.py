"""Spatial Group-wise Enhance (SGE).

Paper: "Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional Networks",
Xiang Li, Xiaolin Hu, Jian Yang, arXiv:1905.09646, 2019.

Reference implementation: github.com/implus/PytorchInsight,
``classification/models/imagenet/resnet_sge.py`` (``SpatialGroupEnhance``). The C channels are split
into G groups of C/G; in each group g, at each position i:

    c_i = x_i . mean(x)                          similarity of the local feature to the group's mean
    n_i = (c_i - mean(c)) / (std(c) + 1e-5)      normalised over the group's H*W positions
    a_i = sigmoid(w_g * n_i + b_g)               one weight and bias per group
    out_i = x_i * a_i

Defaults (the official ones): ``groups=64``; the weights start at 0 and the biases at 1 (so every
gate starts at sigmoid(1) = 0.731); the standard deviation is PyTorch's ``Tensor.std`` as the official
code calls it: unbiased (divides by H*W - 1), with 1e-5 added after the square root. Parameters:
``2*G`` per block, whatever the width; ResNet-50 with SGE in all 16 bottlenecks adds 2,048
(25,559,080 in all; the official README's "SGE-ResNet50 25.56M", tested).

Placement (official ``resnet_sge.py``): in every Bottleneck after ``bn3``, before the addition:
attn-bench's ``residual`` site (``placement=paper`` and ``uniform`` agree).

Deviations: (1) with a single position (H*W = 1) the unbiased std divides by 0 and is NaN in the
official code; we use a divisor of max(H*W - 1, 1). (2) A group that is exactly constant (every timm
residual branch at step 0: ``zero_init_last``) has std 0, where sqrt's gradient is infinite and the
official backward gives NaN; we floor the variance at 1e-12 (std 1e-6 instead of 0, gradient 0 below
it), the official value wherever a group's similarities vary by more than 1e-6. (3) ``groups`` must
divide the channels: the official ``view`` fails otherwise; here it is one line naming the key to
set (``model.attn_args.groups``), e.g. for 16-channel CIFAR stages or MobileNets' 24-channel blocks.

timm has no SGE.

Traps in popular copies: the biased std, or the epsilon inside the square root; a BN or a learned
projection in place of the plain normalisation; weight 1 / bias 0 at initialisation (the official
code starts at weight 0, bias 1).
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_positive_int
from attn_bench.errors import check

_NAME = "sge"
VAR_FLOOR = 1e-12  # std >= 1e-6: the gradient of sqrt at an exactly constant group is infinite
EPS = 1e-5  # added to the std, as the official code


class SpatialGroupEnhance(nn.Module):
    """x * sigmoid(w_g * normalise(x . mean_g(x)) + b_g) for each of ``groups`` channel groups."""

    def __init__(self, channels: int, groups: int = 64):
        super().__init__()
        channels = check_channels(_NAME, channels)
        self.groups = check_positive_int(_NAME, "groups", groups)
        check(channels % groups == 0, f"{_NAME}: groups={groups} must divide channels={channels} (set "
                                      f"model.attn_args.groups to a divisor of every placed block's width)")
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def similarity(self, x: torch.Tensor) -> torch.Tensor:
        """(N, G, H, W): each position's dot product with its group's mean feature, normalised over positions."""
        n, _, h, w = x.shape
        grouped = x.reshape(n * self.groups, -1, h, w)
        c = (grouped * grouped.mean(dim=(2, 3), keepdim=True)).sum(dim=1).reshape(n * self.groups, h * w)
        c = c - c.mean(dim=1, keepdim=True)
        var = c.pow(2).sum(dim=1, keepdim=True) / max(h * w - 1, 1)
        return (c / (var.clamp_min(VAR_FLOOR).sqrt() + EPS)).reshape(n, self.groups, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        gate = torch.sigmoid(self.similarity(x) * self.weight + self.bias)
        return (x.reshape(n, self.groups, c // self.groups, h, w) * gate.unsqueeze(2)).reshape(n, c, h, w)

