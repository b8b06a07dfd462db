"""He et al.'s CIFAR ResNets (ResNet-20/32/44/56/110), and the ResNet-110 of the Attention Branch
Network's code, registered with timm.

Paper: Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016, arXiv:1512.03385, Sec. 4.2 and Table 6: a 3x3 conv with 16 filters, then
three stages of ``n`` BasicBlocks on 32x32, 16x16 and 8x8 maps with 16, 32 and 64 filters
(``6n + 2`` layers), subsampling by stride-2 convs, global average pooling and a fully connected
classifier. No max-pooling. Published sizes: 0.27 / 0.46 / 0.66 / 0.85 / 1.7 M parameters
(tested exactly: 269,722 / 464,154 / 658,586 / 853,018 / 1,727,962 with 10 classes).

Shortcuts (``shortcut=``): ``"A"`` (the paper's CIFAR choice, "all shortcuts are identity", the
increasing dimensions by zero-padding: the stride-2 subsampled input with the new channels zero,
no parameters) or ``"B"`` (a 1x1 stride-2 projection with BN where the width changes, as the
ImageNet ResNets do).

The blocks are timm's own ``BasicBlock`` (3x3 conv, BN, ReLU, 3x3 conv, BN, ``se`` slot, addition,
ReLU): every attn-bench site works on these networks as on timm's ResNets, at the same module
paths (``layer1``..``layer3``, ``conv1`` for the stem).

Initialisation: convs ``kaiming_normal_(mode='fan_out')`` (He init, as the paper cites it [13]),
BN weight 1 and bias 0, the classifier PyTorch's default. Deviation: none known; the paper's
training recipe (SGD 0.1, batch 128, 64k iterations) is the trainer's business, not the model's.

``resnet110_abn_cifar``: the network the Attention Branch Network (Fukui et al., CVPR 2019) calls
ResNet-110 on CIFAR, as its official code machine-perception-robotics-group/attention_branch_network
``models/cifar/resnet.py`` builds it (taken over from bearpaw/pytorch-classification, whose baseline
``resnet(depth=110)`` is the same trunk): ``block = Bottleneck if depth >= 44`` with
``n = (depth - 2) // 6``, so 18 *bottleneck* blocks per stage (planes 16/32/64, outputs x4: 164
weighted layers, not He et al.'s 110 BasicBlock layers), a 1x1 conv + BN projection wherever the shape
changes (the first block of every stage, the first one included: 16 -> 64 channels), stride 2 on the
3x3 conv of stages 2 and 3, the same stem, He init (``normal_(0, sqrt(2 / (k*k*out)))`` = fan-out) and
head. 1,704,154 parameters with 10 classes, 1,727,284 with 100 (no count is published). What is
not here: ABN's attention branch (a second stack of 18 blocks on the stage-2 output, a class-wise
attention map that scales the trunk's stage-3 input, and a second loss): it is a network, not a block
that plugs into a trunk, so it is not an attn-bench block; this is the trunk its paper compares with.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models import register_model
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}  # depth 6n + 2 -> n blocks per stage
WIDTHS = (16, 32, 64)
SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Option A: the input subsampled by ``stride`` with ``extra`` zero channels appended (no parameters)."""

    def __init__(self, stride: int, extra: int):
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, 0, self.extra))


def _shortcut(kind: str, inplanes: int, planes: int, stride: int) -> nn.Module | None:
    """The shortcut from ``inplanes`` to ``planes`` output channels (None: the identity)."""
    if stride == 1 and inplanes == planes:
        return None
    if kind == "A":
        return ZeroPadShortcut(stride, planes - inplanes)
    return nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))


class CifarNet(nn.Module):
    """What the CIFAR networks share: timm's head interface (``fc``, ``global_pool``, ``forward_head``,
    ``get_classifier``, ``reset_classifier``) and He initialisation; a subclass builds its body and
    defines ``forward_features``."""

    num_features: int
    drop_rate: float = 0.0

    def _finish(self, num_classes: int, global_pool: str) -> None:
        """The head, then every conv He-initialised (fan-out) and every BN at weight 1, bias 0."""
        self.reset_classifier(num_classes, global_pool)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class CifarResNet(CifarNet):
    """ResNet-(6n+2) for 32x32 images, with timm's model interface (``forward_features``, ``fc``):
    ``n`` timm ``block``s per stage of 16/32/64 planes (a Bottleneck's output is 4x its planes)."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_chans: int = 3, shortcut: str = "A",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, global_pool: str = "avg",
                 block: type[nn.Module] = BasicBlock):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
        width = block.expansion
        self.num_classes, self.drop_rate, self.num_features = num_classes, drop_rate, WIDTHS[-1] * width
        self.conv1 = nn.Conv2d(in_chans, WIDTHS[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        self.act1 = nn.ReLU(inplace=True)
        total, done, inplanes = 3 * blocks_per_stage, 0, WIDTHS[0]
        for stage, planes in enumerate(WIDTHS, start=1):
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 1 and index == 0 else 1
                drop_path = drop_path_rate_of(drop_path_rate, done, total)
                blocks.append(block(inplanes, planes, stride, _shortcut(shortcut, inplanes, planes * width, stride),
                                    drop_path=_drop_path(drop_path)))
                inplanes, done = planes * width, done + 1
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self._finish(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


def _drop_path(rate: float) -> nn.Module | None:
    from timm.layers import DropPath

    return DropPath(rate) if rate > 0 else None


def model_kwargs(name: str, pretrained: bool, kwargs: dict) -> dict:
    """What a registered CIFAR network's constructor takes of ``timm.create_model``'s keyword arguments:
    none of its pretrained-weight plumbing (there are no weights to load)."""
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights")
    return {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}


def drop_path_rate_of(rate: float, index: int, total: int) -> float:
    """timm's stochastic-depth rule: rising linearly from 0 in the first block to ``rate`` in the last."""
    return rate * index / max(total - 1, 1)


def _cifar_resnet(depth: int, pretrained: bool = False, **kwargs) -> CifarResNet:
    return CifarResNet(DEPTHS[depth], **model_kwargs(f"resnet{depth}_cifar", pretrained, kwargs))


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 for CIFAR (He et al. 2016, Sec. 4.2): 3 BasicBlocks per stage, 0.27 M parameters."""
    return _cifar_resnet(20, pretrained, **kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-32 for CIFAR (He et al. 2016, Sec. 4.2): 5 BasicBlocks per stage, 0.46 M parameters."""
    return _cifar_resnet(32, pretrained, **kwargs)


@register_model
def resnet44_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-44 for CIFAR (He et al. 2016, Sec. 4.2): 7 BasicBlocks per stage, 0.66 M parameters."""
    return _cifar_resnet(44, pretrained, **kwargs)


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-56 for CIFAR (He et al. 2016, Sec. 4.2): 9 BasicBlocks per stage, 0.85 M parameters."""
    return _cifar_resnet(56, pretrained, **kwargs)


@register_model
def resnet110_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-110 for CIFAR (He et al. 2016, Sec. 4.2): 18 BasicBlocks per stage, 1.7 M parameters."""
    return _cifar_resnet(110, pretrained, **kwargs)


@register_model
def resnet110_abn_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """The Attention Branch Network's CIFAR "ResNet-110" (its ``models/cifar/resnet.py``, depth 110): 18
    Bottleneck blocks per stage with projection shortcuts, without the attention branch; 1.7 M parameters."""
    kwargs = {"shortcut": "B", **model_kwargs("resnet110_abn_cifar", pretrained, kwargs)}
    if kwargs["shortcut"] not in shortcut_choices("resnet110_abn_cifar"):
        raise ValueError("resnet110_abn_cifar has projection shortcuts only (shortcut='B'), as ABN's code")
    return CifarResNet(DEPTHS[110], block=Bottleneck, **kwargs)


CIFAR_RESNETS = tuple(f"resnet{d}_cifar" for d in DEPTHS) + ("resnet110_abn_cifar",)


def shortcut_choices(name: str) -> tuple[str, ...]:
    """The shortcut options of CIFAR ResNet ``name``: ABN's code has projections only."""
    return ("B",) if name == "resnet110_abn_cifar" else SHORTCUTS
