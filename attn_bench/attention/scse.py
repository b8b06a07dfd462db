"""Concurrent spatial and channel squeeze & excitation (scSE).

Paper: "Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional Networks",
Abhijit Guha Roy, Nassir Navab, Christian Wachinger, MICCAI 2018, arXiv:1803.02579; extended in
"Recalibrating Fully Convolutional Networks with Spatial and Channel 'Squeeze and Excitation'
Blocks", IEEE TMI 2019, arXiv:1808.08127, which compares ways of combining the two.

Reference implementation: github.com/ai-med/squeeze_and_excitation,
``squeeze_and_excitation/squeeze_and_excitation.py`` (``ChannelSELayer``, ``SpatialSELayer``,
``ChannelSpatialSELayer``):

    cSE(x) = x * sigmoid(W2 relu(W1 mean(x) + b1) + b2)     two biased FCs, C -> C*r -> C
    sSE(x) = x * sigmoid(w . x + b)                          a 1x1 conv C -> 1 at every position
    scSE(x) = max(cSE(x), sSE(x))                            element-wise

Defaults (the official ones): ``rd_ratio=1/2`` (``reduction_ratio=2``: ``C // 2`` hidden units),
``aggregation='max'`` (the official ``torch.max``, the combination the TMI paper found best;
``'add'`` is the MICCAI paper's element-wise sum), PyTorch's default initialisation (the official
code sets none). Parameters: ``C*h + h + h*C + C`` (cSE, h = C // 2) ``+ C + 1`` (sSE): ``C^2 + 2.5C + 1``
for even C.

Placement: the papers put scSE after every encoder and decoder block of segmentation FCNs (U-Net,
SD-Net, QuickNAT); they publish no classification network. On a ResNet it goes where SE goes, the
``residual`` site (after the last BN of the branch, before the addition); ``placement=paper`` and
``uniform`` agree, and the parity table says no count is published.

timm has no scSE (its ``SEModule`` is cSE with a reduction of 16).

Traps in popular copies: summing instead of the official max without saying so (or the other way
round); a reduction of 16 copied from SE; a bias-free sSE conv.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels, hidden_channels
from attn_bench.errors import check

_NAME = "scse"
AGGREGATIONS = ("max", "add")


class ChannelSpatialSE(nn.Module):
    """max (or sum) of channel SE (two biased FCs, C -> C/2 -> C) and spatial SE (1x1 conv C -> 1)."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 2, aggregation: str = "max"):
        super().__init__()
        channels = check_channels(_NAME, channels)
        check(aggregation in AGGREGATIONS,
              f"{_NAME}: aggregation={aggregation!r}; valid choices: {', '.join(AGGREGATIONS)}")
        hidden = hidden_channels(_NAME, channels, rd_ratio)
        self.aggregation = aggregation
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.spatial = nn.Conv2d(channels, 1, 1)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 1, 1): cSE's gate from the channel means."""
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))[:, :, None, None]

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W): sSE's gate from the 1x1 projection at every position."""
        return torch.sigmoid(self.spatial(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel, spatial = x * self.channel_gate(x), x * self.spatial_gate(x)
        return torch.maximum(channel, spatial) if self.aggregation == "max" else channel + spatial
