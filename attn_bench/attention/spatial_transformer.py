"""Spatial Transformer (STN).

Paper: "Spatial Transformer Networks", Max Jaderberg, Karen Simonyan, Andrew Zisserman, Koray
Kavukcuoglu, NeurIPS 2015, arXiv:1506.02025.

No official code exists. Followed: the paper (Sec. 3: localisation network, grid generator,
sampler) and the mechanics of torchvision's STN tutorial (``affine_grid`` + ``grid_sample``, last
localisation layer initialised to the identity transform).

* Localisation network f_loc: a small CNN regresses the 6 parameters theta of a 2-D affine
  transform per image. The paper uses a different one per task (Sec. 4, Appendix A); ours is a
  CNN of the same kind: two 5x5 convs with ``loc_channels`` filters, each followed by 2x2 max
  pooling and ReLU, an adaptive average pool to ``pool_size`` x ``pool_size``, a fully connected
  layer of ``loc_hidden`` units with ReLU, and the final regression layer to 6 values.
* Grid generator and sampler: ``affine_grid`` maps the output grid (normalised to [-1, 1]) through
  theta into the input; ``grid_sample`` reads it bilinearly with zero padding. The output has the
  input's size (the paper allows another; a block here must keep the shape).
* Initialisation (paper Sec. 4.1 and every implementation since): the regression layer's weights
  are zero and its bias is the identity [1, 0, 0, 0, 1, 0], so the module starts as the identity
  map (with ``align_corners=False`` the identity grid samples exactly the pixel centres: output
  equals input at init, tested).

Sites: ``input`` (before the stem, on the image, the paper's classification networks; ``placement=paper``)
and, as the paper also does (Sec. 4.3, ST-CNN Multi), on feature maps: ``stage_end`` and ``trunk``.

Defaults: ``loc_channels=20``, ``loc_hidden=50``, ``pool_size=4``, ``loc_lr_mult=0.01``. Parameters:
``25*C*L + L + 25*L*L + L + (L*p*p)*h + h + 6*h + 6`` for C channels, L = loc_channels,
p = pool_size, h = loc_hidden.

Deviation, learning rate: the localisation network trains at ``loc_lr_mult`` (0.01) x the host
network's learning rate: the block's ``lr_scale``, which attn-bench's optimiser turns into a parameter
group with timm's ``lr_scale`` (every scheduler step multiplies it in), so the ratio holds for SGD and
AdamW alike (tested; a gradient scaling, as before, is undone by Adam's normalisation: measured update
ratio 1.0 instead of 0.01). Weight decay follows the group's rate, as in any parameter group. At the
host's rate the regression runs away: measured here (2-core CPU, default synthetic task,
resnet18_tiny, 2000 images, 4 epochs, lr 0.1, SGD) the transform's bias reached a 3.5x zoom and
top-1 ended at 20.6 %; with 0.01, 58.0 %. ``loc_lr_mult=1`` is the plain module. In a training loop
of your own, give the block's parameters ``lr x lr_scale``.

Deviations, shape: the adaptive average pool before the fully connected layer (so that one module fits
any input size; the paper's localisation nets are sized to their task's fixed input), 'same'
padding of the convs and ceil-mode pooling (so that 4x4 feature maps keep a spatial extent).

Traps in circulating copies: a localisation net that hard-codes the flattened size
(``10 * 3 * 3`` of the 28x28 MNIST tutorial) and fails on any other size; ``align_corners=True`` in
one of ``affine_grid``/``grid_sample`` and not the other (the identity then resamples the image
by half a pixel); a random init of the last layer, which starts training from a random warp.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from attn_bench.attention._args import check_channels, check_positive, check_positive_int

_NAME = "stn"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class SpatialTransformer(nn.Module):
    """out = sample(x, affine_grid(f_loc(x))), theta = identity at initialisation."""

    attn_sites = ("input", "stage_end", "trunk")

    def __init__(self, channels: int, loc_channels: int = 20, loc_hidden: int = 50, pool_size: int = 4,
                 loc_lr_mult: float = 0.01):
        super().__init__()
        channels = check_channels(_NAME, channels)
        self.lr_scale = check_positive(_NAME, "loc_lr_mult", loc_lr_mult)  # the optimiser's group (docstring)
        width = check_positive_int(_NAME, "loc_channels", loc_channels)
        hidden = check_positive_int(_NAME, "loc_hidden", loc_hidden)
        pool = check_positive_int(_NAME, "pool_size", pool_size)
        self.localization = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(channels, width, 5, padding=2),
            pool1=nn.MaxPool2d(2, ceil_mode=True),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(width, width, 5, padding=2),
            pool2=nn.MaxPool2d(2, ceil_mode=True),
            act2=nn.ReLU(),
            grid=nn.AdaptiveAvgPool2d(pool),
            flatten=nn.Flatten(),
            fc=nn.Linear(width * pool * pool, hidden),
            act3=nn.ReLU(),
        ))
        self.theta = nn.Linear(hidden, 6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.theta.weight)
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor(IDENTITY))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 2, 3) affine transforms, output grid -> input coordinates."""
        return self.theta(self.localization(x)).view(-1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.transform(x).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
