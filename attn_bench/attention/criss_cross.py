"""Criss-Cross Attention (CCNet), with its recurrence.

Paper: "CCNet: Criss-Cross Attention for Semantic Segmentation", Zilong Huang, Xinggang Wang,
Lichao Huang, Chang Huang, Yunchao Wei, Wenyu Liu, ICCV 2019 / TPAMI 2020, arXiv:1811.11721.

Reference implementation: github.com/speedinghzl/CCNet, ``cc_attention/functions.py``
(``CrissCrossAttention``, the pure-PyTorch version) and ``networks/ccnet.py`` (``RCCAModule``). Each
position attends to the H + W - 1 positions of its row and column:

    q, k = 1x1 convs C -> C/8 (with bias),  v = 1x1 conv C -> C (with bias)
    e(i, j) = q_i . k_j for j in the row and the column of i (i itself once: the column's copy is -inf)
    out_i = gamma * sum_j softmax_j(e(i, .)) v_j + x_i,   gamma starting at 0

applied ``recurrence`` times with the same weights (R = 2 in the paper: every position then sees
every other). Defaults (the official ones): ``recurrence=2`` (``train.py --recurrence 2``), the
inter-channels C // 8, gamma 0, so the block starts as the identity; PyTorch's default init for the
convs. Parameters: ``2 * (C * C/8 + C/8) + C * C + C + 1``.

Placement: CCNet applies the module in its segmentation head, on the output of the last stage
(after a 3x3 conv reducing it to C/4; that head is not a block and is not here); there is no
classification network. ``placement=paper`` puts it where that head's input is: on the trunk after
the last block of the last ResNet stage (on other backbones, after the last block of every stage,
logged). Deviation: the official ``INF`` builds its -inf diagonal on CUDA only; here it is a mask on
any device.

timm has no criss-cross attention.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_positive_int

_NAME = "cc"


class CrissCrossAttention(nn.Module):
    """gamma * (attention over each position's row and column) + x, ``recurrence`` times, shared weights."""

    attn_sites = ("trunk", "stage_end", "residual", "mid")  # its paper's site first

    def __init__(self, channels: int, recurrence: int = 2):
        super().__init__()
        channels = check_channels(_NAME, channels)
        self.recurrence = check_positive_int(_NAME, "recurrence", recurrence)
        inter = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inter, 1)
        self.key = nn.Conv2d(channels, inter, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """One pass: each position's weighted sum of the values in its row and column (without gamma)."""
        h = x.shape[2]
        q, k, v = self.query(x), self.key(x), self.value(x)
        column = torch.einsum("nchw,ncgw->nhwg", q, k)  # (N, H, W, H): the positions above and below
        own = torch.eye(h, dtype=torch.bool, device=x.device)[:, None, :]  # (H, 1, H): i itself, counted in its row
        column = column.masked_fill(own, float("-inf"))
        row = torch.einsum("nchw,nchv->nhwv", q, k)  # (N, H, W, W): the positions left and right
        weights = torch.softmax(torch.cat([column, row], dim=3), dim=3)
        out = torch.einsum("ncgw,nhwg->nchw", v, weights[..., :h])
        return out + torch.einsum("nchv,nhwv->nchw", v, weights[..., h:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self.gamma * self.attend(x) + x
        return x
