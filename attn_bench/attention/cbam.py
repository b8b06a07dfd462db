"""Convolutional Block Attention Module (CBAM).

Paper: "CBAM: Convolutional Block Attention Module", Sanghyun Woo, Jongchan Park,
Joon-Young Lee, In So Kweon, ECCV 2018, arXiv:1807.06521.

Reference implementation: github.com/Jongchan/attention-module, ``MODELS/cbam.py``
(``CBAM``, ``ChannelGate``, ``SpatialGate``) and its initialisation in
``MODELS/model_resnet.py`` (``ResNet.__init__``).

* Channel attention: ONE shared MLP (C -> C_r -> C, biases on both layers, ReLU)
  applied to the average-pooled and to the max-pooled descriptor; the two outputs
  are summed, then a sigmoid gives the channel weights.
* Spatial attention (on the channel-refined map): channel-wise max and mean maps,
  concatenated in that order ``[max, mean]`` (official ``ChannelPool``), a 7x7 conv
  2 -> 1 with padding 3 and no bias, BatchNorm (eps 1e-5, momentum 0.01, affine), sigmoid.
* Channel first, then spatial (the paper's best order). ``no_spatial=True`` keeps
  only the channel gate, as the official ``no_spatial`` flag does.

Defaults: ``rd_ratio=1/16`` (r = 16), hidden width ``floor(C * rd_ratio)`` (the official
``C // 16``), ``spatial_kernel_size=7``, ReLU, sigmoid gates.
Parameters: ``2*C*C_r + C_r + C`` (channel MLP) ``+ 2*k*k + 2`` (spatial conv, no bias,
plus BatchNorm's weight and bias); the BN running statistics are buffers.

Conv bias / BatchNorm: we keep the official ``BasicConv(..., relu=False)`` i.e. conv
without bias followed by BatchNorm, because a bias right before a BN is redundant and
the BN (with its affine weight) is part of the published model.

Initialisation (official ``model_resnet.py``): MLP biases 0 (MLP weights keep the
PyTorch default), spatial conv ``kaiming_normal_(mode='fan_out')``, spatial BN weight 0
and bias 0. So at initialisation the spatial gate is exactly sigmoid(0) = 0.5 everywhere.

Placement (paper Fig. 3 / official ``model_resnet.py``): on the residual branch after
the last conv + BN, before the addition with the identity path.

Deviations from the paper's equations, all taken from the official code (whose weights
are the published ones): Eq. 3 writes ``sigma(f7x7([AvgPool(F); MaxPool(F)]))``, i.e. mean
first and no normalisation, while ``cbam.py`` feeds ``[max, mean]`` and puts a BatchNorm
between the conv and the sigmoid; Eq. 2 writes the MLP as W1(W0 .) without biases, while the
official ``nn.Linear`` layers have them. We follow the code on all three. The official
code's other pool types ('lp', 'lse') are not offered; the MLP layers are 1x1 convolutions
(same map as linear layers).
With a batch of 1 in training mode and H = W = 1 the spatial BatchNorm has a single
value and PyTorch refuses to train it; that is inherent to the official design.

timm: ``timm.layers.CbamModule`` differs in three ways: MLP without biases by
default (``mlp_bias=False``), spatial input concatenated as ``[mean, max]`` instead of
``[max, mean]``, and BN with timm's default init. With ``mlp_bias=True`` and the two
input channels of the spatial conv swapped, it computes the same function (tested).

Traps in popular copies: two separate MLPs for the avg and max descriptors (the
paper shares one); a sigmoid on each branch before summing; ``[mean, max]`` order
(harmless when training from scratch, wrong when porting official weights); a
conv bias instead of the BN; dropping the max-pooled branch altogether.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_odd_kernel, hidden_channels, make_act
from attn_bench.errors import check

_NAME = "cbam"


class ChannelGate(nn.Module):
    """x * sigmoid(mlp(avg_pool(x)) + mlp(max_pool(x))) with one shared MLP."""

    def __init__(self, channels: int, hidden: int, act_layer: str, gate_layer: str):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.act = make_act(_NAME, "act_layer", act_layer)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)
        self.gate = make_act(_NAME, "gate_layer", gate_layer)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)
        mx = x.amax(dim=(2, 3), keepdim=True)
        return x * self.gate(self.mlp(avg) + self.mlp(mx))


class SpatialGate(nn.Module):
    """x * sigmoid(bn(conv([max_c(x), mean_c(x)])))."""

    def __init__(self, kernel_size: int, gate_layer: str):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
        self.gate = make_act(_NAME, "gate_layer", gate_layer)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def gate_map(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return self.gate(self.bn(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate_map(x)


class CBAM(nn.Module):
    """Channel gate, then (unless ``no_spatial``) spatial gate."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: Optional[int] = None,
        spatial_kernel_size: int = 7,
        no_spatial: bool = False,
        act_layer: str = "relu",
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        channels = check_channels(_NAME, channels)
        hidden = hidden_channels(_NAME, channels, rd_ratio, rd_channels)
        check(isinstance(no_spatial, bool), f"{_NAME}: no_spatial={no_spatial!r} must be true or false")
        self.channel = ChannelGate(channels, hidden, act_layer, gate_layer)
        if no_spatial:
            self.spatial = None
        else:
            kernel_size = check_odd_kernel(_NAME, "spatial_kernel_size", spatial_kernel_size)
            self.spatial = SpatialGate(kernel_size, gate_layer)

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor | None:
        """The spatial gate (N, H, W) this block applies to input ``x`` (``attn-bench visualize``)."""
        return None if self.spatial is None else self.spatial.gate_map(self.channel(x))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel(x)
        return x if self.spatial is None else self.spatial(x)
