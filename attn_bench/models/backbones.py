"""The timm backbones attn-bench knows how to plug attention into, and the small-image stem.

timm's ResNets and MobileNets, and the CIFAR networks of the papers (registered with timm when this
module is imported): He et al.'s CIFAR ResNets (``models/cifar_resnets.py``), the pre-activation
ResNet-164 and the Wide ResNets (``models/preact_resnets.py``), whose 3x3 stem is their own.
"""
from __future__ import annotations

import timm
from torch import nn

from attn_bench.errors import ConfigError
from attn_bench.models.cifar_resnets import CIFAR_RESNETS, shortcut_choices
from attn_bench.models.preact_resnets import PREACT_NETS

# resnet50d: the deep-stem, average-pool-shortcut ResNet-50 that ResNeSt-50 is built on (ImageNet stem only)
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet50d", "resnet101", "resnet152", "resnext50_32x4d")
MOBILENETS = (
    "mobilenetv2_050",
    "mobilenetv2_100",
    "mobilenetv2_140",
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
)
CIFAR_NETS = CIFAR_RESNETS + PREACT_NETS  # their own small stem
SUPPORTED_BACKBONES = RESNETS + MOBILENETS + CIFAR_NETS
STEMS = ("imagenet", "small")
SMALL_IMAGE_MAX = 64  # stem=auto picks the small stem for images up to this size


def resolve_stem(stem: str, img_size: int, backbone: str = "") -> str:
    """``auto`` -> ``small`` for images of at most 64 px (CIFAR, Tiny-ImageNet), else ``imagenet``; a
    CIFAR network's stem is always its own small one."""
    if stem != "auto":
        return stem
    return "small" if img_size <= SMALL_IMAGE_MAX or backbone in CIFAR_NETS else "imagenet"


def check_stem(backbone: str, stem: str) -> None:
    if stem not in STEMS:
        raise ConfigError(f"unknown stem '{stem}'; valid choices: {', '.join(STEMS)}")
    if backbone in CIFAR_NETS and stem != "small":
        raise ConfigError(f"model.stem={stem}: {backbone} is a CIFAR network whose stem is its own 3x3 conv without "
                          f"pooling; use model.stem=auto or small (an ImageNet stem: a timm ResNet, e.g. model=resnet18)")


def _check_used(name: str, timm_kwargs: dict) -> None:
    """timm passes some keyword arguments through without effect; a key that changes nothing is an error."""
    if name in RESNETS and "stem_width" in timm_kwargs and "deep" not in str(timm_kwargs.get("stem_type", "")):
        raise ConfigError(f"model.timm_kwargs.stem_width does nothing in timm's {name} unless stem_type is 'deep' or "
                          f"'deep_tiered' (the default stem is one conv with 64 channels); drop it or set "
                          f"model.timm_kwargs.stem_type=deep")


def create_backbone(name: str, num_classes: int, **timm_kwargs) -> nn.Module:
    if name not in SUPPORTED_BACKBONES:
        raise ConfigError(f"unknown backbone '{name}'; valid choices: {', '.join(SUPPORTED_BACKBONES)}")
    _check_used(name, timm_kwargs)
    shortcuts = shortcut_choices(name) if name in CIFAR_RESNETS else ()
    if shortcuts and timm_kwargs.get("shortcut", shortcuts[0]) not in shortcuts:
        raise ConfigError(f"model.timm_kwargs.shortcut={timm_kwargs['shortcut']!r}: valid choices for {name}: "
                          f"{', '.join(shortcuts)} (He et al.'s options: A zero-padding, B projections)")
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **timm_kwargs)
    except TypeError as err:  # timm passes unknown kwargs to the model class
        raise ConfigError(f"backbone '{name}' rejected model.timm_kwargs {timm_kwargs}: {err}") from None


def use_small_stem(model: nn.Module) -> None:
    """Adapt an ImageNet stem to 32-pixel inputs: 3x3 stride-1 first conv and no max-pool.

    This is the usual CIFAR adaptation of ResNet (He et al. 2016, Sec. 4.2 uses a 3x3 first conv
    with no pooling); for MobileNets only the stem stride drops to 1.
    """
    if hasattr(model, "conv1") and hasattr(model, "maxpool"):
        if not isinstance(model.conv1, nn.Conv2d):
            raise ConfigError("small stem needs a single-conv ResNet stem (model.timm_kwargs.stem_type must be '')")
        old = model.conv1
        model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    elif hasattr(model, "conv_stem"):
        model.conv_stem.stride = (1, 1)
    else:  # unreachable for SUPPORTED_BACKBONES
        raise ConfigError(f"no known stem on {type(model).__name__}")
