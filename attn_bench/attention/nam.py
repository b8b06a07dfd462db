"""Normalization-based Attention Module (NAM), channel attention.

Paper: "NAM: Normalization-based Attention Module", Yichao Liu, Zongru Shao, Yueyang Teng, Nico
Hoffmann, NeurIPS 2021 Workshop (ImageNet PPML), arXiv:2111.12419, Eq. 1-2.

Reference implementation: github.com/Christian-lyc/NAM, ``MODELS/attention.py`` (``Channel_Att``,
``Att``) and ``MODELS/model_resnet.py``. The scaling factors of a BN measure how much each channel
varies; NAM gates each channel by them:

    out = x * sigmoid(w * BN(x)),   w_c = |gamma_c| / sum_j |gamma_j|

Defaults (the official ones): the BN's weight 1 and bias 0 (PyTorch's, as ``model_resnet.py`` sets
every BN), eps 1e-5, momentum 0.1; the factor ``w`` is read from ``gamma`` without a gradient (the
official ``bn2.weight.data``; here ``detach()``, the same numbers and gradients). Parameters: ``2*C``
(the BN); ResNet-50 with NAM in all 16 bottlenecks adds 30,208 (25,587,240 in all).

Placement (official ``model_resnet.py``): after ``bn3`` of every Bottleneck (``bn2`` of every
BasicBlock), before the addition: attn-bench's ``residual`` site (``placement=paper`` and ``uniform``
agree).

Deviations: none in the computation. What the official code differs in from the paper's text, and
we follow the code: the absolute value in ``w`` (the paper's Eq. 1 divides gamma by its sum), and
no gradient through ``w``. The paper's spatial variant (pixel normalisation) is not in the official
code (``Att`` builds the channel module only) and is not offered.

As with every block holding a BN, a training batch of one image with a 1x1 map gives the BN a single
value per channel, which PyTorch refuses; evaluation at batch 1 works (running statistics).

timm has no NAM.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels

_NAME = "nam"


class NormalizationAttention(nn.Module):
    """x * sigmoid(|gamma| / sum|gamma| * BN(x)), the factor taken from the BN's own weights."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(check_channels(_NAME, channels))

    def channel_weights(self) -> torch.Tensor:
        """(C,): each channel's share of the BN's scaling factors, without a gradient (official ``.data``)."""
        gamma = self.bn.weight.detach().abs()
        return gamma / gamma.sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.bn(x) * self.channel_weights()[:, None, None])
