"""SimAM: parameter-free 3-D attention from an energy function.

Paper: "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural
Networks", Lingxiao Yang, Ru-Yuan Zhang, Lida Li, Xiaohua Xie, ICML 2021 (PMLR 139,
pp. 11863-11874); no arXiv version.

Reference implementation: github.com/ZjjConan/SimAM,
``networks/attentions/simam_module.py`` (``simam_module``). Per channel, over the
H*W positions with n = H*W - 1:

    d = (x - mean(x))^2,   v = sum(d) / n,   y = d / (4 * (v + lambda)) + 0.5,
    out = x * sigmoid(y)

Defaults: ``e_lambda=1e-4`` (the official ``simam_module`` default). No parameters.
``channels`` is accepted only for the common block signature.

Placement (official ``networks/imagenet/resnet.py`` and ``networks/cifar`` blocks):
NOT at the end of the residual branch like SE/CBAM: it follows the 3x3 conv
(``conv2``) and precedes its BatchNorm, in both basic and bottleneck blocks; in the
official ``networks/imagenet/mobilenetv2.py`` it follows the depthwise conv, before its BN.
``placement=paper`` reproduces this on every backbone (the ``mid`` site: a Bottleneck's or BasicBlock's
``conv2``, a MobileNet block's depthwise ``conv_dw``, each before its BN; a test checks with forward
hooks that SimAM's input is exactly that conv's output). ``placement=uniform`` uses the residual site
everywhere (SimAM in the SE position, not the paper's network).

Deviation: when H*W == 1 the official code divides by n = 0; with a single position
d is 0 as well, so it computes 0/0 = NaN and the whole output becomes NaN. We use
n = max(H*W - 1, 1): the variance term is then 0 (one value has no spread), y = 0.5,
and the output is x * sigmoid(0.5) - the same value the formula gives any position
that equals its channel mean. For H*W >= 2 the result is identical to the official one.
``e_lambda`` must be > 0 (with 0, a constant channel would again give 0/0).

Worth knowing: the official README trains its ImageNet models with
``--attention_param 0.1`` (e_lambda = 0.1; checkpoint folders "simam-param0.1"), while
the module default is 1e-4 (and ``main_cifar.py`` / ``main_imagenet.py`` default
``--attention_param`` to 4, a reduction-ratio value meant for SE/CBAM, so the value used
for a SimAM run is whatever was passed explicitly). We keep 1e-4; set ``e_lambda=0.1`` to
reproduce the ImageNet recipe.

timm has no SimAM.

Traps in popular copies: the README pseudo-code writes ``X.mean(dim=[2,3])`` without
``keepdim`` (in real PyTorch that errors or broadcasts against the wrong axes); dividing by H*W
instead of H*W - 1; taking mean/variance over channels too; putting it after the
block's last BN instead of after conv2.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels, check_positive

_NAME = "simam"


class SimAM(nn.Module):
    """x * sigmoid((x - mu)^2 / (4 * (var + lambda)) + 0.5), statistics per channel over H*W."""

    def __init__(self, channels: int, e_lambda: float = 1e-4):
        super().__init__()
        check_channels(_NAME, channels)
        self.e_lambda = check_positive(_NAME, "e_lambda", e_lambda)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        v = d.sum(dim=(2, 3), keepdim=True) / n
        return x * torch.sigmoid(d / (4 * (v + self.e_lambda)) + 0.5)
