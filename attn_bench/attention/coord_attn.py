"""Coordinate Attention (CA).

Paper: Qibin Hou, Daquan Zhou, Jiashi Feng, "Coordinate Attention for Efficient Mobile Network
Design", CVPR 2021, arXiv:2103.02907.

Reference implementation followed: the official repository houqb/CoordAttention, ``coordatt.py``
(class ``CoordAtt``), with the weight initialisation of ``mbv2_ca.py`` (``_initialize_weights``).

Definition (paper Eqs. 4-9, official code)::

    z_h = mean_w(x)                      # (N, C, H, 1)  pool along the width
    z_w = mean_h(x)                      # (N, C, 1, W)  pool along the height
    f   = act(BN(conv1x1_{C->mip}([z_h ; z_w^T])))   # shared transform, concat on the spatial axis
    f_h, f_w = split(f)                  # (N, mip, H, 1), (N, mip, W, 1)
    a_h = gate(conv1x1_{mip->C}(f_h))    # (N, C, H, 1)
    a_w = gate(conv1x1_{mip->C}(f_w^T))  # (N, C, 1, W)
    out = x * a_h * a_w

Defaults (official): ``mip = max(8, C // 32)`` i.e. ``rd_ratio=1/32`` and ``min_rd_channels=8``;
``act_layer='hard_swish'`` (the official ``h_swish`` is ``x * relu6(x + 3) / 6``, which is exactly
``nn.Hardswish``); ``gate_layer='sigmoid'``; every 1x1 conv has a bias (PyTorch default in the
official code); BatchNorm2d on the shared transform. ``rd_channels`` overrides the ratio rule
(``min_rd_channels`` is then not applied).

Initialisation: as ``mbv2_ca.py``: conv weights ~ N(0, 2 / (k*k*out_channels)) (Kaiming normal,
fan-out), conv biases 0, BN weight 1 and bias 0.

Placement in the paper: inside the MobileNetV2 inverted residual block after the depthwise 3x3
conv (and after the first depthwise conv in MobileNeXt); the paper does not use ResNets for
classification. attn-bench puts every block in the same slot: after the depthwise conv in
MobileNets (the paper position) and at the end of the residual branch before the addition in
ResNets (a placement the paper does not test).

Deviations from the official code: none in the computation. ``hidden = floor(C * rd_ratio)``
equals ``C // 32`` for the default ratio. The official class takes separate ``inp`` / ``oup``;
here input and output channels are both ``channels``.

Traps in circulating copies / timm:
* timm's ``CoordAttn`` defaults differ from the paper: hidden width
  ``make_divisible(C / 16 * 2/3, 8)`` instead of ``max(8, C // 32)``, and ``bias=False`` on all
  three convs. With ``rd_channels=mip`` and ``bias=True`` it computes the same function (tested).
* ``mbv2_ca.py`` uses ``nn.AdaptiveAvgPool2d`` the same way; copies that swap the two poolings or
  forget to transpose the width branch before/after the shared conv mix up h and w on non-square
  inputs. Copies that use ReLU instead of h_swish deviate from the official code.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from attn_bench.attention._args import _is_int, check_channels, check_positive, make_act
from attn_bench.errors import check

_NAME = "ca"


def _hidden_channels(channels: int, rd_ratio: float, rd_channels: int | None, min_rd_channels: int) -> int:
    if rd_channels is not None:
        check(_is_int(rd_channels) and rd_channels >= 1, f"ca: rd_channels={rd_channels!r} must be >= 1")
        return rd_channels
    rd_ratio = check_positive(_NAME, "rd_ratio", rd_ratio)
    check(rd_ratio <= 1, f"ca: rd_ratio={rd_ratio} must be in (0, 1]")
    check(_is_int(min_rd_channels) and min_rd_channels >= 0,
          f"ca: min_rd_channels={min_rd_channels!r} must be an integer >= 0")
    hidden = max(min_rd_channels, math.floor(channels * rd_ratio + 1e-9))
    check(
        hidden >= 1,
        f"ca: rd_ratio={rd_ratio} with min_rd_channels={min_rd_channels} gives {hidden} hidden channels "
        f"for {channels} channels; need >= 1",
    )
    return hidden


class CoordAttention(nn.Module):
    """Coordinate attention: x * a_h(h) * a_w(w), see the module docstring."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 32,
        rd_channels: int | None = None,
        min_rd_channels: int = 8,
        act_layer: str = "hard_swish",
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        channels = check_channels(_NAME, channels)
        hidden = _hidden_channels(channels, rd_ratio, rd_channels, min_rd_channels)
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act = make_act(_NAME, "act_layer", act_layer)
        self.conv_h = nn.Conv2d(hidden, channels, kernel_size=1)
        self.conv_w = nn.Conv2d(hidden, channels, kernel_size=1)
        self.gate = make_act(_NAME, "gate_layer", gate_layer)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def attention_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``a_h`` of shape (N, C, H, 1) and ``a_w`` of shape (N, C, 1, W)."""
        h, w = x.shape[-2:]
        z_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        z_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1)
        y = self.act(self.bn1(self.conv1(torch.cat([z_h, z_w], dim=2))))
        f_h, f_w = torch.split(y, [h, w], dim=2)
        a_h = self.gate(self.conv_h(f_h))
        a_w = self.gate(self.conv_w(f_w.transpose(2, 3)))
        return a_h, a_w

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """a_h * a_w averaged over channels, (N, H, W) (``attn-bench visualize``)."""
        a_h, a_w = self.attention_maps(x)
        return (a_h * a_w).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h, a_w = self.attention_maps(x)
        return x * a_h * a_w
