"""Gated Channel Transformation (GCT), before every convolution.

Paper: "Gated Channel Transformation for Visual Recognition", Zongxin Yang, Linchao Zhu, Yu Wu, Yi Yang,
CVPR 2020, arXiv:1909.11519.

Reference implementation: github.com/z-x-yang/GCT, ``PyTorch/GCT.py`` (``GCT``) and ``PyTorch/resnet.py``
(where it goes), with ``PyTorch/main.py`` (its optimiser); the TensorFlow code the paper's results come
from applies it the same way (``convnet_builder.py``: "before each convolutional layer"). Per channel:

    s_c = alpha_c * sqrt(sum_{h,w} x_c^2 + eps)                 global context embedding (l2)
    n_c = gamma_c * s_c / sqrt(mean_c' s_c'^2 + eps)            channel normalisation
    out = x * (1 + tanh(n_c + beta_c))                          gating adaptation

Defaults (the official ones): ``mode='l2'``, ``epsilon=1e-5``; ``alpha`` 1, ``gamma`` 0 and ``beta`` 0, so the
gate is exactly 1 and every GCT starts as the identity; ``mode='l1'`` (sum of |x|, or of x with
``after_relu=True``; normalised by the mean |s|) as the official option. Parameters: ``3*C``, shaped
(1, C, 1, 1) as the official module (its state dict loads as is). The official optimiser takes the gating
bias ``beta`` out of weight decay and keeps it on ``alpha`` and ``gamma``: the block says so with
``no_weight_decay()`` and attn-bench's optimiser follows it.

Placement (official ``resnet.py``): before every convolution of the network, the stem's on the RGB image,
the three of each bottleneck and the shortcut's projection: attn-bench's ``convs`` site. ResNet-50 has
22,531 input channels over its 53 convs: +67,593 parameters (25,624,625 in all; the paper's table was not
available here). ``placement=uniform`` puts it at the ``residual`` site like every channel gate.

timm has no GCT.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_positive
from attn_bench.errors import check

_NAME = "gct"
MODES = ("l2", "l1")


class GatedChannelTransformation(nn.Module):
    """x * (1 + tanh(gamma * normalised(alpha * ||x_c||) + beta)), the official GCT."""

    attn_sites = ("residual", "mid", "stage_end", "trunk", "convs", "input")

    def __init__(self, channels: int, epsilon: float = 1e-5, mode: str = "l2", after_relu: bool = False):
        super().__init__()
        channels = check_channels(_NAME, channels)
        check(mode in MODES, f"{_NAME}: mode={mode!r}; valid choices: {', '.join(MODES)}")
        check(isinstance(after_relu, bool), f"{_NAME}: after_relu={after_relu!r} must be true or false")
        check(mode == "l1" or not after_relu, f"{_NAME}: after_relu=true is an option of mode='l1' (the sum of x, not |x|)")
        self.epsilon, self.mode, self.after_relu = check_positive(_NAME, "epsilon", epsilon), mode, after_relu
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    @staticmethod
    def no_weight_decay() -> set[str]:
        return {"beta"}  # official main.py: weight_decay = 0 for "beta", the gating bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "l2":
            embedding = (x.pow(2).sum((2, 3), keepdim=True) + self.epsilon).sqrt() * self.alpha
            norm = self.gamma / (embedding.pow(2).mean(1, keepdim=True) + self.epsilon).sqrt()
        else:
            embedding = (x if self.after_relu else x.abs()).sum((2, 3), keepdim=True) * self.alpha
            norm = self.gamma / (embedding.abs().mean(1, keepdim=True) + self.epsilon)
        return x * (1 + torch.tanh(embedding * norm + self.beta))
