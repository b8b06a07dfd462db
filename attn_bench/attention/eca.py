"""Efficient Channel Attention (ECA).

Paper: "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
Qilong Wang, Banggu Wu, Pengfei Zhu, Peihua Li, Wangmeng Zuo, Qinghua Hu, CVPR 2020,
arXiv:1910.03151.

Reference implementation: github.com/BangguWu/ECANet, ``models/eca_module.py``
(``eca_layer``): global average pool -> 1D conv of size k across the channel axis,
zero padding ``(k - 1) // 2``, no bias -> sigmoid -> channel-wise rescale.

Defaults: ``kernel_size=None`` selects k adaptively with the paper's kernel-size
function psi(C) (``t = int(abs((log2(C) + beta) / gamma))``; ``k = t`` if t is odd else ``t + 1``),
``gamma=2``, ``beta=1``, sigmoid gate. This gives k=3 for C=64, k=5 for C=128..1024 and
k=7 for C=2048. An explicit odd ``kernel_size`` overrides it; even sizes are rejected
(they cannot keep C outputs with symmetric padding). Parameters: exactly k.
Initialisation: PyTorch's Conv1d default (the official ResNet init loop only touches
Conv2d and BatchNorm layers, so the ECA conv keeps it there too).

Placement (paper Fig. 2 / official ``eca_resnet.py``): on the residual branch after
the last conv + BN, before the addition with the identity path.

Deviations from the paper: none. Note, though, that ``eca_module.py`` defaults to a
fixed k=3, ``eca_resnet.py`` builds every stage with ``k_size=[3, 3, 3, 3]`` unless told
otherwise, and the released ImageNet weights were trained with hand-picked per-stage
sizes (ECA-Net50 "k3557", ECA-Net101/152 "k3357", MobileNetV2 "k13"), which do not all
match psi(C) (it gives 5, 5, 5, 7 for ResNet-50's 256/512/1024/2048 channels). The block
implements the paper's formula. The paper's own count is of the released network: its abstract's
"80 vs. 24.37M" parameters for ResNet-50 is k3557 (3x3 + 4x5 + 6x5 + 3x7 = 80; psi(C) gives 86),
so ``model.placement=paper`` on ResNet-50/101/152 builds the released per-stage sizes
(models/presets.py). The paper's totals come from thop and sit 1.19 M below plain ResNet-50's
25,557,032 (2.06 M / 2.78 M below ResNet-101/152): a counting convention we do not reproduce.

timm: ``timm.layers.EcaModule`` computes the same function for C >= 8, but it
clamps k to at least 3 (the formula gives k=1 for C <= 7) and, when ``channels`` is
passed, silently ignores its ``kernel_size`` argument.

Traps in popular copies: hard-coding k=3 (the eca_module.py default) while claiming
the adaptive kernel; adding a bias to the 1D conv; convolving over the wrong axis
after the squeeze (the conv must slide along channels, i.e. the pooled vector is
shaped (N, 1, C)).
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Optional

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_odd_kernel, check_positive, make_act
from attn_bench.errors import check

_NAME = "eca"


def adaptive_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """The paper's psi(C): the odd number at or just above |(log2(C) + b) / gamma|."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttn(nn.Module):
    """x * gate(conv1d_k(mean_hw(x))) with the 1D conv sliding along channels."""

    def __init__(
        self,
        channels: int,
        kernel_size: Optional[int] = None,
        gamma: float = 2.0,
        beta: float = 1.0,
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        channels = check_channels(_NAME, channels)
        if kernel_size is None:
            gamma = check_positive(_NAME, "gamma", gamma)
            check(isinstance(beta, Real) and math.isfinite(beta), f"{_NAME}: beta={beta!r} must be a finite number")
            kernel_size = adaptive_kernel_size(channels, gamma, beta)
        kernel_size = check_odd_kernel(_NAME, "kernel_size", kernel_size)
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.gate = make_act(_NAME, "gate_layer", gate_layer)

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate (N, C) this block multiplies ``x`` by (``attn-bench visualize``)."""
        n, c = x.shape[:2]
        return self.gate(self.conv(x.mean(dim=(2, 3)).view(n, 1, c))).view(n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_weights(x)[:, :, None, None]
