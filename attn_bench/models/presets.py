"""``model.placement``: where each block goes. ``paper`` puts a block where its paper and official
code put it; ``uniform`` puts every block at the ``residual`` site of every block with its default
arguments (like-for-like ablations). Explicit ``model.attn_site`` / ``attn_stages`` /
``attn_position`` / ``attn_args`` override either.

Paper placements (blocks not listed go to the ``residual`` site of every block, as their papers do):

* ``bam``: one BAM on the trunk at the end of each stage after which the feature map is
  downsampled, "at each bottleneck of the network" (ResNet: after stages 1-3) (Park et al., BMVC 2018, Sec. 3 and Fig. 1;
  official code Jongchan/attention-module, MODELS/model_resnet.py: ``bam1..bam3`` after
  ``layer1..layer3``).
* ``simam``: right after the 3x3 conv of every bottleneck (official code ZjjConan/SimAM,
  networks/imagenet/resnet.py). Backbones without bottlenecks (ResNet-18/34, MobileNets) fall back
  to the ``residual`` site, logged once: neither paper nor code defines a site there.
* ``gc``: ResNet stages 2-4 ("c3-c5", GCNet's headline setting, Cao et al., Table 2 and Sec. 5.1).
  Other backbones: every stage, logged once (GCNet reports none).

* ``se`` on a backbone that ships its own SE (MobileNetV3): the stock layout, exactly (the blocks
  timm's model has SE in, each SE's width and hard-sigmoid gate read from timm's own module;
  Howard et al. 2019, Table 1/2: 8 of 15 blocks in MobileNetV3-Large).
* ``eca`` on ResNet-50/101/152: the 1D kernel sizes per stage of the released ECA-Nets (official
  README, BangguWu/ECANet: ``eca_resnet50_k3557``, ``eca_resnet101_k3357``,
  ``eca_resnet152_k3357``), the networks whose numbers the paper reports: its abstract's
  "80 vs. 24.37M" parameters for ResNet-50 is 3x3 + 4x5 + 6x5 + 3x7 = 80. The adaptive formula
  psi(C) would give 5, 5, 5, 7 (86 parameters). Other backbones: psi(C).
* ``gam``: reduction ratio r = 16 in both submodules, in every block. The paper's text gives the
  ratio as BAM's ("same as BAM"; BAM's r is 16). Not established: the paper's tables could not be
  read here, and the group count of the grouped convs with channel shuffle that its text says it
  uses for ResNet-50; the preset does not group (``model.attn_args.group=true`` does, with our
  ``groups=4``). With r = 16 and no groups ResNet-50 has 151.35 M parameters, 1/3.49 of the r = 4
  total, which is the reading of the paper's count that asked for this preset ("about 3.5x" below r = 4).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from torch import nn

from attn_bench.attention import BASELINE, block_sites
from attn_bench.errors import ConfigError
from attn_bench.models.placement import available_sites, find_slots, select_slots

PLACEMENTS = ("paper", "uniform")
# what placement=paper does per block, in words (`attn-bench blocks`); every other block: residual, all blocks
PAPER_WHERE = {
    "bam": "stage_end, after each stage followed by downsampling (ResNet: 1-3)",
    "simam": "mid (after a bottleneck's 3x3 conv); residual without bottlenecks",
    "gc": "residual, ResNet stages 2-4 (c3-c5)",
    "se": "residual, all blocks; MobileNetV3: its stock SE layout",
    "gam": "residual, all blocks, r=16 (as BAM, the paper's text); ResNet-50's group count not established",
    "eca": "residual, all blocks; ResNet-50/101/152: the released ECA-Nets' kernel sizes per stage",
    "sk": "conv (replaces each block's 3x3 conv; SKNet-50 = ResNeXt-50 + SK)",
    "nl": "trunk, after every other block of ResNet stages 2-3 (5 blocks in ResNet-50)",
    "psa": "mid (after a bottleneck's 3x3 conv); residual without bottlenecks",
    "stn": "input (before the stem, on the image)",
}

# the site each block's paper uses, where it is not the residual site
PAPER_SITE = {"bam": "stage_end", "simam": "mid", "psa": "mid", "sk": "conv", "nl": "trunk", "stn": "input"}
PAPER_POSITION = {"nl": "alternate"}
# arguments the paper gives a block, where they differ from the block's defaults
PAPER_ARGS = {"gam": {"rd_ratio": 1 / 16}}
# arguments that decide what a preset would set: given any of them, the run's own choice stands
PRESET_CONFLICTS = {"gam": {"rd_ratio", "rd_channels"}, "eca": {"kernel_size", "gamma", "beta"}}
# per-stage arguments of released networks (backbone -> stage -> arguments)
def _by_stage(key: str, values: tuple) -> dict[int, dict[str, Any]]:
    return {stage: {key: value} for stage, value in enumerate(values, start=1)}


PAPER_STAGE_ARGS = {
    "eca": {"resnet50": _by_stage("kernel_size", (3, 5, 5, 7)), "resnet101": _by_stage("kernel_size", (3, 3, 5, 7)),
            "resnet152": _by_stage("kernel_size", (3, 3, 5, 7))},
}

log = logging.getLogger("attn_bench")


@dataclass(frozen=True)
class Placement:
    """A resolved placement: what ``place_attention`` gets, and what runs record."""

    placement: str
    site: str = "residual"
    stages: Any = None  # 1-based stage numbers; None: every stage
    position: str = "every"
    args: dict[str, Any] = field(default_factory=dict)
    only: tuple[str, ...] | None = None  # the slot paths of a stock layout
    slot_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_args: dict[int, dict[str, Any]] = field(default_factory=dict)  # recorded; applied through slot_args

    def as_record(self, model: nn.Module) -> dict[str, Any]:
        slots = find_slots(model, self.site)
        all_stages = sorted({s.stage for s in slots})
        selected = select_slots(slots, self.stages, self.position)  # validates
        chosen = sorted({s.stage for s in selected if self.only is None or s.path in self.only})
        stages = "all" if chosen == all_stages and self.only is None else chosen
        record = {"placement": self.placement, "site": self.site, "stages": stages, "position": self.position,
                  "args": dict(self.args)}
        if self.only is not None:
            record["layout"] = f"stock SE blocks ({len(self.only)} of {len(slots)})"
        if self.stage_args:
            keys = sorted({k for args in self.stage_args.values() for k in args})
            record["stage_args"] = {k: {str(stage): args[k] for stage, args in sorted(self.stage_args.items())
                                        if k in args and stage in chosen} for k in keys}
        return record


def _downsamples(model: nn.Module, stage: int) -> bool:
    """The first block of 1-based ``stage`` has stride 2 (ResNet: conv2 or the shortcut; MobileNet: conv_dw)."""
    first = (getattr(model, f"layer{stage}") if hasattr(model, "layer1") else model.blocks[stage - 1])[0]
    convs = [m for m in first.modules() if isinstance(m, nn.Conv2d)]
    return any(max(c.stride) > 1 for c in convs)


def _stock_se(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The SE timm's backbone ships (MobileNetV3): slot path -> our SE's arguments for the same module."""
    layout = {}
    for slot in find_slots(model):
        se = model.get_submodule(slot.path).se
        if hasattr(se, "conv_reduce"):
            gate = "hard_sigmoid" if isinstance(se.gate, nn.Hardsigmoid) else "sigmoid"
            layout[slot.path] = {"rd_channels": se.conv_reduce.out_channels, "gate_layer": gate}
    return layout


def _uniform_site(attn: str) -> str:
    """``residual``, or the block's own site when it cannot work there (SK: conv, STN: input)."""
    sites = block_sites(attn)
    return "residual" if "residual" in sites else sites[0]


def _paper_site(attn: str, model: nn.Module, backbone: str) -> str:
    sites = available_sites(model)
    if attn in PAPER_SITE:
        site = PAPER_SITE[attn]
        if site in sites:
            return site
        fallback = _uniform_site(attn)
        if fallback not in sites:
            raise ConfigError(f"{attn}: its paper's site '{site}' does not exist in {backbone} "
                              f"(its sites: {', '.join(sites)})")
        log.info("%s: its paper's site (%s) does not exist in %s; using the %s site", attn, site, backbone, fallback)
        return fallback
    return _uniform_site(attn)


def _paper_stages(attn: str, model: nn.Module, backbone: str, site: str) -> list[int] | None:
    stages = sorted({s.stage for s in find_slots(model, site)})
    if attn == "bam":  # the stage ends after which the trunk is downsampled
        return [s for s in stages[:-1] if _downsamples(model, s + 1)]
    if attn in ("gc", "nl"):
        if hasattr(model, "layer1"):
            return [2, 3, 4] if attn == "gc" else [2, 3]
        log.info("%s: its paper places it in ResNet stages %s only; using every stage of %s",
                 attn, "2-4" if attn == "gc" else "2-3", backbone)
    return None


def _paper_args(attn: str, backbone: str, args: dict[str, Any]) -> dict[str, Any]:
    """The paper's arguments, unless the run sets them, or sets what decides the same thing itself."""
    if set(args) & PRESET_CONFLICTS.get(attn, set()):
        return {}
    paper = dict(PAPER_ARGS.get(attn, {}))
    if attn == "gam" and paper and backbone == "resnet50" and not args.get("group"):
        log.info("gam: r=16 as in the paper's text; its ResNet-50 uses grouped convs with channel shuffle whose "
                 "group count the paper does not give, so they are not applied (model.attn_args.group=true adds them)")
    return paper


def _paper_stage_args(attn: str, backbone: str, site: str, args: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per-stage arguments of the released network, unless the run sets what decides them itself."""
    stage_args = PAPER_STAGE_ARGS.get(attn, {}).get(backbone, {})
    return {} if site != "residual" or set(args) & PRESET_CONFLICTS.get(attn, set()) else stage_args


def resolve_placement(model: nn.Module, backbone: str, attn: str, placement: str, site: str | None,
                      stages: Iterable[int] | None, position: str | None,
                      args: dict[str, Any] | None) -> Placement:
    """The placement to build: the preset of ``placement`` for ``attn`` with explicit values on top."""
    if placement not in PLACEMENTS:
        raise ConfigError(f"unknown model.placement '{placement}'; valid choices: {', '.join(PLACEMENTS)}")
    if site is not None and site not in available_sites(model):
        raise ConfigError(f"model.attn_site '{site}' does not exist in {backbone}; its sites: "
                          f"{', '.join(available_sites(model))}")
    paper = placement == "paper" and attn != BASELINE
    stock = (_stock_se(model) if paper and attn == "se" and site is None and stages is None and position is None
             and not args else {})
    if stock:
        return Placement(placement, "residual", None, "every", {}, tuple(stock), stock)
    default_site = "residual" if attn == BASELINE else _uniform_site(attn)
    resolved_site = site or (_paper_site(attn, model, backbone) if paper else default_site)
    resolved_stages = stages if stages is not None else (
        _paper_stages(attn, model, backbone, resolved_site) if paper else None)
    resolved_position = position or (PAPER_POSITION.get(attn, "every") if paper else "every")
    resolved_args = {**(_paper_args(attn, backbone, dict(args or {})) if paper else {}), **(args or {})}
    stage_args = _paper_stage_args(attn, backbone, resolved_site, dict(args or {})) if paper else {}
    slot_args = {s.path: stage_args[s.stage] for s in find_slots(model, resolved_site) if s.stage in stage_args}
    return Placement(placement, resolved_site, resolved_stages, resolved_position, resolved_args,
                     slot_args=slot_args, stage_args=stage_args)
