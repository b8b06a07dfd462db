"""Effective Squeeze-Excitation (eSE), the channel attention of VoVNet-V2.

Paper: "CenterMask: Real-Time Anchor-Free Instance Segmentation", Youngwan Lee, Jongyoul Park,
CVPR 2020, arXiv:1911.06667, Sec. 3.3 (VoVNetV2: "effective SE").

Reference implementation: github.com/youngwanLEE/vovnet-detectron2, ``vovnet/vovnet.py``
(``eSEModule``, ``Hsigmoid``, ``_OSA_module``). SE with its two FCs replaced by one C -> C FC, so
no channel information is lost to the reduction:

    out = x * hard_sigmoid(W . mean(x) + b)     hard_sigmoid(z) = relu6(z + 3) / 6

Built on timm's ``EffectiveSEModule`` (the same computation: a 1x1 conv with bias on the pooled
vector, ``hard_sigmoid`` gate), with its own signature: timm's swallows unknown keyword
arguments (``**_``), where ours refuses them, and its experimental ``add_maxpool`` path is not the
paper's and not offered. Defaults: ``gate_layer='hard_sigmoid'``; the FC weight is initialised as
the official ``VoVNet._initialize_weights`` does every conv, ``kaiming_normal_`` (fan-in, gain
sqrt(2)); its bias keeps PyTorch's default (the official code leaves it so). Parameters: ``C*C + C``
per block; ResNet-50 with eSE in all 16 bottlenecks adds 20,134,656 (45,691,688 in all; no ResNet
count is published: the paper's networks are VoVNet-V2s).

Placement (official ``_OSA_module``): after the aggregation 1x1 conv (conv-BN-ReLU) of each OSA
module, before the identity addition: in a ResNet, attn-bench's ``residual`` site (after the last
BN of the branch, before the addition). Deviation: there it follows the branch's BN, not a ReLU,
since a ResNet branch ends without one.
"""
from __future__ import annotations

from timm.layers import EffectiveSEModule
from torch import nn

from attn_bench.attention._args import check_channels, make_act

_NAME = "ese"


class EffectiveSE(EffectiveSEModule):
    """x * hard_sigmoid(FC(avgpool(x))), one C -> C FC with bias (VoVNet-V2's eSE)."""

    def __init__(self, channels: int, gate_layer: str = "hard_sigmoid"):
        super().__init__(check_channels(_NAME, channels))
        self.gate = make_act(_NAME, "gate_layer", gate_layer)
        nn.init.kaiming_normal_(self.fc.weight)
