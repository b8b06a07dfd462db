"""Where attention goes in a backbone, without editing the backbone's code.

Placement is data: a *site* says where in the network a block goes, stages and every/last say
which of the site's slots get one (mmcv's plugin ``position`` / ``stages``). Sites:

* ``residual``: the ``se`` attribute timm gives every residual block, which its ``forward`` already
  calls at the paper position of channel attention (below);
* ``mid``: right after a block's (last) 3x3 conv, before its BN: a bottleneck's ``conv2`` (the middle
  width), a BasicBlock's ``conv2``, a MobileNet block's depthwise ``conv_dw``, where SimAM's official
  code puts SimAM (ZjjConan/SimAM: networks/imagenet/resnet.py, networks/cifar/block.py,
  networks/imagenet/mobilenetv2.py);
* ``stage_end``: on the trunk, after the last block of a stage, where BAM's paper and official
  code (Jongchan/attention-module, MODELS/model_resnet.py) put BAM;
* ``trunk``: on the trunk right after a ResNet block (after its addition and ReLU), where the
  non-local paper inserts its blocks ("every other residual block" of res3/res4);
* ``conv``: *replaces* the 3x3 conv of a ResNet block (Bottleneck: ``conv2``, with its BN and ReLU;
  BasicBlock: the first 3x3 ``conv1``, timm's rule for SK-ResNet-18/34), as SKNet's SK unit does.
  The block gets the conv's geometry as ``out_channels``, ``stride`` and ``dilation``;
* ``input``: before the stem, on the image itself (a spatial transformer);
* ``convs``: before every convolution of the network, each with its own block: the stem's (on the
  image), every conv of every block and the shortcut's projection (GCT's "before each convolutional
  layer"); a conv outside the stages (the stem, MobileNet's head conv) is in stage 0. A block's own
  modules (MobileNetV3's stock SE) are not convolutions of the network.

A block says where it can work with a class attribute ``attn_sites`` (first = its own site, where
``placement=uniform`` puts it when it cannot go to ``residual``); without one, the feature-map
sites ``residual``, ``mid``, ``stage_end`` and ``trunk``. Only a block that declares ``conv``,
``input`` or ``convs`` goes there.

The residual site:

* ResNet BasicBlock / Bottleneck: after the last BN of the residual branch, before the addition
  (SENet Fig. 3, CBAM Fig. 3, GCNet Fig. 4, ...).
* MobileNet inverted residual and depthwise-separable blocks: after the depthwise conv, where
  MobileNetV3 puts its SE.

Stages are numbered from 1 in forward order: ``layer1``..``layer4`` for ResNets (GCNet's
"c3-c5" are stages 2-4), ``layer1``..``layer3`` for CIFAR ResNets, ``blocks[0]``..``blocks[-1]`` for
MobileNets; the ``input`` site is stage 0.
Positions within a stage: ``every`` block, the ``last`` block, or ``alternate`` blocks (the 2nd,
4th, ... block of the stage: the non-local paper's "every other residual block").
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from numbers import Integral
from typing import Any, Iterable, Sequence

import torch
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from attn_bench.attention import block_sites, create_block, is_baseline
from attn_bench.errors import ConfigError
from attn_bench.models.preact_resnets import PreActBasicBlock, PreActBottleneck

POSITIONS = ("every", "last", "alternate")
_PLACED_ATTR = "attn_bench_slots"


SITES = ("residual", "mid", "stage_end", "trunk", "conv", "input", "convs")


@dataclass(frozen=True)
class Slot:
    path: str  # module path of the block (residual, mid, trunk, conv) or stage (stage_end), e.g. "layer3.5"
    stage: int
    index: int  # index of the block within its stage (stage_end: the stage's last block)
    is_last: bool
    channels: int
    site: str = "residual"
    host: str = ""  # the attribute of the timm module that receives the block (trunk, conv, input)
    geometry: tuple[tuple[str, int], ...] = ()  # conv site: the replaced conv's out_channels, stride, dilation

    @property
    def module_path(self) -> str:
        """Where the attention module itself sits."""
        prefix = f"{self.path}." if self.path else ""
        return {"residual": f"{prefix}se", "mid": f"{prefix}{self.host}.attn", "stage_end": f"{prefix}attn",
                "trunk": f"{prefix}{self.host}.attn", "conv": f"{prefix}{self.host}",
                "input": f"{prefix}{self.host}.attn", "convs": f"{prefix}{self.host}.attn"}[self.site]


# The sites inside every block: for each timm block type, the attribute the site is at (a backbone has
# the site when every block of it has the attribute). residual: the attention is the attribute; mid and
# trunk: it follows the attribute's module (the 3x3 conv, before its BN; the ReLU after the addition);
# conv: it replaces the attribute's 3x3 conv (a BasicBlock's first). Pre-activation units (models/
# preact_resnets.py) have no ReLU after the addition (trunk: their identity ``merge``) and no conv site.
BLOCK_HOSTS: dict[str, dict[type, str]] = {
    "residual": {BasicBlock: "se", Bottleneck: "se", InvertedResidual: "se", DepthwiseSeparableConv: "se",
                 PreActBasicBlock: "se", PreActBottleneck: "se"},
    "mid": {Bottleneck: "conv2", BasicBlock: "conv2", InvertedResidual: "conv_dw", DepthwiseSeparableConv: "conv_dw",
            PreActBasicBlock: "conv2", PreActBottleneck: "conv2"},
    "trunk": {Bottleneck: "act3", BasicBlock: "act2", PreActBasicBlock: "merge", PreActBottleneck: "merge"},
    "conv": {Bottleneck: "conv2", BasicBlock: "conv1"},
}
BOTTLENECKS = (Bottleneck, PreActBottleneck)  # the blocks whose middle conv is a bottleneck's (PSA's site)


def _slot_channels(block: nn.Module) -> int | None:
    if isinstance(block, BasicBlock):
        return block.bn2.num_features
    if isinstance(block, Bottleneck):
        return block.bn3.num_features
    if isinstance(block, InvertedResidual):
        return block.bn2.num_features
    if isinstance(block, DepthwiseSeparableConv):
        return block.bn1.num_features
    if isinstance(block, PreActBasicBlock):
        return block.conv2.out_channels
    if isinstance(block, PreActBottleneck):
        return block.conv3.out_channels
    return None


def _out_channels(block: nn.Module) -> int:
    """A block's output width (what the trunk carries after it)."""
    if isinstance(block, (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)):
        return _slot_channels(block)
    return block.bn3.num_features if isinstance(block, InvertedResidual) else block.bn2.num_features


def stage_paths(model: nn.Module) -> list[str]:
    """The module paths of the stages, in forward order: ``layer1``.. (ResNets: four; CIFAR ResNets:
    three), ``blocks.0``.. (MobileNets)."""
    if hasattr(model, "layer1"):
        count = 1
        while hasattr(model, f"layer{count + 1}"):
            count += 1
        return [f"layer{i}" for i in range(1, count + 1)]
    if hasattr(model, "blocks"):
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    raise ConfigError(f"don't know the stages of {type(model).__name__}")


def _stages(model: nn.Module) -> list[tuple[str, nn.Sequential]]:
    return [(path, model.get_submodule(path)) for path in stage_paths(model)]


def _residual_slots(model: nn.Module) -> list[Slot]:
    slots = []
    for stage_no, (prefix, stage) in enumerate(_stages(model), start=1):
        blocks = [(i, b) for i, b in enumerate(stage) if _slot_channels(b) is not None]
        for n, (index, block) in enumerate(blocks):
            slots.append(Slot(f"{prefix}.{index}", stage_no, index, n == len(blocks) - 1, _slot_channels(block)))
    return slots


def _stem_attr(model: nn.Module) -> str:
    return "conv1" if hasattr(model, "conv1") else "conv_stem"


def _has_site(blocks: list[nn.Module], site: str) -> bool:
    """The model-level sites (stage_end, input) are in every backbone; a block site where every block has it."""
    return site not in BLOCK_HOSTS or all(type(b) in BLOCK_HOSTS[site] for b in blocks)


def available_sites(model: nn.Module) -> list[str]:
    blocks = [model.get_submodule(s.path) for s in _residual_slots(model)]
    return [site for site in SITES if _has_site(blocks, site)]


def _block_slot(model: nn.Module, slot: Slot, site: str) -> Slot:
    block = model.get_submodule(slot.path)
    host = BLOCK_HOSTS[site][type(block)]
    if site == "residual":
        return slot
    if site == "trunk":
        return replace(slot, site=site, host=host, channels=_out_channels(block))
    conv = getattr(block, host)
    if site == "mid":
        return replace(slot, site=site, host=host, channels=conv.out_channels)
    geometry = (("out_channels", conv.out_channels), ("stride", conv.stride[0]), ("dilation", conv.dilation[0]))
    return replace(slot, site=site, host=host, channels=conv.in_channels, geometry=geometry)


def _conv_input_slots(model: nn.Module, blocks: list[Slot]) -> list[Slot]:
    """The ``convs`` site: a slot before each Conv2d of the network, in the stage and position of its block
    (stage 0 outside the blocks), none inside a block's ``se`` (MobileNetV3's SE belongs to the slot)."""
    slots = []
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d) or ".se." in f".{name}.":
            continue
        parent, _, attr = name.rpartition(".")
        block = next((b for b in blocks if name.startswith(f"{b.path}.")), None)
        stage, index, last = (block.stage, block.index, block.is_last) if block else (0, 0, True)
        slots.append(Slot(parent, stage, index, last, conv.in_channels, "convs", attr))
    return slots


def find_slots(model: nn.Module, site: str = "residual") -> list[Slot]:
    """Every slot of ``site`` in ``model``, in forward order."""
    if site not in SITES:
        raise ConfigError(f"unknown attention site '{site}'; valid choices: {', '.join(SITES)}")
    slots = _residual_slots(model)
    if site == "input":
        stem = getattr(model, _stem_attr(model))
        return [Slot("", 0, 0, True, stem.in_channels, "input", _stem_attr(model))]
    if site == "convs":
        return _conv_input_slots(model, slots)
    if site == "stage_end":
        return [replace(s, path=s.path.rpartition(".")[0], site="stage_end",
                        channels=_out_channels(model.get_submodule(s.path))) for s in slots if s.is_last]
    blocks = [model.get_submodule(s.path) for s in slots]
    if not _has_site(blocks, site):
        kinds = ", ".join(sorted({type(b).__name__ for b in blocks if type(b) not in BLOCK_HOSTS[site]}))
        raise ConfigError(f"site '{site}' does not exist in this backbone ({kinds} blocks have none); its sites: "
                          f"{', '.join(available_sites(model))}")
    return [_block_slot(model, s, site) for s in slots]


def slot_map_sizes(model: nn.Module, slots: Sequence[Slot], img_size: int) -> dict[str, tuple[int, int]]:
    """(height, width) of the map each slot's block sees on an ``img_size`` image: one forward of the model
    (before placing, batch 1, eval mode, on the model's device: free on the meta device)."""
    sizes: dict[str, tuple[int, int]] = {}

    def keep(path: str, tensor: torch.Tensor) -> None:  # a hook returning a value would replace the tensor
        sizes.setdefault(path, tuple(tensor.shape[-2:]))

    handles = []
    for slot in slots:
        if slot.site in ("conv", "input", "convs"):  # the block takes the host module's input
            host = model.get_submodule(f"{slot.path}.{slot.host}" if slot.path else slot.host)
            handles.append(host.register_forward_pre_hook(lambda m, args, path=slot.path: keep(path, args[0])))
            continue
        where = slot.path if slot.site in ("residual", "stage_end") else f"{slot.path}.{slot.host}"
        handles.append(model.get_submodule(where).register_forward_hook(
            lambda m, args, out, path=slot.path: keep(path, out)))
    weight = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).weight  # the stem's: input channels
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, weight.shape[1], img_size, img_size, device=weight.device, dtype=weight.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return sizes


def _stage_numbers(stages: Any) -> list[int]:
    """The 1-based stage numbers of ``model.attn_stages``: a non-empty list of integers."""
    values = list(stages) if isinstance(stages, Iterable) and not isinstance(stages, str) else None
    integers = values is not None and all(isinstance(v, Integral) and not isinstance(v, bool) for v in values)
    if not (values and integers):
        raise ConfigError(
            f"model.attn_stages={stages!r} must be a non-empty list of 1-based stage numbers "
            f"(e.g. [2, 3, 4]), or null for all stages"
        )
    repeated = sorted({int(v) for v in values if values.count(v) > 1})
    if repeated:  # [2, 2] is a typo for [2, 3] as often as for [2]: never collapsed without a word
        raise ConfigError(f"model.attn_stages={list(values)!r} names stage(s) {repeated} more than once; "
                          f"give each stage once, e.g. {sorted({int(v) for v in values})}")
    return sorted(int(v) for v in values)


def select_slots(slots: Sequence[Slot], stages: Iterable[int] | None, position: str) -> list[Slot]:
    if position not in POSITIONS:
        raise ConfigError(f"unknown attention position '{position}'; valid choices: {', '.join(POSITIONS)}")
    available = sorted({s.stage for s in slots})
    wanted = available if stages is None else _stage_numbers(stages)
    missing = [s for s in wanted if s not in available]
    if missing:
        raise ConfigError(
            f"model.attn_stages {wanted}: stage(s) {missing} have no attention slot; "
            f"this backbone has stages {available} (slots: {', '.join(s.path for s in slots)})"
        )
    picked = {"every": lambda s: True, "last": lambda s: s.is_last, "alternate": lambda s: s.index % 2 == 1}[position]
    return [s for s in slots if s.stage in wanted and picked(s)]


def _insert(model: nn.Module, slot: Slot, module: nn.Module) -> None:
    host = model.get_submodule(slot.path)
    if slot.site == "residual":
        host.se = module
    elif slot.site == "conv":  # the module is the conv unit: it brings its own normalisation and activation
        number = slot.host[-1]
        setattr(host, slot.host, module)
        setattr(host, f"bn{number}", nn.Identity())
        setattr(host, f"act{number}", nn.Identity())
    elif slot.site in ("mid", "trunk"):  # after the host's module: the conv's output, or the trunk after its ReLU
        name = "act" if slot.site == "trunk" else "conv"
        setattr(host, slot.host, nn.Sequential(OrderedDict([(name, getattr(host, slot.host)), ("attn", module)])))
    elif slot.site in ("input", "convs"):  # before the conv: the stem's on the image (input), or each one
        setattr(host, slot.host, nn.Sequential(OrderedDict(attn=module, conv=getattr(host, slot.host))))
    else:  # stage_end: a child of the stage's Sequential runs after its blocks
        host.add_module("attn", module)


def check_site(attn: str, site: str) -> None:
    """A block goes only to the sites it can work at (``attn_sites``)."""
    if site not in block_sites(attn):
        raise ConfigError(f"attention '{attn}' cannot work at site '{site}'; its sites: {', '.join(block_sites(attn))}")


def place_attention(
    model: nn.Module,
    attn: str,
    attn_args: dict[str, Any] | None = None,
    stages: Iterable[int] | None = None,
    position: str = "every",
    site: str = "residual",
    only: Iterable[str] | None = None,
    slot_args: dict[str, dict[str, Any]] | None = None,
) -> list[Slot]:
    """Put block ``attn`` into the selected slots of ``site`` and clear every residual slot that
    did not get one. ``only`` narrows the selection to these slot paths (a stock layout);
    ``slot_args`` gives per-slot arguments, under ``attn_args``.

    Clearing matters for MobileNetV3, whose own SE would otherwise stay in the baseline
    and in every comparison. Returns the slots that received a block.
    """
    check_site(attn, site)
    residual = find_slots(model)
    slots = find_slots(model, site)
    fixed = sorted(set(attn_args or {}) & {k for k, _ in (slots[0].geometry if slots else ())})
    if fixed:
        raise ConfigError(f"model.attn_args {', '.join(fixed)}: set by the '{site}' site from the conv it replaces")
    selected = select_slots(slots, stages, position)  # validated for 'none' too
    allowed = None if only is None else set(only)
    chosen = [s for s in selected if allowed is None or s.path in allowed]
    if is_baseline(attn):  # the backbone itself, module for module: nothing inserted anywhere
        create_block(attn, slots[0].channels if slots else 1, **(attn_args or {}))  # its arguments checked as any
        chosen = []
    for slot in residual:
        model.get_submodule(slot.path).se = nn.Identity()
    for slot in chosen:
        args = {**(slot_args or {}).get(slot.path, {}), **(attn_args or {}), **dict(slot.geometry)}
        _insert(model, slot, create_block(attn, slot.channels, **args))
    setattr(model, _PLACED_ATTR, tuple(chosen))
    return chosen


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention blocks :func:`place_attention` put into ``model``."""
    return [module for _, module in placed_attention(model)]


def placed_attention(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, module) of every attention block :func:`place_attention` put into ``model``."""
    return [(slot.module_path, model.get_submodule(slot.module_path)) for slot in getattr(model, _PLACED_ATTR, ())]
