"""Frequency Channel Attention (FcaNet's multi-spectral channel attention).

Paper: "FcaNet: Frequency Channel Attention Networks", Zequn Qin, Pengyi Zhang, Fei Wu, Xi Li,
ICCV 2021, arXiv:2012.11879.

Reference implementation: github.com/cfzd/FcaNet, ``model/layer.py`` (``get_freq_indices``,
``MultiSpectralAttentionLayer``, ``MultiSpectralDCTLayer``) and ``model/fcanet.py``. SE whose
squeeze is not the mean but 2-D DCT components: the channels are split into ``n`` parts, part i
pooled with the DCT basis of frequency (u_i, v_i):

    y_c = sum_{h,w} x_{c,h,w} B_{u_i,h} B_{v_i,w},   B_{u,t} = cos(pi u (t + 1/2) / T) / sqrt(T) (x sqrt(2) for u > 0)
    out = x * sigmoid(W2 relu(W1 y))               two FCs without bias, C -> C/16 -> C

Defaults (the official ones): ``freq_sel='top16'``, the 16 best single frequencies of the paper's
7x7 study (its ``all_top_indices_x/y``, first 16; ``top1`` .. ``top32`` selectable), ``rd_ratio=1/16``,
PyTorch's default initialisation. The frequencies live in a 7x7 space and are scaled to the map:
the official ResNets give each stage a DCT the size of its map at 224 px (``c2wh``: 56, 28, 14, 7)
with the indices multiplied by size // 7. Here the DCT is sized from the map the block sees: 7 x
(H // 7) by 7 x (W // 7), the map pooled to it where it differs (the official
``adaptive_avg_pool2d`` path), at least 7 x 7; at 224 px that is exactly the official 56/28/14/7, on
a 32-px CIFAR map 28 (pooled from 32), 14, 7, 7. The basis is a fixed function of the size, built
on first use per size and not saved (the official code registers it as a buffer of that fixed
value). Parameters: ``2 * C * C/16`` (the FCs); FcaNet-50 28,071,976 (the paper's 28.07 M, tested).

``channels`` must be a multiple of the number of frequencies (the official assert); otherwise one
line. Placement (official ``FcaBottleneck``): after ``bn3``, before the addition: the ``residual``
site (``placement=paper`` and ``uniform`` agree).

timm has no FcaNet. Traps in popular copies: a DCT fixed at 7x7 for every stage (the released
ResNets use the stage's map size), a learnable basis, biases in the FCs, the ``low``/``bot``
selections passed off as the paper's.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attn_bench.attention._args import check_channels, hidden_channels
from attn_bench.errors import check

_NAME = "fca"
# the 32 single frequencies of the 7x7 space in the order of the paper's study (official all_top_indices)
TOP_U = (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1)
TOP_V = (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3)
SELECTIONS = tuple(f"top{n}" for n in (1, 2, 4, 8, 16, 32))


def _basis(freq: int, size: int) -> np.ndarray:
    """(size,): B_{freq,t} for every position t, in float64."""
    value = np.cos(math.pi * freq * (np.arange(size) + 0.5) / size) / math.sqrt(size)
    return value * math.sqrt(2) if freq else value


def dct_filters(channels: int, height: int, width: int, n_freq: int,
                device: torch.device | str | None = None) -> torch.Tensor:
    """(C, H, W) float32: part i of the channels gets the basis of frequency i of the 7x7 space, scaled to H x W.
    NumPy, not Python loops (a 1,000-px map costs milliseconds) and not torch ops (a constant, not the block's
    FLOPs); on the meta device (the build-time probe) only the shape."""
    if torch.device(device or "cpu").type == "meta":
        return torch.empty(channels, height, width, device="meta")
    planes = np.stack([np.outer(_basis(u * (height // 7), height), _basis(v * (width // 7), width))
                       for u, v in zip(TOP_U[:n_freq], TOP_V[:n_freq])])
    return torch.from_numpy(np.repeat(planes, channels // n_freq, axis=0).astype(np.float32)).to(device)


class FrequencyChannelAttention(nn.Module):
    """SE with a multi-spectral (2-D DCT) squeeze: two bias-free FCs and a sigmoid on the DCT components."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, freq_sel: str = "top16"):
        super().__init__()
        channels = check_channels(_NAME, channels)
        check(freq_sel in SELECTIONS, f"{_NAME}: freq_sel={freq_sel!r}; valid choices: {', '.join(SELECTIONS)}")
        self.n_freq = int(freq_sel[3:])
        check(channels % self.n_freq == 0,
              f"{_NAME}: channels={channels} must be a multiple of the {self.n_freq} frequencies of {freq_sel}")
        hidden = hidden_channels(_NAME, channels, rd_ratio)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)
        self._filters: dict[tuple, torch.Tensor] = {}

    def dct_size(self, height: int, width: int) -> tuple[int, int]:
        """7 x (H // 7) by 7 x (W // 7), at least 7 x 7: the official stage sizes at 224 px."""
        return 7 * max(1, height // 7), 7 * max(1, width // 7)

    def filters(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        key = (size, x.device, x.dtype)
        if key not in self._filters:
            self._filters[key] = dct_filters(self.fc1.in_features, *size, self.n_freq, x.device).to(x.dtype)
        return self._filters[key]

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C): each channel's DCT component at its part's frequency."""
        size = self.dct_size(*x.shape[2:])
        pooled = x if tuple(x.shape[2:]) == size else F.adaptive_avg_pool2d(x, size)
        return (pooled * self.filters(x, size)).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(self.squeeze(x)))))
        return x * gate[:, :, None, None]
