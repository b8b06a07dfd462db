"""Pre-activation CIFAR networks, registered with timm: He et al.'s pre-activation ResNet-164 and
Zagoruyko & Komodakis's Wide ResNets (WRN-16-8, WRN-28-10).

* ``preact_resnet164_cifar``: Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun, "Identity Mappings
  in Deep Residual Networks", ECCV 2016, arXiv:1603.05027 (Table 2 / Table 3: ResNet-164, 1.7 M
  parameters); official code KaimingHe/resnet-1k-layers ``resnet-pre-act.lua``. A 3x3 16-channel
  stem, three stages of 18 bottleneck units (BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1; widths 16/32/64,
  outputs x4) on 32/16/8-px maps, a final BN-ReLU, global average pooling and the classifier.
* ``wrn16_8``, ``wrn28_10``: Sergey Zagoruyko, Nikos Komodakis, "Wide Residual Networks", BMVC 2016,
  arXiv:1605.07146 (Table 1 / 4: WRN-16-8 11.0 M, WRN-28-10 36.5 M parameters); official code
  szagoruyko/wide-residual-networks ``pytorch/resnet.py``. A 3x3 16-channel stem, three stages of
  ``(depth - 4) / 6`` basic units (BN-ReLU-3x3, [dropout], BN-ReLU-3x3) of widths 16k/32k/64k, a final
  BN-ReLU, pooling and the classifier. ``dropout=`` is the paper's dropout between the two convs
  (0.3 in its dropout rows; 0 by default, as its main rows).

Both follow their official code where the shape changes: the unit's first BN-ReLU is applied to
the input of both branches, and the shortcut is a 1x1 (strided) conv of that pre-activated input
(``resnet-pre-act.lua``'s ``both_preact``; ``resnet.py``'s ``convdim`` on ``o1``); elsewhere the
shortcut is the identity. No conv has a bias (every conv but the shortcut is followed by a BN;
``resnet.py`` has none on the shortcut either; for ResNet-164 the Lua code's conv biases are not
followed: a deviation of 0.6 k parameters at most, inside the published 1.7 M).
Initialisation: convs ``kaiming_normal_(mode='fan_out')``, BN weight 1 and bias 0, the classifier
PyTorch's default (``resnet.py`` uses He init for convs too).

Sites: ``residual`` (the ``se`` attribute, the end of the residual branch before the addition, where
SE's and CBAM's papers put them in pre-activation units), ``mid`` (after the unit's 3x3 conv: ``conv2``),
``trunk`` (``merge``: the trunk right after the addition; pre-activation units have no ReLU there),
``stage_end`` and ``input``. There is no ``conv`` site: SK's unit brings its own BN and ReLU after the
conv, which a pre-activation unit puts before it.
"""
from __future__ import annotations

import torch
from timm.layers import DropPath
from timm.models import register_model
from torch import nn

from attn_bench.models.cifar_resnets import CifarNet, drop_path_rate_of, model_kwargs


def _conv(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)


class _PreActUnit(nn.Module):
    """What both units share: the projection of the pre-activated input, ``se``, drop-path and ``merge``."""

    def _finish_init(self, c_in: int, c_out: int, stride: int, drop_path: float) -> None:
        self.shortcut = _conv(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else None
        self.se = None  # the residual site (placement fills it)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.merge = nn.Identity()  # the trunk site: after the addition

    def _residual(self, pre: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self._residual(pre)
        if self.se is not None:
            out = self.se(out)
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        return self.merge(shortcut + self.drop_path(out))


class PreActBottleneck(_PreActUnit):
    """BN-ReLU-1x1, BN-ReLU-3x3 (stride), BN-ReLU-1x1 to ``4 * planes`` (He et al. 2016b, Fig. 4(e))."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        c_out = planes * self.expansion
        self.bn1, self.act1, self.conv1 = nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), _conv(c_in, planes, 1)
        self.bn2, self.act2, self.conv2 = nn.BatchNorm2d(planes), nn.ReLU(inplace=True), _conv(planes, planes, 3, stride)
        self.bn3, self.act3, self.conv3 = nn.BatchNorm2d(planes), nn.ReLU(inplace=True), _conv(planes, c_out, 1)
        self._finish_init(c_in, c_out, stride, drop_path)

    def _residual(self, pre: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act2(self.bn2(self.conv1(pre))))
        return self.conv3(self.act3(self.bn3(out)))


class PreActBasicBlock(_PreActUnit):
    """BN-ReLU-3x3 (stride), [dropout], BN-ReLU-3x3 (Zagoruyko & Komodakis 2016, Fig. 1(d))."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, drop_path: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.act1, self.conv1 = nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), _conv(c_in, planes, 3, stride)
        self.bn2, self.act2 = nn.BatchNorm2d(planes), nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv(planes, planes, 3)
        self._finish_init(c_in, planes, stride, drop_path)

    def _residual(self, pre: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.dropout(self.act2(self.bn2(self.conv1(pre)))))


class PreActCifarNet(CifarNet):
    """Stem conv, three stages of pre-activation units, final BN-ReLU, pooling, classifier (timm's interface)."""

    def __init__(self, unit: str, blocks_per_stage: int, widths: tuple[int, int, int], num_classes: int = 10,
                 in_chans: int = 3, dropout: float = 0.0, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "avg"):
        super().__init__()
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.conv1 = _conv(in_chans, 16, 3)
        total, done, c_in = 3 * blocks_per_stage, 0, 16
        for stage, planes in enumerate(widths, start=1):
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 1 and index == 0 else 1
                drop_path = drop_path_rate_of(drop_path_rate, done, total)
                if unit == "bottleneck":
                    block = PreActBottleneck(c_in, planes, stride, drop_path)
                else:
                    block = PreActBasicBlock(c_in, planes, stride, drop_path, dropout)
                blocks.append(block)
                c_in, done = planes * block.expansion, done + 1
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.num_features = c_in
        self.bn_final, self.act_final = nn.BatchNorm2d(c_in), nn.ReLU(inplace=True)
        self._finish(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.act_final(self.bn_final(x))


def _create(name: str, unit: str, blocks: int, widths: tuple[int, int, int], pretrained: bool, **kwargs):
    kwargs = model_kwargs(name, pretrained, kwargs)
    if unit == "bottleneck" and "dropout" in kwargs:
        raise TypeError(f"{name} has no dropout between convs (that is the Wide ResNets' option)")
    return PreActCifarNet(unit, blocks, widths, **kwargs)


@register_model
def preact_resnet164_cifar(pretrained: bool = False, **kwargs) -> PreActCifarNet:
    """Pre-activation ResNet-164 for CIFAR (He et al. 2016b): 18 bottleneck units per stage, 1.7 M parameters."""
    return _create("preact_resnet164_cifar", "bottleneck", 18, (16, 32, 64), pretrained, **kwargs)


@register_model
def wrn16_8(pretrained: bool = False, **kwargs) -> PreActCifarNet:
    """WRN-16-8 (Zagoruyko & Komodakis 2016): 2 units per stage, widths 128/256/512, 11.0 M parameters."""
    return _create("wrn16_8", "basic", 2, (128, 256, 512), pretrained, **kwargs)


@register_model
def wrn28_10(pretrained: bool = False, **kwargs) -> PreActCifarNet:
    """WRN-28-10 (Zagoruyko & Komodakis 2016): 4 units per stage, widths 160/320/640, 36.5 M parameters."""
    return _create("wrn28_10", "basic", 4, (160, 320, 640), pretrained, **kwargs)


PREACT_NETS = ("preact_resnet164_cifar", "wrn16_8", "wrn28_10")
