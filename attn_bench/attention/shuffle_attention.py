"""Shuffle Attention (SA).

Paper: "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", Qing-Long Zhang, Yu-Bin
Yang, ICASSP 2021, arXiv:2102.00240.

Reference implementation: github.com/wofmanaf/SA-Net, ``models/sa_resnet.py`` (``sa_layer``,
``SABottleneck``). The C channels are split into G groups; each group into two halves of
C / (2G) channels:

    channel half:  x0 * sigmoid(cw * avgpool(x0) + cb)           a weight and bias per channel
    spatial half:  x1 * sigmoid(sw * GN(x1) + sb)                GroupNorm with one channel per group
    out = channel_shuffle(concat(channel half, spatial half), 2)

Defaults (the official ones): ``groups=64``; ``cweight``/``sweight`` start at 0 and ``cbias``/``sbias``
at 1 (every gate starts at sigmoid(1)); the GroupNorm at weight 1 and bias 0 (the official ResNet's
init), eps 1e-5. Parameters: 6 tensors of C / (2G): ``3*C/G`` per block; ResNet-50 with SA in all 16
bottlenecks adds 708 (25,557,740 in all: the official README's "sa_resnet50 25.56", tested).

Placement (official ``SABottleneck``): after ``bn3``, before the addition: attn-bench's ``residual``
site. ``2*groups`` must divide the channels (the official ``reshape`` would fail or mix the halves):
an explicit value that does not is one line; ``placement=paper`` gives a stage that 128 does not
divide (the default model's 16-128-channel stages) the most groups up to 64 that fit, logged and in
the row label, as for SGE.

timm has no SA.

Traps in popular copies: a BatchNorm or a GroupNorm over several channels in the spatial branch;
weights initialised to 1 and biases to 0; shuffling with the group count G instead of 2.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_positive_int
from attn_bench.errors import check

_NAME = "sa"


class ShuffleAttention(nn.Module):
    """Per group: a channel gate on one half, a spatial (GroupNorm) gate on the other, then a shuffle of 2."""

    def __init__(self, channels: int, groups: int = 64):
        super().__init__()
        channels = check_channels(_NAME, channels)
        self.groups = check_positive_int(_NAME, "groups", groups)
        check(channels % (2 * groups) == 0, f"{_NAME}: 2 x groups={groups} must divide channels={channels} (set "
                                            f"model.attn_args.groups so that twice it divides every placed width)")
        half = channels // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, half, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, half, 1, 1))
        self.gn = nn.GroupNorm(half, half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        channel_half, spatial_half = x.reshape(n * self.groups, -1, h, w).chunk(2, dim=1)
        channel = channel_half * torch.sigmoid(self.cweight * channel_half.mean(dim=(2, 3), keepdim=True) + self.cbias)
        spatial = spatial_half * torch.sigmoid(self.sweight * self.gn(spatial_half) + self.sbias)
        out = torch.cat([channel, spatial], dim=1).reshape(n, c, h, w)
        return out.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle, 2 groups
