"""Contextual Transformer (CoT) block, at the ``conv`` site.

Paper: "Contextual Transformer Networks for Visual Recognition", Yehao Li, Ting Yao, Yingwei Pan, Tao
Mei, IEEE TPAMI 2022, arXiv:2107.12292.

Reference implementation: github.com/JDAI-CV/CoTNet, ``models/cotnet.py`` (``CotLayer``,
``Bottleneck``, ``cotnet50``) and ``cupy_layers/aggregation_zeropad.py`` (``LocalConvolution``, a
CUDA kernel). The unit replaces a bottleneck's 3x3 conv with its BN and ReLU:

    k = ReLU(BN(3x3 conv, 4 groups)(x))                      static context (the keys)
    w = GN(1x1(ReLU(BN(1x1([x, k]))))), C/2 hidden, k*k weights per C/8 channels per position
    v = BN(1x1 conv(x))
    y = SiLU(BN(aggregate(v, w)))                            each position's 3x3 neighbourhood of v,
                                                             weighted by its own w (channel c: w[c % C/8])
    out = a_y * y + a_k * k,  (a_y, a_k) = softmax over 2 of fc2(ReLU(BN(fc1(mean(y + k)))))

Defaults (the official ``CotLayer(dim, kernel_size=3)``): kernel 3, key groups 4, ``share_planes=8``,
``factor=2``, the fusion's width ``max(C * 2 / 4, 32)`` with biased FCs; in a strided block a 3x3
stride-2 average pool comes first and the unit runs at stride 1 (the official ``Bottleneck``'s
``avd``). Initialisation as the official network's (timm's ResNet ``init_weights``): every conv
``kaiming_normal_`` (fan-out, ReLU), norms weight 1 and bias 0, conv biases PyTorch's default.

The aggregation is the official CUDA kernel's arithmetic written with ``F.unfold`` (the official
file checks its kernel against the same unfold formulation): zero padding, the weight of output
channel c taken from weight channel ``c % (C/8)``. It runs on any device; it holds C x 9 x H x W
values per image (9 times the map), as the unfold in the official test does.

Deviation, so that the unit also replaces a conv that changes width (a BasicBlock's first conv):
the key conv and the value conv map C_in -> C_out (and the attention embedding reads the C_in + C_out
channels of [x, k]); at equal widths, every CoTNet bottleneck, this is the official layer exactly.
CoTNet-50 (``model=resnet50 model.attn=cot``, the official ``cotnet50``: ResNet-50 with a CoT unit
for every conv2): 22,222,416 parameters (the paper's 22.2 M). Placement: the ``conv`` site of every
block (Bottleneck ``conv2``, BasicBlock ``conv1``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from attn_bench.attention._args import check_channels, check_positive_int
from attn_bench.errors import check

_NAME = "cot"
KEY_GROUPS, SHARE_PLANES, FACTOR, RADIX = 4, 8, 2, 2


def local_aggregation(values: torch.Tensor, weights: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B, C, H, W) values, (B, C_w, k*k, H, W) weights -> (B, C, H, W): output channel c at each position is
    the sum over its k x k zero-padded neighbourhood of values[c] times weights[c % C_w] (official kernel)."""
    b, c, h, w = values.shape
    shared = weights.shape[1]
    cols = F.unfold(values, kernel_size, padding=kernel_size // 2).view(b, c // shared, shared, kernel_size ** 2, h, w)
    return (cols * weights.unsqueeze(1)).sum(3).view(b, c, h, w)


class ContextualTransformer(nn.Module):
    """CoTNet's CotLayer as a conv-site unit (with its bottleneck's average pool in strided blocks)."""

    attn_sites = ("conv",)  # it is a conv: it replaces a block's 3x3 conv

    def __init__(self, channels: int, out_channels: Optional[int] = None, stride: int = 1, dilation: int = 1,
                 kernel_size: int = 3):
        super().__init__()
        channels = check_channels(_NAME, channels)
        out = channels if out_channels is None else check_positive_int(_NAME, "out_channels", out_channels)
        stride = check_positive_int(_NAME, "stride", stride)
        check(dilation == 1, f"{_NAME}: dilation={dilation!r}: CoTNet's unit has none (a dilated backbone cannot take it)")
        check(kernel_size in (3, 5, 7), f"{_NAME}: kernel_size={kernel_size!r} must be 3 (CoTNet's), 5 or 7")
        check(channels % KEY_GROUPS == 0 and out % SHARE_PLANES == 0,
              f"{_NAME}: widths {channels} -> {out}: the key conv's {KEY_GROUPS} groups must divide the input and "
              f"share_planes={SHARE_PLANES} the output")
        self.kernel_size, self.shared = kernel_size, out // SHARE_PLANES
        self.avd = nn.AvgPool2d(3, 2, padding=1) if stride > 1 else nn.Identity()
        self.key_embed = nn.Sequential(
            nn.Conv2d(channels, out, kernel_size, padding=kernel_size // 2, groups=KEY_GROUPS, bias=False),
            nn.BatchNorm2d(out), nn.ReLU())
        taps = kernel_size ** 2 * self.shared
        self.embed = nn.Sequential(
            nn.Conv2d(channels + out, out // FACTOR, 1, bias=False), nn.BatchNorm2d(out // FACTOR), nn.ReLU(),
            nn.Conv2d(out // FACTOR, taps, 1), nn.GroupNorm(self.shared, taps))
        self.conv1x1 = nn.Sequential(nn.Conv2d(channels, out, 1, bias=False), nn.BatchNorm2d(out))
        self.bn = nn.BatchNorm2d(out)
        self.act = nn.SiLU()
        attn = max(out * RADIX // 4, 32)
        self.se = nn.Sequential(nn.Conv2d(out, attn, 1), nn.BatchNorm2d(attn), nn.ReLU(), nn.Conv2d(attn, RADIX * out, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avd(x)
        k = self.key_embed(x)
        b, _, h, w = x.shape
        weights = self.embed(torch.cat([x, k], dim=1)).view(b, self.shared, self.kernel_size ** 2, h, w)
        y = self.act(self.bn(local_aggregation(self.conv1x1(x), weights, self.kernel_size)))
        branches = torch.stack([y, k], dim=2)  # (B, C, 2, H, W), the official order
        logits = self.se(branches.sum(2).mean((2, 3), keepdim=True)).view(b, -1, RADIX)
        return (branches * logits.softmax(2)[..., None, None]).sum(2)
