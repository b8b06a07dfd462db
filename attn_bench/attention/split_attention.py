"""Split-Attention (ResNeSt), at the ``conv`` site.

Paper: "ResNeSt: Split-Attention Networks", Hang Zhang, Chongruo Wu, Zhongyue Zhang, Yi Zhu, et al.,
CVPR Workshops 2022, arXiv:2004.08955, Sec. 3 and Fig. 2.

Reference implementation: github.com/zhanghang1989/ResNeSt, ``resnest/torch/models/splat.py``
(``SplAtConv2d``) and ``resnet.py`` (``Bottleneck``), as timm ports them: ``timm.layers.SplitAttn``
and ``timm/models/resnest.py``, which this block is built on (timm's ``resnest50d`` is ResNeSt-50
parameter for parameter). The unit replaces a block's 3x3 conv with its BN and ReLU:

    U = ReLU(BN(grouped 3x3 conv, C_in -> radix * C_out, groups = radix * cardinality))
    split U into radix parts; s = mean over positions of their sum
    a = r-softmax(fc2(ReLU(BN(fc1(s)))))             per cardinal group, over the radix splits
    out = sum_r a_r * U_r                             (then, in a strided block, a 3x3 average pool: avd)

Defaults (ResNeSt-50's): ``radix=2``, cardinality 1, ``rd_ratio=1/4`` of ``C_in * radix`` for the
attention width (at least 32, a multiple of 8: timm's ``make_divisible``), fc1/fc2 with bias, and
``avd=True``: in a strided block the conv keeps stride 1 and a 3x3 stride-2 average pool follows
(ResNeSt's ``avd``, ``avd_first=False``). Initialisation: the convs ``kaiming_normal_`` (fan-out,
ReLU) as timm's ResNets init every conv, BN weight 1 and bias 0.

What differs from ResNeSt-50 on ``model=resnet50``: the network around the units. ResNeSt-50 is
timm's ``resnet50d`` trunk (a deep stem of three 3x3 convs 32-32-64, +19,232 parameters, and
average-pool downsampling in the shortcuts, parameter-free) with these units: 27,483,240 in all;
``model=resnet50 model.attn=splat`` has the 7x7 stem and strided 1x1 shortcuts: 27,464,008 (both
tested). Placement: the ``conv`` site of every block (Bottleneck ``conv2``, BasicBlock ``conv1``).
"""
from __future__ import annotations

from typing import Optional

from timm.layers import SplitAttn
from torch import nn

from attn_bench.attention._args import check_channels, check_positive, check_positive_int
from attn_bench.errors import check

_NAME = "splat"


class SplitAttention(nn.Sequential):
    """timm's SplitAttn (ResNeSt's SplAtConv2d) as a conv-site unit, with ResNeSt's avd in strided blocks."""

    attn_sites = ("conv",)  # it is a conv: it replaces a block's 3x3 conv

    def __init__(self, channels: int, out_channels: Optional[int] = None, stride: int = 1, dilation: int = 1,
                 radix: int = 2, rd_ratio: float = 1 / 4, avd: bool = True):
        channels = check_channels(_NAME, channels)
        out_channels = channels if out_channels is None else check_positive_int(_NAME, "out_channels", out_channels)
        stride, dilation = check_positive_int(_NAME, "stride", stride), check_positive_int(_NAME, "dilation", dilation)
        radix = check_positive_int(_NAME, "radix", radix)
        check(isinstance(avd, bool), f"{_NAME}: avd={avd!r} must be true or false")
        check(channels % radix == 0, f"{_NAME}: radix={radix} must divide the input channels ({channels})")
        pool = avd and stride > 1
        split = SplitAttn(channels, out_channels, kernel_size=3, stride=1 if pool else stride, padding=dilation,
                          dilation=dilation, radix=radix, rd_ratio=check_positive(_NAME, "rd_ratio", rd_ratio),
                          norm_layer=nn.BatchNorm2d)
        super().__init__(split, *([nn.AvgPool2d(3, stride, padding=1)] if pool else []))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
