"""Style-based Recalibration Module (SRM).

Paper: "SRM: A Style-based Recalibration Module for Convolutional Neural Networks", HyunJae Lee,
Hyo-Eun Kim, Hyeonseob Nam, ICCV 2019, arXiv:1903.10829.

Reference implementation: github.com/hyunjaelee410/style-based-recalibration-module,
``models/recalibration_modules.py`` (``SRMLayer``) and ``models/resnet.py``. Per channel c:

    t_c = [mean(x_c), std(x_c)]                 style pooling over the H*W positions
    z_c = w_c0 * mean + w_c1 * std              channel-wise fully connected (CFC): 2 weights per channel
    out = x * sigmoid(BN(z))                    BatchNorm over the N x C values, then the gate

Defaults (the official ones; the module takes no arguments but ``channels``): the CFC weights start
at 0 (``cfc.data.fill_(0)``), so every gate starts at sigmoid(BN(0)) = 0.5; the BN keeps PyTorch's
defaults (weight 1, bias 0, eps 1e-5, momentum 0.1). The standard deviation is PyTorch's
``Tensor.std`` as the official code calls it: unbiased (divides by H*W - 1), no epsilon.
Parameters: ``2*C`` (CFC) + ``2*C`` (BN weight and bias) = ``4*C``; ResNet-50 with SRM in all 16
bottlenecks adds 60,416 (25,617,448 in all), the CIFAR ResNet-32 (option B) 2,240 (469,146): both as
a third-party port (pythonawesome.com's "SRM Network PyTorch") lists them (tested). The paper's own
table could not be read here, so no figure of it is quoted.

Placement (official ``models/resnet.py``): at the end of the residual branch, after the last BN and
before the addition: attn-bench's ``residual`` site (``placement=paper`` and ``uniform`` agree).

Deviations: (1) with a single position (H*W = 1) the unbiased std divides by 0 and is NaN in the
official code; we use a divisor of max(H*W - 1, 1). (2) A channel that is exactly constant has std 0,
where sqrt's gradient is infinite and the official module's backward gives NaN; timm's ResNets start
every residual branch at exactly 0 (``zero_init_last``), so that is the first step of every run here.
We floor the variance at 1e-12 (std 1e-6 instead of 0, gradient 0 below it): the official value
wherever a channel varies by more than 1e-6. (3) The official ``imagenet.py`` trains SRM's parameters without weight decay (its
``set_optimizer``); here the BN weight and bias are left out of weight decay as every norm parameter
is, while the CFC weight (2-D) follows ``trainer.optimizer.weight_decay`` as every other weight does.

As with CBAM's spatial BN, a training batch of one image gives BN a single value per channel, which
PyTorch refuses; evaluation at batch 1 works (running statistics).

timm has no SRM.

Traps in popular copies: a grouped ``Conv1d`` for the CFC that adds a bias (the official CFC has none);
the biased std, or an epsilon added inside it; a BN over the (N, C, 2) style tensor instead of over
the fused values z; leaving out the BN altogether.
"""
from __future__ import annotations

import torch
from torch import nn

from attn_bench.attention._args import check_channels

_NAME = "srm"
VAR_FLOOR = 1e-12  # std >= 1e-6: the gradient of sqrt at an exactly constant channel is infinite


class StyleRecalibration(nn.Module):
    """x * sigmoid(BN(w0 * mean(x) + w1 * std(x))), statistics and weights per channel."""

    def __init__(self, channels: int):
        super().__init__()
        channels = check_channels(_NAME, channels)
        self.cfc = nn.Parameter(torch.zeros(channels, 2))  # channel-wise fully connected, official zero init
        self.bn = nn.BatchNorm2d(channels)

    def style(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 2): each channel's mean and unbiased standard deviation over its positions."""
        flat = x.flatten(2)
        mean = flat.mean(dim=2)
        var = (flat - mean.unsqueeze(2)).pow(2).sum(dim=2) / max(flat.shape[2] - 1, 1)
        return torch.stack([mean, var.clamp_min(VAR_FLOOR).sqrt()], dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (self.style(x) * self.cfc).sum(dim=2)[:, :, None, None]
        return x * torch.sigmoid(self.bn(z))
