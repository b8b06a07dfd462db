"""Non-local block (embedded Gaussian).

Paper: "Non-local Neural Networks", Xiaolong Wang, Ross Girshick, Abhinav Gupta, Kaiming He,
CVPR 2018, arXiv:1711.07971.

Official code followed: github.com/facebookresearch/video-nonlocal-net,
``lib/models/nonlocal_helper.py`` (``add_nonlocal``) with the defaults of ``lib/core/config.py``
(``NONLOCAL``), in 2-D (its 1x1x1 convs and [1, 2, 2] pooling are our 1x1 convs and 2x2 pooling):

* theta, phi, g: 1x1 convs C -> C/2 (``dim_inner = dim_in / 2``), with bias, weights N(0, 0.01),
  bias 0 (``CONV_INIT_STD``);
* sub-sampling (``USE_MAXPOOL: True``): a 2x2 max pool of the *input* before phi and g (not theta);
* affinity theta^T phi, scaled by 1/sqrt(C/2) (``USE_SCALE: True``; the paper's formula has no
  scale), softmax over the keys j;
* y = affinity-weighted sum of g; W: 1x1 conv C/2 -> C with bias, N(0, 0.01), then BatchNorm with
  its scale initialised to 0 (``USE_BN``, ``BN_INIT_GAMMA: 0``): z = BN(W y) + x is exactly the
  identity at initialisation (paper Sec. 4.1, "initialized as zero").

Defaults: ``rd_ratio=1/2`` (inter-channels C/2), ``sub_sample=True``, ``use_scale=True``.
Parameters: ``3 * (C * Ci + Ci) + Ci * C + C + 2 * C`` with Ci = floor(C * rd_ratio): 2C^2 + 4.5C
at C/2.

Placement (``placement=paper``: the ``trunk`` site, ResNet stages 2-3, ``alternate`` blocks):
the official ``resnet_helper.res_stage_nonlocal`` adds a block after every other residual block
(``idx % 2 == 1``) of res3 and res4, after the block's addition and ReLU, the paper's "5 blocks"
ResNet-50 setting (2 in res3, 3 in res4). The paper has no ImageNet classification experiment
and publishes no parameter count for a 2-D ResNet-50 (its networks are video I3D and Mask R-CNN);
ResNet-50 + 5 NL blocks has 25,557,032 + 7,358,464 = 32,915,496 parameters here (tested).

Deviations: the max pool uses ``ceil_mode=True`` so that odd and 1x1 maps (the last stages at
CIFAR size) still pool (identical for even sizes). BatchNorm momentum is PyTorch's 0.1, which is
Caffe2's 0.9.

mmcv's ``NonLocal2d`` (the usual PyTorch port) differs: it pools *after* the phi and g convs
(max pool does not commute with a 1x1 conv), has no sub-sampling and no BN by default, and
zero-initialises the output conv instead of a BN scale.

Traps in circulating copies: softmax over the queries instead of the keys; BN or W not zero
initialised (the block then perturbs the pretrained or freshly initialised network from step
one); the 1/sqrt(d) scale silently added or dropped; pooling theta as well.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels, hidden_channels
from attn_bench.errors import check

_NAME = "nl"


class NonLocal(nn.Module):
    """z = BN(W(softmax(theta(x)^T phi(x)) g(x))) + x, embedded Gaussian."""

    attn_sites = ("trunk", "stage_end", "residual", "mid")  # its paper's site first

    def __init__(self, channels: int, rd_ratio: float = 1 / 2, sub_sample: bool = True, use_scale: bool = True):
        super().__init__()
        channels = check_channels(_NAME, channels)
        inner = hidden_channels(_NAME, channels, rd_ratio)
        for arg, value in (("sub_sample", sub_sample), ("use_scale", use_scale)):
            check(isinstance(value, bool), f"{_NAME}: {arg}={value!r} must be true or false")
        self.scale = inner ** -0.5 if use_scale else 1.0
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if sub_sample else nn.Identity()
        self.out = nn.Conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, HW, HW') attention of every query position over the key positions."""
        n = x.shape[0]
        query = self.theta(x).flatten(2).transpose(1, 2)  # N, HW, Ci
        key = self.phi(self.pool(x)).flatten(2)  # N, Ci, HW'
        return (torch.bmm(query, key) * self.scale).softmax(dim=-1).view(n, query.shape[1], key.shape[2])

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """Attention each (pooled) key position receives, averaged over the queries, at the key grid
        (N, H', W') (``attn-bench visualize``)."""
        keys = self.pool(x).shape[-2:]
        return self.affinity(x).mean(dim=1).view(x.shape[0], *keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        value = self.g(self.pool(x)).flatten(2).transpose(1, 2)  # N, HW', Ci
        y = torch.bmm(self.affinity(x), value).transpose(1, 2).reshape(n, -1, h, w)
        return self.bn(self.out(y)) + x
