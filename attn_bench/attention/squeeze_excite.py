"""Squeeze-and-Excitation (SE) channel attention.

Paper: "Squeeze-and-Excitation Networks", Jie Hu, Li Shen, Gang Sun, CVPR 2018
(extended in TPAMI 2019 with Samuel Albanie and Enhua Wu), arXiv:1709.01507.

Reference implementation: the official Caffe release, github.com/hujie-frank/SENet
(``models/SE-ResNet-50.prototxt``): global average pool -> FC (1x1 conv) C -> C/r
with bias -> ReLU -> FC C/r -> C with bias -> sigmoid -> channel-wise rescale.

Defaults: ``rd_ratio=1/16`` (r = 16, the paper's choice), hidden width
``floor(channels * rd_ratio)`` (``rd_divisor=1``), ReLU, sigmoid gate, biases in
both FCs. Parameters: ``2*C*C_r + C_r + C`` with ``C_r = floor(C / r)``.

Placement (paper Fig. 3, SE-ResNet): on the residual branch, after the last
conv + BN of the block and before the addition with the identity path.

Options: ``rd_channels`` fixes the hidden width; ``rd_divisor > 1`` rounds the width
to a multiple of the divisor like timm/MobileNetV3 do; ``gate_layer='hard_sigmoid'``
gives MobileNetV3's gate ``relu6(x + 3) / 6`` (MobileNetV3 itself also uses
``rd_ratio=0.25, rd_divisor=8``).

Deviations from the paper: none. The FCs are 1x1 convolutions, which are the
same maps as linear layers on the pooled vector (the Caffe models do the same).

timm: ``timm.layers.SEModule`` computes the same function but defaults to
``rd_divisor=8`` (C=64 gets 8 hidden channels instead of 4, and widths are rounded
to the nearest multiple of 8 rather than floored); with ``rd_divisor=8`` here, or an
explicit ``rd_channels``, the two are identical (tested).

Traps in popular copies: several PyTorch re-implementations drop the FC biases
(``bias=False``), which changes the parameter count and the function; for C < r
``C // r`` is 0 and PyTorch silently builds a 0-wide MLP whose gate is a learned
constant (we raise ConfigError instead).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from attn_bench.attention._args import check_channels, hidden_channels, make_act

_NAME = "se"


class SqueezeExcite(nn.Module):
    """x * gate(fc2(act(fc1(mean_hw(x)))))."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: Optional[int] = None,
        rd_divisor: int = 1,
        act_layer: str = "relu",
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        channels = check_channels(_NAME, channels)
        hidden = hidden_channels(_NAME, channels, rd_ratio, rd_channels, rd_divisor)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.act = make_act(_NAME, "act_layer", act_layer)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)
        self.gate = make_act(_NAME, "gate_layer", gate_layer)

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate (N, C) this block multiplies ``x`` by (``attn-bench visualize``)."""
        squeezed = x.mean(dim=(2, 3), keepdim=True)
        return self.gate(self.fc2(self.act(self.fc1(squeezed)))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_weights(x)[:, :, None, None]
