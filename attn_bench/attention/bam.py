"""Bottleneck Attention Module (BAM).

Paper: Jongchan Park, Sanghyun Woo, Joon-Young Lee, In So Kweon, "BAM: Bottleneck Attention
Module", BMVC 2018, arXiv:1807.06514.

Reference implementation followed: the official repository Jongchan/attention-module,
``MODELS/bam.py`` (layers, BatchNorm1d in the channel MLP, dilated convs), and the weight
initialisation that ``MODELS/model_resnet.py`` effectively applies to BAM.

Definition (paper Eqs. 1-4 with the official code's layers)::

    Mc = MLP(GAP(x))       MLP: Linear C->C/r, BatchNorm1d, ReLU, Linear C/r->C      (N, C, 1, 1)
    Ms = conv1x1 C/r->1 o 2 x [conv3x3 dilation d, BN, ReLU] o [conv1x1 C->C/r, BN, ReLU] (x)
                                                                                     (N, 1, H, W)
    out = x * (1 + sigmoid(Mc + Ms))          # broadcast to (N, C, H, W)

Defaults (paper and official): ``rd_ratio=1/16`` (hidden width ``floor(C / 16)``; ``rd_channels``
overrides), ``dilation=4``, two dilated convs, ``act_layer='relu'``, ``gate_layer='sigmoid'``,
``combine='sum'``. Every Linear/Conv has a bias, as in the official code.

Initialisation (as ``model_resnet.py`` ends up doing for BAM's parameters): conv weights Kaiming
normal (fan-out), every bias 0, BN weight 1. That file also sets the BN weight of modules whose
name contains "SpatialGate" to 0, but BAM's submodules are named ``spatial_att``/``channel_att``,
so that rule never applies to BAM (it applies to CBAM). Linear weights keep PyTorch's default.

Placement in the paper: one BAM at each bottleneck of the network, i.e. at the end of stages 1-3
right before the downsampling, not inside the residual blocks. ``placement=paper`` (the default)
does exactly that: the ``stage_end`` site, on the trunk after the stage's last block, at the stages
after which the trunk is downsampled (ResNet-50: 25,915,099 parameters, the paper's 25.92 M).
``placement=uniform`` puts one BAM at the residual site of every block instead (30.77 M on
ResNet-50), a like-for-like variant that is not the paper's network.

Deviations from the paper: the paper's Eqs. 3-4 wrap each branch output in a BN,
``Mc = BN(MLP(GAP(x)))`` and ``Ms = BN(f3(f2(f1(f0(x)))))``; the official code has no BN on either
branch output (only BN + ReLU on the hidden layers). We follow the code's layers, whose weights are
the published ones.

Deviations from the official code:
* ``combine='sum'`` follows the paper (Eq. 1 and Table 2b, where the sum beats the product and
  the max). The official ``bam.py`` multiplies: ``1 + sigmoid(Mc * Ms)`` (raised in
  Jongchan/attention-module issues #39 and #52, unanswered). ``combine='product'`` reproduces the
  official code.
* The official channel gate pools with ``avg_pool2d(x, H, stride=H)``, which is a global pool only
  for square maps (for W != H it leaves several columns and the Flatten then breaks the Linear).
  We take the mean over H and W.

Batch size: the channel MLP uses BatchNorm1d on a (N, C/r) tensor, as the official code does, so
training mode needs N > 1 (PyTorch raises for a batch of one); eval mode works for any N. We keep
the official layer rather than swap in another normalisation.

Traps in circulating copies: the product-vs-sum mix-up (some copies even compute both), the
non-global pool above, and dropping the ``1 +`` (which turns the residual-style gate into a plain
sigmoid gate that can suppress features to 0).
"""
from __future__ import annotations


import torch
from torch import nn

from attn_bench.attention._args import _is_int, check_channels, hidden_channels, make_act
from attn_bench.errors import check

_NAME = "bam"

COMBINE = ("sum", "product")


class ChannelGate(nn.Module):
    def __init__(self, channels: int, hidden: int, act_layer: str):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.act = make_act(_NAME, "act_layer", act_layer)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act(self.bn(self.fc1(x.mean(dim=(2, 3))))))
        return y[:, :, None, None]


def _conv_bn_act(c_in: int, c_out: int, kernel_size: int, dilation: int, act_layer: str) -> nn.Sequential:
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, padding=padding, dilation=dilation),
        nn.BatchNorm2d(c_out),
        make_act(_NAME, "act_layer", act_layer),
    )


class SpatialGate(nn.Module):
    def __init__(self, channels: int, hidden: int, dilation: int, act_layer: str, num_dilated: int = 2):
        super().__init__()
        self.reduce = _conv_bn_act(channels, hidden, 1, 1, act_layer)
        dilated = [_conv_bn_act(hidden, hidden, 3, dilation, act_layer) for _ in range(num_dilated)]
        self.dilated = nn.Sequential(*dilated)
        self.final = nn.Conv2d(hidden, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.dilated(self.reduce(x)))


class BAM(nn.Module):
    """x * (1 + sigmoid(Mc(x) + Ms(x))), see the module docstring."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        dilation: int = 4,
        combine: str = "sum",
        act_layer: str = "relu",
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        channels = check_channels(_NAME, channels)
        hidden = hidden_channels(_NAME, channels, rd_ratio, rd_channels)
        check(_is_int(dilation) and dilation >= 1, f"bam: dilation={dilation!r} must be a positive integer")
        check(combine in COMBINE, f"bam: combine='{combine}' must be one of {', '.join(COMBINE)}")
        self.combine = combine
        self.channel_att = ChannelGate(channels, hidden, act_layer)
        self.spatial_att = SpatialGate(channels, hidden, dilation, act_layer)
        self.gate = make_act(_NAME, "gate_layer", gate_layer)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.zeros_(m.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map ``1 + sigmoid(Mc combine Ms)``, shape (N, C, H, W)."""
        mc, ms = self.channel_att(x), self.spatial_att(x)
        return 1 + self.gate(mc + ms if self.combine == "sum" else mc * ms)

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map averaged over channels, (N, H, W) (``attn-bench visualize``)."""
        return self.attention(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)
