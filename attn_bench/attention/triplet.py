"""Triplet Attention.

Paper: Diganta Misra, Trikay Nalamada, Ajay Uppili Arasanipalai, Qibin Hou, "Rotate to Attend:
Convolutional Triplet Attention Module", WACV 2021, arXiv:2010.03045.

Reference implementation followed: the official repository landskape-ai/triplet-attention,
``triplet_attention.py`` (root; same computation as ``MODELS/triplet_attention.py``, whose
attribute names - ``ChannelGateH``, ``ChannelGateW``, ``SpatialGate`` - are the ones the
trained ResNets use), with the initialisation that ``MODELS/resnet.py`` applies to it.

Definition (paper Sec. 3.2, Eqs. 1-2)::

    zpool(t) = cat(max over dim 1, mean over dim 1)          # max first, as the official ZPool
    gate(t)  = t * sigmoid(BN(conv_kxk_{2->1}(zpool(t))))      # conv without bias, BN affine
    cw = rot^-1(gate_cw(rot(x)))   rot: (N,C,H,W) -> (N,H,C,W)  pool over H, map over (C, W)
    hc = rot^-1(gate_hc(rot(x)))   rot: (N,C,H,W) -> (N,W,H,C)  pool over W, map over (H, C)
    hw = gate_hw(x)                                              pool over C, map over (H, W)
    out = (cw + hc + hw) / 3          (no_spatial=True: out = (cw + hc) / 2)

Defaults (official): ``kernel_size=7``, ``no_spatial=False``, ``gate_layer='sigmoid'``; the BN uses
``eps=1e-5, momentum=0.01`` as the official ``BasicConv``. The ``channels`` argument is accepted
for the common block interface and unused: the block has ``3 * (2*k*k + 2)`` parameters (300 for
k = 7; 200 with ``no_spatial``) whatever the channel count.

Initialisation (what the official ``MODELS/resnet.py`` does to the module it trains): conv weights
Kaiming normal (fan-out), BN bias 0, BN weight 1 for the two rotated branches and 0 for the plain
spatial (hw) branch -- its ``SpatialGate`` attribute matches the ``"SpatialGate" in key`` rule of
that init loop, so that branch starts as the constant gate sigmoid(0) = 1/2.

Placement in the paper: in every residual block of ResNet, on the residual branch after the last
BN, before the addition (``MODELS/resnet.py``), and in MobileNetV2 blocks -- the attn-bench slot.

Deviations from the official code: none. The reduction_ratio / pool_types arguments of the
official constructor are unused there and dropped here.

Traps in circulating copies: swapping the Z-pool order (mean, max) silently changes which conv
input channel is which (matters when loading official weights); permuting with ``transpose`` on
the wrong axes so the "back" rotation is not the inverse (only visible for H != W or C != H);
adding a conv bias or dropping the BN (changes the 300-parameter count); summing instead of
averaging the branches.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_odd_kernel, make_act
from attn_bench.errors import check

_NAME = "triplet"


def z_pool(x: torch.Tensor) -> torch.Tensor:
    """Max and mean over dim 1, stacked as two channels (max first)."""
    return torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)


class AttentionGate(nn.Module):
    """Z-pool, k x k conv 2 -> 1 without bias, BN, gate; scales the input by the map."""

    def __init__(self, kernel_size: int, gate_layer: str):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        self.gate = make_act(_NAME, "gate_layer", gate_layer)

    def gate_map(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 1, H, W) gate this branch multiplies its (rotated) input by."""
        return self.gate(self.bn(self.conv(z_pool(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate_map(x)


class TripletAttention(nn.Module):
    """Average of three rotated Z-pool/conv gates, see the module docstring."""

    def __init__(self, channels: int, kernel_size: int = 7, no_spatial: bool = False, gate_layer: str = "sigmoid"):
        super().__init__()
        check_channels(_NAME, channels)
        kernel_size = check_odd_kernel(_NAME, "kernel_size", kernel_size)
        check(isinstance(no_spatial, bool), f"triplet: no_spatial={no_spatial!r} must be true or false")
        self.no_spatial = no_spatial
        self.cw = AttentionGate(kernel_size, gate_layer)
        self.hc = AttentionGate(kernel_size, gate_layer)
        self.hw = None if no_spatial else AttentionGate(kernel_size, gate_layer)
        self._init_weights()

    def _init_weights(self) -> None:
        for branch in (self.cw, self.hc, self.hw):
            if branch is None:
                continue
            nn.init.kaiming_normal_(branch.conv.weight, mode="fan_out")
            nn.init.constant_(branch.bn.weight, 0.0 if branch is self.hw else 1.0)
            nn.init.zeros_(branch.bn.bias)

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """What the block weighs each position by (``attn-bench visualize``): the output is
        ``x * m`` with ``m = (g_cw + g_hc + g_hw) / 3`` broadcast over (C, H, W); this is ``m``
        averaged over channels, (N, H, W), so the rotated branches count as well as the plain
        spatial one."""
        g_cw = self.cw.gate_map(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # (N, C, 1, W)
        g_hc = self.hc.gate_map(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)  # (N, C, H, 1)
        total = g_cw + g_hc                                                   # (N, C, H, W)
        if self.hw is not None:
            total = total + self.hw.gate_map(x)                              # + (N, 1, H, W)
        return total.mean(dim=1) / (2 if self.hw is None else 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cw = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        hc = self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        if self.hw is None:
            return (cw + hc) / 2
        return (cw + hc + self.hw(x)) / 3
