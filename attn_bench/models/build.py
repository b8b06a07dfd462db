"""``build_placed``: the one place a backbone, its stem and its attention come together; it returns
the network and the record of where its block went (``Placed``). ``build_model`` is the network
alone (timm's ``create_model`` shape); ``model_from_config`` / ``check``: the same for a composed
``model`` config node."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from typing import Any, Iterable, NamedTuple

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from attn_bench.attention import BASELINE, block_defaults, is_baseline
from attn_bench.attention.registry import is_builtin
from attn_bench.attention.contract import check_contract
from attn_bench.config import check_group_keys
from attn_bench.errors import check as require
from attn_bench.models.backbones import CIFAR_NETS, check_stem, create_backbone, resolve_stem, use_small_stem
from attn_bench.models.placement import find_slots, place_attention, slot_map_sizes
from attn_bench.models.presets import Placement, resolve_placement

log = logging.getLogger("attn_bench")

PROBE_PX = 1024  # input size for measuring a backbone's output stride on the meta device


class Placed(NamedTuple):
    """A built network and the resolved placement of its block (``Placement.as_record``: what runs record)."""

    model: nn.Module
    placement: dict[str, Any]


def build_placed(
    backbone: str,
    attn: str = "none",
    num_classes: int = 1000,
    *,
    stem: str = "imagenet",
    attn_args: dict[str, Any] | None = None,
    attn_stages: Iterable[int] | None = None,
    attn_position: str | None = None,
    attn_site: str | None = None,
    placement: str = "uniform",
    timm_kwargs: dict[str, Any] | None = None,
    img_size: int | None = None,
) -> Placed:
    """Build exactly the model the CLI trains (the CLI passes ``placement="paper"``, its default), and
    say where its block went.

    Args:
        backbone: a timm model name from ``SUPPORTED_BACKBONES`` (randomly initialised).
        attn: attention block name (``none`` is the plain backbone with every SE slot cleared).
        num_classes: classifier width.
        stem: ``imagenet`` (timm's stem) or ``small`` (3x3 stride-1 conv, no max-pool, for 32 px).
        attn_args: keyword arguments for the attention block, e.g. ``{"rd_ratio": 0.125}``.
        attn_stages: 1-based stage numbers that get attention; ``None``: the placement's choice.
        attn_position: ``every`` block of a chosen stage, only the ``last`` block of each, or
            ``alternate`` blocks (the 2nd, 4th, ...); ``None``: the placement's choice.
        attn_site: ``residual``, ``mid`` or ``stage_end`` (models.placement); ``None``: the placement's.
        placement: ``paper`` (each block where its paper put it, models.presets) or ``uniform``
            (the residual site of every block).
        timm_kwargs: passed to ``timm.create_model``, e.g. ``{"channels": [16, 32, 64, 128]}``.
        img_size: the input size the network is built for; a block whose constructor takes ``feat_size``
            (GE's global depthwise gather) gets the map size at its slot from it.

    Returns ``Placed(model, placement)``: the placement is the resolved record runs keep.
    """
    check_stem(backbone, stem)
    model = create_backbone(backbone, num_classes, **(timm_kwargs or {}))
    if stem == "small" and backbone not in CIFAR_NETS:  # a CIFAR network's stem is small already
        use_small_stem(model)
    where = resolve_placement(model, backbone, attn, placement, attn_site, attn_stages, attn_position, attn_args)
    record = where.as_record(model)  # before placing: the slots are read from the plain backbone
    slot_args = _with_map_sizes(model, attn, where, img_size, attn_args or {})
    place_attention(model, attn, where.args, where.stages, where.position, where.site, where.only, slot_args)
    return Placed(model, record)


def _with_map_sizes(model: nn.Module, attn: str, where: Placement, img_size: int | None,
                    attn_args: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``where.slot_args``, with ``feat_size`` (the map at each slot, for ``img_size``) for a block that takes it."""
    if is_baseline(attn) or img_size is None or "feat_size" not in block_defaults(attn):
        return where.slot_args
    require("feat_size" not in attn_args, f"model.attn_args.feat_size: {attn} gets the map size at each slot from "
                                          f"img_size ({img_size}); leave it out")
    sizes = slot_map_sizes(model, find_slots(model, where.site), int(img_size))
    return {path: {**where.slot_args.get(path, {}), "feat_size": list(size)} for path, size in sizes.items()}


def build_model(backbone: str, attn: str = "none", num_classes: int = 1000, **options: Any) -> nn.Module:
    """The network of :func:`build_placed` alone (the arguments are the same)."""
    return build_placed(backbone, attn, num_classes, **options).model


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def model_from_config(model_cfg: DictConfig, num_classes: int, img_size: int) -> Placed:
    """The model a ``model`` config node describes (``stem=auto`` picks by image size), and its placement."""
    m = model_cfg
    return build_placed(
        m.backbone, m.attn, int(num_classes), stem=resolve_stem(m.stem, int(img_size), str(m.backbone)),
        attn_args=_container(m.attn_args) or None,
        attn_stages=None if m.attn_stages is None else list(m.attn_stages),
        attn_position=m.attn_position, attn_site=m.attn_site, placement=m.placement,
        timm_kwargs=_timm_kwargs(m) or None, img_size=int(img_size),
    )


def _timm_kwargs(model_cfg: DictConfig) -> dict[str, Any]:
    """``model.timm_kwargs`` with ``model.drop_path_rate`` among them (given only when on: 0 builds the same net)."""
    kwargs = dict(_container(model_cfg.timm_kwargs) or {})
    rate = model_cfg.get("drop_path_rate") or 0.0
    if rate:
        kwargs["drop_path_rate"] = float(rate)
    return kwargs


def _check_pretrained(model_cfg: DictConfig) -> None:
    pretrained, path = model_cfg.get("pretrained", False), model_cfg.get("pretrained_file")
    require(isinstance(pretrained, bool), f"model.pretrained must be true or false, got {pretrained!r}")
    require(not (pretrained and path), "give one of model.pretrained and model.pretrained_file, not both")
    require(path is None or Path(str(path)).expanduser().is_file(),
            f"model.pretrained_file: '{path}' does not exist (a .pth or .safetensors state dict of {model_cfg.backbone})")


def _check_drop_path(model_cfg: DictConfig) -> None:
    rate = model_cfg.get("drop_path_rate", 0.0)
    require(isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 <= rate < 1,
            f"model.drop_path_rate must be a number in [0, 1), got {rate!r}")
    require(not (rate and "drop_path_rate" in (model_cfg.timm_kwargs or {})),
            "give one of model.drop_path_rate and model.timm_kwargs.drop_path_rate, not both")


def _without_block(model_cfg: DictConfig) -> DictConfig:
    """``model_cfg`` with the baseline in place of its block and none of the block's arguments (set, not
    merged: a merge with an empty ``attn_args`` would keep the block's own)."""
    probed = OmegaConf.create(_container(model_cfg))
    probed.attn, probed.attn_args = BASELINE, {}
    return probed


def check(model_cfg: DictConfig, num_classes: int, img_size: int) -> dict[str, Any] | None:
    """Everything about the model that can be wrong, found without memory or arithmetic; returns
    the record of where the block goes (``Placement.as_record``; None for a user's block, which is
    not built on the meta device).

    Builds the model on the meta device (shapes only), so bad names and arguments fail here, and
    checks that ``img_size`` covers the backbone's output stride (else the last feature map
    would be smaller than 1x1).
    """
    check_group_keys("model", model_cfg)
    require(isinstance(img_size, int) and not isinstance(img_size, bool) and img_size >= 1,
            f"img_size={img_size!r} must be a positive integer")
    _check_pretrained(model_cfg)
    _check_drop_path(model_cfg)
    # A user's block (file, module, plug-in) may not run, or even construct, on the meta device:
    # the backbone and placement are checked without it, the block on real tensors below.
    own_block = not is_builtin(str(model_cfg.attn))
    probed = _without_block(model_cfg) if own_block else model_cfg
    with torch.device("meta"):
        model, placement = model_from_config(probed, num_classes, img_size)  # names, arguments, stages
        stride = PROBE_PX // model.eval().forward_features(torch.empty(1, 3, PROBE_PX, PROBE_PX)).shape[-1]
    if own_block:  # its contract, on real tensors for this model's slot widths, before any training
        channels = tuple(sorted({b.channels for b in find_slots(model, placement["site"])}))
        check_contract(str(model_cfg.attn), _container(model_cfg.attn_args) or {}, channels)
    stem = resolve_stem(model_cfg.stem, img_size, str(model_cfg.backbone))
    require(img_size >= stride,
            f"img_size={img_size} is too small for {model_cfg.backbone} with the {stem} stem: it downsamples "
            f"{stride}x, so the last feature map would be smaller than 1x1; use img_size >= {stride}")
    return None if own_block else placement


def _network_of(record: dict[str, Any]) -> dict[str, Any]:
    """A placement record as it reads back from JSON, without the name of the preset that resolved it."""
    return {k: v for k, v in json.loads(json.dumps(record)).items() if k != "placement"}


def _same_network(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _network_of(a) == _network_of(b)


def model_as_recorded(model_cfg: DictConfig, num_classes: int, img_size: int,
                      recorded: dict[str, Any] | None) -> Placed:
    """The network a run trained: ``model_cfg`` as this attn-bench builds it, or, where a paper preset
    has changed since the run recorded its placement, the run's recorded site, stages, position and
    arguments built explicitly (with the recorded placement). Without a faithful rebuild (a stock
    layout, per-stage arguments) the current build is returned, whose placement then differs from
    the run's (callers refuse it)."""
    current = model_from_config(model_cfg, num_classes, img_size)
    if recorded is None or _same_network(current.placement, recorded) or recorded.get("stage_args") \
            or recorded.get("layout"):
        return current
    explicit = OmegaConf.create(_container(model_cfg))  # set, not merged: the recorded args replace the config's
    explicit.placement, explicit.attn_site, explicit.attn_position = "uniform", recorded["site"], recorded["position"]
    explicit.attn_stages = None if recorded["stages"] == "all" else recorded["stages"]
    explicit.attn_args = recorded["args"]
    rebuilt = model_from_config(explicit, num_classes, img_size)
    if not _same_network(rebuilt.placement, recorded):
        return current
    log.info("%s: built as the run recorded it (%s), not as this attn-bench's %s preset builds it now",
             model_cfg.attn, recorded, recorded.get("placement"))
    return Placed(rebuilt.model, dict(recorded))
