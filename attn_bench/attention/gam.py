"""Global Attention Mechanism (GAM).

Paper: Yichao Liu, Zongru Shao, Nico Hoffmann, "Global Attention Mechanism: Retain Information to
Enhance Channel-Spatial Interactions", arXiv:2112.05561 (2021).

Reference implementation: none. We found no code released by the authors (searched GitHub code,
issues and paper pages; the "code" links point to third-party copies such as dengbuqi/GAM_Pytorch
``CAM.py``, itself "inspired by Fly-Pluche/GAM_keras"). This module follows the paper text and its
Figs. 1-3.

Definition (paper Eqs. 1-2, sequential like CBAM)::

    F2 = Mc(F1) * F1          Mc: permute (N,C,H,W)->(N,H,W,C), MLP C -> C/r -> C with ReLU,
                                  permute back, sigmoid (Fig. 2) -- no pooling
    F3 = Ms(F2) * F2          Ms: 7x7 conv C -> C/r, BN, ReLU, 7x7 conv C/r -> C, BN, sigmoid
                                  (Fig. 3) -- no pooling, zero "same" padding

Defaults: ``rd_ratio=1/4`` (r = 4, the rate every circulating implementation uses), hidden width
``floor(C * rd_ratio)`` (``rd_channels`` overrides it), ``act_layer='relu'``,
``gate_layer='sigmoid'`` (both gates), ``group=False``. The paper's own ratio, as its text is
quoted (e.g. jishuzhan.net/article/1934412207533633538, blog.csdn.net/wei582636312/article/details/143747739):
"an encoder-decoder MLP with a reduction ratio r, same as BAM" and "the same reduction ratio r [in
the spatial submodule]"; BAM's r is 16. ``model.placement=paper`` (models/presets.py) therefore
builds GAM with ``rd_ratio=1/16``; the block's default stays at the copies' r = 4, which
``placement=uniform`` uses. Not established: the paper's tables (no table row could be read here,
so none is quoted) and the group count below. ResNet-50 + GAM at r = 16 has 151,352,376 parameters
(1000 classes), 1/3.49 of the r = 4 total, consistent with the reading of the paper's count that asked for this preset
("about 3.5x" below r = 4).

Grouped variant (``group=True``): the paper says the pooling-free spatial submodule can add many
parameters, so "to prevent a significant increase in the parameters, we adopt group convolution
with channel shuffle in ResNet50" (quoted from secondary summaries, which agree that this is for
ResNet-50 only, not ResNet-18 or MobileNetV2; we could not load the paper text here). It gives
neither the number of groups nor where the shuffle goes. Our
reading, in the ShuffleNet sense: both 7x7 convs use ``groups`` groups, and the channels are
shuffled between them (after the first conv's BN + ReLU) so that every output group of the second
conv sees every input group (fully so when ``hidden / groups >= groups``, e.g. C=64, r=4, g=4).
``groups=4`` by default; it must divide both C and the hidden width (else ConfigError).

Parameters: MLP ``2*C*Cr + Cr + C`` (Linear layers with bias), convs ``2 * 49*C*Cr / g``
(no bias: each is followed by BN), BNs ``2*Cr + 2*C``; ``g = 1`` unless ``group=True``. So a block
costs about ``(2/r + 98/(r*g)) * C^2``: 25 C^2 at r = 4, which is 100x an SE block. In every
bottleneck of ResNet-50 (output widths 3x256, 4x512, 6x1024, 3x2048) GAM adds 503.0M parameters
at r = 4 (526.8M in all with a 100-class head, 528.6M with 1000 classes), 133.3M with
``group=True, groups=4`` (157.1M / 158.9M), 125.8M at r = 16 (149.5M / 151.4M) and 33.4M at
r = 16 with 4 groups (57.1M / 58.9M); tested in ``tests/attention/test_gam.py``.

Initialisation: PyTorch defaults (there is no reference code to follow).

Placement in the paper: the module is CBAM-style (sequential channel then spatial gate) and is
evaluated inside ResNet and MobileNet; we assume CBAM's slot, the end of the residual branch before
the addition, which is the attn-bench slot (we did not find a drawing of the block integration).

Deviations from the paper: none known. Choices the paper leaves open: the conv biases (dropped,
redundant before BN), the grouped variant's group count and shuffle position (above).

Traps in circulating copies, and what we do instead:
* dengbuqi/GAM_Pytorch and many blog copies drop the channel sigmoid (``x * mlp(x)``), which makes
  Mc an unbounded, sign-changing map; Fig. 2 ends in a sigmoid, so we apply it.
* dengbuqi/GAM_Pytorch uses ``padding_mode='replicate'``; nothing in the paper suggests it and
  every other conv attention (CBAM, BAM) zero-pads, so we zero-pad.
* The popular ``group=True`` copy uses ``groups=rate`` and calls ``channel_shuffle`` on the final
  sigmoid map. That only permutes which map multiplies which channel (a fixed relabelling the
  convs can absorb); no information crosses groups, since each output channel still depends on a
  single input group. We shuffle between the two grouped convs instead.
* Copies compute ``int(C / rate)`` without checking it; for ``C < r`` that builds zero-width
  layers. We raise ConfigError.
"""
from __future__ import annotations


import torch
from torch import nn

from attn_bench.attention._args import _is_int, check_channels, hidden_channels, make_act
from attn_bench.errors import check

_NAME = "gam"


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: view channels as (groups, C/groups), transpose, flatten."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class GAM(nn.Module):
    """Channel MLP gate on every pixel, then a two-layer 7x7 conv spatial gate (module docstring)."""

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1 / 4,
        rd_channels: int | None = None,
        group: bool = False,
        groups: int = 4,
        act_layer: str = "relu",
        gate_layer: str = "sigmoid",
    ):
        super().__init__()
        channels = check_channels(_NAME, channels)
        hidden = hidden_channels(_NAME, channels, rd_ratio, rd_channels)
        check(isinstance(group, bool), f"gam: group={group!r} must be true or false")
        g = groups if group else 1
        if group:
            check(_is_int(groups) and groups >= 1, f"gam: groups={groups!r} must be a positive integer")
            check(
                channels % g == 0 and hidden % g == 0,
                f"gam: groups={groups} must divide both channels ({channels}) and hidden channels ({hidden})",
            )
        self.groups = g
        # channel submodule: MLP along the channel axis of every pixel
        self.fc1 = nn.Linear(channels, hidden)
        self.act1 = make_act(_NAME, "act_layer", act_layer)
        self.fc2 = nn.Linear(hidden, channels)
        self.channel_gate = make_act(_NAME, "gate_layer", gate_layer)
        # spatial submodule
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=7, padding=3, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act2 = make_act(_NAME, "act_layer", act_layer)
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size=7, padding=3, groups=g, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.spatial_gate = make_act(_NAME, "gate_layer", gate_layer)

    def channel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Mc(x), shape (N, C, H, W)."""
        y = self.fc2(self.act1(self.fc1(x.permute(0, 2, 3, 1))))
        return self.channel_gate(y.permute(0, 3, 1, 2))

    def spatial_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Ms(x), shape (N, C, H, W)."""
        y = self.act2(self.bn1(self.conv1(x)))
        if self.groups > 1:
            y = channel_shuffle(y, self.groups)
        return self.spatial_gate(self.bn2(self.conv2(y)))

    def spatial_map(self, x: torch.Tensor) -> torch.Tensor:
        """Ms on the channel-attended input, averaged over channels, (N, H, W) (``attn-bench visualize``)."""
        return self.spatial_attention(x * self.channel_attention(x)).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_attention(x)
        return x * self.spatial_attention(x)
