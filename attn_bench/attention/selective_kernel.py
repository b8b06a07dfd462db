"""Selective Kernel (SK) unit.

Paper: "Selective Kernel Networks", Xiang Li, Wenhai Wang, Xiaolin Hu, Jian Yang, CVPR 2019,
arXiv:1903.06586.

Official code followed: github.com/implus/SKNet, ``models/sknet50.prototxt`` (Caffe). For one
bottleneck of SKNet-50 (e.g. ``conv2_1``) it reads:

* Split: M = 2 branches on the *same* input, each a grouped 3x3 conv (G = 32, no bias) + BN +
  ReLU; branch m has dilation m + 1 (``3x3g32`` and ``3x3g32d2``: the paper's "5x5" kernel is a
  3x3 conv with dilation 2, Sec. 3.1). A stride, when the block has one, is in every branch.
* Fuse: U = sum of the branches, global average pool, 1x1 conv C -> d (no bias, ``B_fc1``) + BN
  + ReLU, with d = max(C / r, L), r = 16, L = 32 (``B_fc1`` widths 32/32/32/64 for
  C = 128/256/512/1024).
* Select: ONE 1x1 conv d -> M * C (no bias, ``B_fc2``), reshaped to (N, M, C) with channel
  m * C + c for branch m, softmax over the M branches per channel (``B_softmax axis: 1``);
  V = sum_m a_m * U_m.

The SK unit replaces the 3x3 conv (with its BN and ReLU) of every bottleneck (``placement=paper``:
the ``conv`` site); SKNet-50 is otherwise exactly ResNeXt-50 (32x4d): ``resnext50_32x4d`` +
``sk`` has 27,479,784 parameters, the paper's "27.5M" (Table 2; tested exactly).

Defaults: ``branches=2``, ``groups=32``, ``rd_ratio=1/16``, ``min_channels=32`` (the paper's M, G,
r, L). ``out_channels``, ``stride`` and ``dilation`` are the replaced conv's; the ``conv`` site
passes them. Parameters (C_in in, C out, d hidden):
``M * (C_in / G * 9 * C + 2 * C) + C * d + 2 * d + d * M * C``.

Initialisation: the branch convs use kaiming normal (fan_out, ReLU) like the host ResNet's convs;
the two fuse/select convs a Gaussian with std 0.01, as the official prototxt's ``B_fc1`` /
``B_fc2`` ``weight_filler``.

Deviations: none in the computation. (Caffe's BN ``moving_average_fraction 0.95`` is PyTorch's
``momentum=0.05``; we keep PyTorch's 0.1 like every other BN of the host network.)

timm: ``timm.layers.SelectiveKernel`` computes the same unit with ``split_input=False, keep_3x3=True``
(as its ``skresnext50_32x4d``), but its default ``split_input=True`` feeds each branch half of the
channels, and its hidden width is ``make_divisible(C / 16, 32)``, which differs from max(C / r, L)
e.g. for C / r = 48 (64 instead of 48).

Traps in circulating copies: no BN + ReLU after the C -> d layer; M separate biased ``Linear``
heads instead of one bias-free conv; a real 5x5 conv for the second branch; softmax over the
channels instead of the branches; conv biases before BN; ``AvgPool2d`` with a hard-coded size
or ``squeeze()`` that breaks at batch size 1.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_positive, check_positive_int, make_act
from attn_bench.errors import check

_NAME = "sk"


def _branch(channels: int, out_channels: int, stride: int, dilation: int, groups: int, act_layer: str) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups,
                       bias=False),
        bn=nn.BatchNorm2d(out_channels),
        act=make_act(_NAME, "act_layer", act_layer),
    ))


class SelectiveKernel(nn.Module):
    """V = sum_m softmax_m(select(fuse(sum_m U_m))) * U_m, U_m = branch m (3x3, dilation m + 1)."""

    attn_sites = ("conv",)  # the SK unit is a conv: it replaces a block's 3x3 conv

    def __init__(
        self,
        channels: int,
        out_channels: Optional[int] = None,
        stride: int = 1,
        dilation: int = 1,
        branches: int = 2,
        groups: int = 32,
        rd_ratio: float = 1 / 16,
        min_channels: int = 32,
        act_layer: str = "relu",
    ):
        super().__init__()
        channels = check_channels(_NAME, channels)
        out_channels = channels if out_channels is None else check_positive_int(_NAME, "out_channels", out_channels)
        stride, dilation = check_positive_int(_NAME, "stride", stride), check_positive_int(_NAME, "dilation", dilation)
        self.branches = check_positive_int(_NAME, "branches", branches)
        check(self.branches >= 2, f"{_NAME}: branches={branches} must be at least 2 (one branch selects nothing)")
        groups = check_positive_int(_NAME, "groups", groups)
        check(channels % groups == 0 and out_channels % groups == 0,
              f"{_NAME}: groups={groups} must divide the input ({channels}) and output ({out_channels}) channels; "
              f"set +model.attn_args.groups to a divisor")
        rd_ratio = check_positive(_NAME, "rd_ratio", rd_ratio)
        hidden = max(int(out_channels * rd_ratio), check_positive_int(_NAME, "min_channels", min_channels))
        self.paths = nn.ModuleList(
            _branch(channels, out_channels, stride, dilation * (m + 1), groups, act_layer) for m in range(self.branches))
        self.fuse = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(out_channels, hidden, 1, bias=False),
            bn=nn.BatchNorm2d(hidden),
            act=make_act(_NAME, "act_layer", act_layer),
        ))
        self.select = nn.Conv2d(hidden, self.branches * out_channels, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for path in self.paths:
            nn.init.kaiming_normal_(path.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fuse.conv.weight, std=0.01)
        nn.init.normal_(self.select.weight, std=0.01)

    def attention(self, paths: torch.Tensor) -> torch.Tensor:
        """(N, M, C, H, W) branch outputs -> (N, M, C, 1, 1) weights, summing to 1 over M."""
        n, m, c = paths.shape[:3]
        z = self.fuse(paths.sum(dim=1).mean(dim=(2, 3), keepdim=True))
        return self.select(z).view(n, m, c, 1, 1).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = torch.stack([path(x) for path in self.paths], dim=1)
        return (paths * self.attention(paths)).sum(dim=1)
