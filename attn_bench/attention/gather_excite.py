"""Gather-Excite (GE): context gathered over a large extent, redistributed as a gate.

Paper: "Gather-Excite: Exploiting Feature Context in Convolutional Neural Networks", Jie Hu, Li Shen,
Samuel Albanie, Gang Sun, Andrea Vedaldi, NeurIPS 2018, arXiv:1810.12348.

Reference implementation: github.com/hujie-frank/GENet (Caffe): ``models/RN50-GEPF.prototxt``
(GE-theta-), ``models/RN50-GEP.prototxt`` (GE-theta), ``models/RN50-GEPP.prototxt`` (GE-theta+), and
the schemas of the extent-8 variants in ``figures/GEPF8.jpg`` and ``figures/GEP8.jpg``. Three variants,
``variant=``:

    theta-  (parameter-free)  g = mean_{h,w} x                      global extent (RN50-GEPF)
                              g = avgpool(x, 2e-1, stride e)        extent e (GEPF8: 15x15, stride 8)
    theta   (depthwise gather) g = BN(dwconv_{HxW}(x))              global: one kernel the size of the map,
                                                                    no padding, no bias (RN50-GEP)
                              g = BN(dw3x3s2(... ReLU(BN(dw3x3s2(x)))))  log2(e) strided convs (GEP8)
    theta+  (+ excite MLP)    g = W2 ReLU(W1 ReLU(BN(dwconv_{HxW}(x))) + b1) + b2    C -> C/16 -> C (RN50-GEPP)

    out = x * sigmoid(interpolate(g, H x W))   (a 1x1 g broadcasts; the extents' nearest-neighbour)

Defaults: ``variant='theta-'``, ``extent=0`` (global), the network the paper's abstract reports ("with
no additional learnable parameters"). Initialisation as the prototxts: the depthwise convs ``msra``
(``kaiming_normal_``, fan-in k x k), BN weight 1 and bias 0, theta+'s 1x1 convs Gaussian std 0.01 with
zero biases. Parameters per block: theta- none; theta global ``C*H*W + 2C``; theta+ that plus
``2*C*C/16 + C/16 + C``. On ResNet-50 at 224 px (maps 56/28/14/7): +5,549,568 (31,106,600 in all) and
+8,080,560 (33,637,592), counted from the prototxts (the paper's own table was not available here).

The global depthwise kernel is the size of the map, so theta with ``extent=0`` needs ``feat_size``, the
map size at its slot: attn-bench passes it from ``img_size`` to every block whose constructor takes
``feat_size`` (as timm's byobnet does), and a map of another size is one line at the first forward.

Placement (every prototxt): the gate on the output of the last BN of every bottleneck, before the
addition (Axpy): attn-bench's ``residual`` site (``placement=paper`` and ``uniform`` agree).

Deviations: the extent variants' average pool divides by the pixels inside the map (the figures give
kernel and stride only; Caffe's AVE pooling would count the padding inside its window), and the
interpolation is nearest-neighbour (the figures say "Interpolation"). theta+ is released with the
global gather only; other extents with the MLP are refused. Training details of the prototxts not
carried over: BN momentum 0.95 (Caffe's sense; ours PyTorch's 0.1, as the backbone), bias lr x2.
timm's ``GatherExcite`` is not used: its global parametric gather pads the kernel ('same'), so its
output is a full map instead of the prototxt's 1x1, and its theta+ has no ReLU after the gather's BN.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attn_bench.attention._args import check_channels, hidden_channels
from attn_bench.errors import ConfigError, check

_NAME = "ge"
VARIANTS = ("theta-", "theta", "theta+")


def _check_extent(extent: Any) -> int:
    ok = isinstance(extent, int) and not isinstance(extent, bool) and extent >= 0
    check(ok and (extent == 0 or (extent >= 2 and extent & (extent - 1) == 0)),
          f"{_NAME}: extent={extent!r} must be 0 (global) or a power of two >= 2 (the paper's 2, 4, 8)")
    return extent


def _map_size(feat_size: Any) -> tuple[int, int]:
    size = (feat_size, feat_size) if isinstance(feat_size, int) and not isinstance(feat_size, bool) else feat_size
    ok = (isinstance(size, Sequence) and len(size) == 2
          and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size))
    check(ok, f"{_NAME}: feat_size={feat_size!r} must be the map size at the slot, an integer or (height, width)")
    return int(size[0]), int(size[1])


def _depthwise(channels: int, kernel: tuple[int, int], stride: int = 1, padding: int = 0) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel, stride, padding, groups=channels, bias=False)
    nn.init.kaiming_normal_(conv.weight)  # Caffe's msra filler: fan-in k x k per depthwise kernel
    return conv


class GatherExcite(nn.Module):
    """x * sigmoid(excite(gather(x))), GENet's theta- / theta / theta+ at a global or strided extent."""

    def __init__(self, channels: int, variant: str = "theta-", extent: int = 0, rd_ratio: float = 1 / 16,
                 feat_size: int | Sequence[int] | None = None):
        super().__init__()
        channels = check_channels(_NAME, channels)
        check(variant in VARIANTS, f"{_NAME}: variant={variant!r}; valid choices: {', '.join(VARIANTS)}")
        self.variant, self.extent = variant, _check_extent(extent)
        check(variant != "theta+" or extent == 0,
              f"{_NAME}: variant='theta+' is released with the global gather only (extent=0), not extent={extent}")
        check(variant == "theta+" or rd_ratio == 1 / 16,
              f"{_NAME}: rd_ratio is the width of theta+'s excite MLP; variant={variant!r} has none")
        self.feat_size = None if feat_size is None else _map_size(feat_size)
        self.gather = self._parametric_gather(channels) if variant != "theta-" else None
        self.mlp = None
        if variant == "theta+":
            hidden = hidden_channels(_NAME, channels, rd_ratio)
            self.mlp = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
            for conv in (self.mlp[1], self.mlp[3]):
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)

    def _parametric_gather(self, channels: int) -> nn.Sequential:
        if self.extent == 0:
            check(self.feat_size is not None,
                  f"{_NAME}: variant={self.variant!r} with extent=0 (global) needs feat_size, the map size at its "
                  "slot (attn-bench sets it from img_size: build_placed(..., img_size=224))")
            return nn.Sequential(_depthwise(channels, self.feat_size), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        for i in range(int(math.log2(self.extent))):
            layers += [nn.ReLU()] if i else []
            layers += [_depthwise(channels, (3, 3), stride=2, padding=1), nn.BatchNorm2d(channels)]
        return nn.Sequential(*layers)

    def _gathered(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather is None:
            if self.extent == 0:
                return x.mean((2, 3), keepdim=True)
            e = self.extent
            return F.avg_pool2d(x, 2 * e - 1, stride=e, padding=e - 1, count_include_pad=False)
        if self.extent == 0 and tuple(x.shape[-2:]) != self.feat_size:
            raise ConfigError(f"{_NAME}: built for a {self.feat_size[0]}x{self.feat_size[1]} map (feat_size), got "
                              f"{x.shape[-2]}x{x.shape[-1]}: the global depthwise gather is the size of its map; "
                              "build the model for this img_size")
        return self.gather(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self._gathered(x)
        if self.mlp is not None:
            g = self.mlp(g)
        if g.shape[-2:] != (1, 1):
            g = F.interpolate(g, size=x.shape[-2:], mode="nearest")
        return x * torch.sigmoid(g)
