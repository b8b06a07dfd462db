"""Where attention goes in a backbone, without editing the backbone's code.

A *slot* is the ``se`` attribute timm gives every residual block, which its ``forward`` already
calls at the paper position of channel attention:

* ResNet BasicBlock / Bottleneck: after the last BN of the residual branch, before the addition
  (SENet Fig. 3, CBAM Fig. 3, GCNet Fig. 4, ...).
* MobileNet inverted residual and depthwise-separable blocks: after the depthwise conv, where
  MobileNetV3 puts its SE.

Stages are numbered from 1 in forward order: ``layer1``..``layer4`` for ResNets (GCNet's
"c3-c5" are stages 2-4), ``blocks[0]``..``blocks[-1]`` for MobileNets.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any, Iterable, Sequence

from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from attn_bench.attention import BASELINE, create_block
from attn_bench.errors import ConfigError

POSITIONS = ("every", "last")
_PLACED_ATTR = "attn_bench_slots"


@dataclass(frozen=True)
class Slot:
    path: str  # module path of the block whose ``se`` slot this is, e.g. "layer3.5"
    stage: int
    index: int  # index of the block within its stage
    is_last: bool
    channels: int


def _slot_channels(block: nn.Module) -> int | None:
    if isinstance(block, BasicBlock):
        return block.bn2.num_features
    if isinstance(block, Bottleneck):
        return block.bn3.num_features
    if isinstance(block, InvertedResidual):
        return block.bn2.num_features
    if isinstance(block, DepthwiseSeparableConv):
        return block.bn1.num_features
    return None


def _stages(model: nn.Module) -> list[tuple[str, nn.Sequential]]:
    if hasattr(model, "layer1"):
        return [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    if hasattr(model, "blocks"):
        return [(f"blocks.{i}", stage) for i, stage in enumerate(model.blocks)]
    raise ConfigError(f"don't know the stages of {type(model).__name__}")


def find_slots(model: nn.Module) -> list[Slot]:
    """Every attention slot of ``model`` in forward order."""
    slots = []
    for stage_no, (prefix, stage) in enumerate(_stages(model), start=1):
        blocks = list(stage)
        for index, block in enumerate(blocks):
            channels = _slot_channels(block)
            if channels is not None:
                slots.append(Slot(f"{prefix}.{index}", stage_no, index, index == len(blocks) - 1, channels))
    return slots


def _stage_numbers(stages: Any) -> list[int]:
    """The 1-based stage numbers of ``model.attn_stages``: a non-empty list of integers."""
    values = list(stages) if isinstance(stages, Iterable) and not isinstance(stages, str) else None
    integers = values is not None and all(isinstance(v, Integral) and not isinstance(v, bool) for v in values)
    if not (values and integers):
        raise ConfigError(
            f"model.attn_stages={stages!r} must be a non-empty list of 1-based stage numbers "
            f"(e.g. [2, 3, 4]), or null for all stages"
        )
    return sorted({int(v) for v in values})


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
    return [s for s in slots if s.stage in wanted and (position == "every" or s.is_last)]


def place_attention(
    model: nn.Module,
    attn: str,
    attn_args: dict[str, Any] | None = None,
    stages: Iterable[int] | None = None,
    position: str = "every",
) -> list[Slot]:
    """Put block ``attn`` into the selected slots and clear every other slot.

    Clearing matters for MobileNetV3, whose own SE would otherwise stay in the baseline
    and in every comparison. Returns the slots that received a block.
    """
    slots = find_slots(model)
    selected = select_slots(slots, stages, position)  # validated for 'none' too
    chosen = [] if attn == BASELINE else selected
    if attn == BASELINE:
        create_block(BASELINE, 1, **(attn_args or {}))  # rejects arguments given to 'none'
    chosen_paths = {s.path for s in chosen}
    for slot in slots:
        block = model.get_submodule(slot.path)
        if slot.path in chosen_paths:
            block.se = create_block(attn, slot.channels, **(attn_args or {}))
        else:
            block.se = nn.Identity()
    setattr(model, _PLACED_ATTR, tuple(chosen))
    return chosen


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention blocks :func:`place_attention` put into ``model``."""
    return [model.get_submodule(slot.path).se for slot in getattr(model, _PLACED_ATTR, ())]
