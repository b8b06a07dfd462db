"""``model.placement``: where each block goes. ``paper`` puts a block where its paper and official
code put it (its :class:`Preset` in ``PRESETS``, below); ``uniform`` puts every block at the ``residual``
site of every block with its default arguments (like-for-like ablations). Explicit ``model.attn_site`` /
``attn_stages`` / ``attn_position`` / ``attn_args`` override either.

A block without an entry goes, under ``paper``, to the ``residual`` site of every block (as the papers
of SE, CBAM, CA, triplet attention and a user's block without ``attn_sites`` do), or to its own site
where it has no residual one.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from torch import nn

from attn_bench.attention import BASELINE, block_defaults, block_sites
from attn_bench.errors import ConfigError
from attn_bench.models.placement import BOTTLENECKS, available_sites, find_slots, select_slots

PLACEMENTS = ("paper", "uniform")
DOWNSAMPLING = "downsampling"  # Preset.stages: the stage ends after which the trunk is downsampled (BAM)


@dataclass(frozen=True)
class Note:
    """A line logged when a preset leaves out something its paper has (on ``backbones``, unless the run
    sets ``unless`` itself)."""

    backbones: tuple[str, ...]
    unless: str
    text: str


@dataclass(frozen=True)
class Preset:
    """``placement=paper`` for one block: its paper's site, stages, position and arguments."""

    where: str  # in words, as `attn-bench blocks` prints it
    source: str  # the paper and the official code that say so
    site: str | None = None  # None: residual (or the block's own site); without this site: the same, logged
    stages: tuple[int, ...] | str | None = None  # ResNet stages (other backbones: every stage, logged); DOWNSAMPLING
    position: str = "every"
    args: dict[str, Any] = field(default_factory=dict)
    stage_args: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # backbone -> stage -> arguments
    decided_by: frozenset[str] = frozenset()  # the run's own arguments that decide what args / stage_args would
    stock_se: bool = False  # on a backbone that ships its own SE (MobileNetV3): that layout, exactly
    bottlenecks_only: bool = False  # the paper defines its site for bottleneck blocks only: elsewhere residual, logged
    networks: tuple[str, ...] = ()  # where set: the backbones on which the preset is the paper's network; elsewhere
    # the record and the row label say "not a published network", and a line says which backbone is
    fit_width: Callable[[int], dict[str, Any]] | None = None  # a stage's arguments from its width, where the
    # paper's cannot be built at every width (SGE's 64 groups in a 16-channel stage); applied and logged when they differ
    wider_than: dict[str, int] = field(default_factory=dict)  # timm block class -> the width its slot must exceed
    # (EMA's official MobileNetV2: InvertedResidual > 144); blocks of other classes are not restricted
    note: Note | None = None


def _by_stage(key: str, values: tuple) -> dict[int, dict[str, Any]]:
    return {stage: {key: value} for stage, value in enumerate(values, start=1)}


def _most_groups(paper: int, parts: int = 1, key: str = "groups") -> Callable[[int], dict[str, Any]]:
    """``Preset.fit_width`` for a block with ``key`` groups of ``parts`` equal parts each: the paper's count, or
    the most groups below it that fit the width (SGE's 64 -> 16 in a 16-channel stage; SA's halves -> 8)."""
    def fit(width: int) -> dict[str, Any]:
        return {key: max([d for d in range(1, paper + 1) if width % (parts * d) == 0] or [1])}
    return fit


PRESETS: dict[str, Preset] = {
    BASELINE: Preset("no block anywhere (the backbone as timm builds it, its own SE slots cleared)", "the baseline"),
    "bam": Preset(
        "stage_end, after each stage followed by downsampling (ResNet: 1-3)",
        "Park et al., BMVC 2018, Sec. 3 and Fig. 1 (\"at each bottleneck of the network\"); Jongchan/attention-module "
        "MODELS/model_resnet.py: bam1..bam3 after layer1..layer3", site="stage_end", stages=DOWNSAMPLING),
    "simam": Preset(
        "mid (right after the 3x3 conv, before its BN; MobileNets: after the depthwise conv)",
        "ZjjConan/SimAM networks/imagenet/resnet.py and networks/cifar/block.py (conv2 of Bottleneck and "
        "BasicBlock), networks/imagenet/mobilenetv2.py (the depthwise conv)", site="mid"),
    "gc": Preset(
        "residual, ResNet stages 2-4 (c3-c5)",
        "Cao et al., GCNet, Table 2 and Sec. 5.1: the headline setting c3-c5 (stages 2-4); none for other backbones",
        stages=(2, 3, 4)),
    "se": Preset(
        "residual, all blocks; MobileNetV3: its stock SE layout",
        "Hu et al., SENet Fig. 3; MobileNetV3 (Howard et al. 2019, Table 1/2): SE in 8 of 15 blocks, its width and "
        "hard-sigmoid gate read from timm's own module", stock_se=True),
    "gam": Preset(
        "residual, all blocks, r=16 (as BAM, the paper's text); ResNet-50's group count not established",
        "Liu et al. 2021, GAM: r \"same as BAM\" (16). Not established: its tables, and the group count of the "
        "grouped convs with channel shuffle its text gives for ResNet-50 (not applied; model.attn_args.group=true "
        "adds ours, groups=4). r=16 ungrouped on ResNet-50: 151.35 M parameters, 1/3.49 of r=4",
        args={"rd_ratio": 1 / 16}, decided_by=frozenset({"rd_ratio", "rd_channels"}),
        note=Note(("resnet50",), "group", "gam: r=16 as in the paper's text; its ResNet-50 uses grouped convs with "
                  "channel shuffle whose group count the paper does not give, so they are not applied "
                  "(model.attn_args.group=true adds them)")),
    "eca": Preset(
        "residual, all blocks; ResNet-50/101/152: the released ECA-Nets' kernel sizes per stage",
        "BangguWu/ECANet README: eca_resnet50_k3557, eca_resnet101_k3357, eca_resnet152_k3357, the networks the "
        "paper reports (ResNet-50: 3x3 + 4x5 + 6x5 + 3x7 = 80 parameters, its abstract's figure); elsewhere psi(C)",
        stage_args={"resnet50": _by_stage("kernel_size", (3, 5, 5, 7)),
                    "resnet101": _by_stage("kernel_size", (3, 3, 5, 7)),
                    "resnet152": _by_stage("kernel_size", (3, 3, 5, 7))},
        decided_by=frozenset({"kernel_size", "gamma", "beta"})),
    "sk": Preset(
        "conv (replaces each block's 3x3 conv; SKNet-50 = ResNeXt-50 + SK; other backbones: not a published network)",
        "Li et al., SKNet, Table 1: the SK unit replaces the 3x3 conv of every block of ResNeXt-50 (32x4d); a "
        "stage whose convs 32 groups do not divide (16 channels) gets the most that do, logged",
        site="conv", networks=("resnext50_32x4d",), fit_width=_most_groups(32), decided_by=frozenset({"groups"})),
    "splat": Preset(
        "conv (replaces each block's 3x3 conv; ResNeSt-50 = resnet50d + split attention; other backbones: not a "
        "published network)",
        "Zhang et al., ResNeSt: radix 2, cardinality 1, avd; zhanghang1989/ResNeSt resnet.py Bottleneck, as timm's "
        "resnest50d (27.48M): the deep-stem, avg-down ResNet-50 (timm resnet50d) with a split-attention conv2",
        site="conv", networks=("resnet50d",)),
    "cot": Preset(
        "conv (replaces each block's 3x3 conv; CoTNet-50 = resnet50 + CoT units; other backbones: not a published "
        "network)",
        "Li et al., CoTNet; JDAI-CV/CoTNet models/cotnet.py: cotnet50 = timm's ResNet-50 whose Bottleneck conv2 is "
        "a CotLayer(width, 3), after a 3x3 average pool in strided blocks", site="conv", networks=("resnet50",)),
    "nl": Preset(
        "trunk, after every other block of ResNet stages 2-3 (5 blocks in ResNet-50)",
        "Wang et al., Non-local Neural Networks, Sec. 4: 5 blocks, every other residual block of res3/res4",
        site="trunk", stages=(2, 3), position="alternate"),
    "cc": Preset(
        "trunk, after the last block of ResNet stage 4 (where CCNet's head takes the features), recurrence 2",
        "Huang et al., CCNet: the RCCA module on the last stage's output in its segmentation head "
        "(speedinghzl/CCNet networks/ccnet.py, --recurrence 2); no classification network published",
        site="trunk", stages=(4,), position="last"),
    "psa": Preset(
        "mid on bottlenecks (after the 3x3 conv); residual elsewhere (no published classification placement)",
        "Liu et al., Polarized Self-Attention: \"after the first 3x3 convolution in every residual block\"; "
        "DeLightCMU/PSA releases keypoint/segmentation HRNets only (PSA_s after conv1+bn1+ReLU of their BasicBlocks): "
        "no classification network, so BasicBlocks and MobileNets get the residual site", site="mid",
        bottlenecks_only=True),
    "sge": Preset(
        "residual, all blocks (after the last BN of the branch), groups=64",
        "Li, Hu and Yang, Spatial Group-wise Enhance; implus/PytorchInsight classification/models/imagenet/"
        "resnet_sge.py: SpatialGroupEnhance(64) after bn3 of every Bottleneck (SGE-ResNet50 25.56M); a stage "
        "64 does not divide (16/32 channels) gets the most groups that do, logged",
        fit_width=_most_groups(64), decided_by=frozenset({"groups"})),
    "sa": Preset(
        "residual, all blocks (after the last BN of the branch), groups=64",
        "Zhang and Yang, SA-Net; wofmanaf/SA-Net models/sa_resnet.py: sa_layer(C, groups=64) after bn3 of every "
        "SABottleneck (sa_resnet50 25.56M); a stage whose width 128 does not divide gets the most groups that fit, "
        "logged", fit_width=_most_groups(64, parts=2), decided_by=frozenset({"groups"})),
    "fca": Preset(
        "residual, all blocks (after the last BN of the branch), top-16 frequencies, a DCT the size of the map",
        "Qin et al., FcaNet; cfzd/FcaNet model/fcanet.py: MultiSpectralAttentionLayer(C, c2wh[planes], ..., "
        "'top16') after bn3 of every FcaBottleneck, its DCT 56/28/14/7 at 224 px (FcaNet-50 28.07M)"),
    "ese": Preset(
        "residual, all blocks (after the last BN of the branch, before the addition)",
        "Lee and Park, CenterMask (VoVNet-V2); youngwanLEE/vovnet-detectron2 vovnet/vovnet.py: eSEModule after each "
        "OSA module's aggregation conv, before the identity addition (VoVNets only: no ResNet network published)"),
    "ge": Preset(
        "residual, all blocks (after the last BN of the branch), global extent; theta / theta+: a depthwise "
        "gather the size of each slot's map",
        "Hu et al., Gather-Excite; hujie-frank/GENet models/RN50-GEPF (theta-), RN50-GEP (theta), RN50-GEPP "
        "(theta+).prototxt: the gate on conv*_*/1x1_increase/bn of every bottleneck, before the Axpy addition"),
    "gct": Preset(
        "convs: before every convolution (the stem's on the image, each block's, the shortcut's projection)",
        "Yang et al., GCT, CVPR 2020; z-x-yang/GCT PyTorch/resnet.py: GCT(in_channels) before the stem conv, conv1-3 "
        "of every Bottleneck and its downsample conv (the TensorFlow code: before each convolutional layer)",
        site="convs"),
    "ema": Preset(
        "residual; MobileNets: the blocks whose expanded width exceeds 144 (a depthwise-separable block's 320); "
        "ResNets: every block (no ResNet placement released)",
        "Ouyang et al., EMA, ICASSP 2023; YOLOonMe/EMA-attention-module timm/models/efficientnet_blocks.py: "
        "ema_layer(mid_chs) after bn2 if mid_chs > 144 (InvertedResidual), if in_chs > 320 (DepthwiseSeparableConv): "
        "MobileNetV2 + EMA 3.55M; a stage whose width 32 groups do not divide gets the most that do, logged",
        networks=("mobilenetv2_100",), fit_width=_most_groups(32, key="factor"), decided_by=frozenset({"factor"}),
        wider_than={"InvertedResidual": 144, "DepthwiseSeparableConv": 320}),
    "stn": Preset(
        "input (before the stem, on the image)",
        "Jaderberg et al., Spatial Transformer Networks: the transformer before the classification network",
        site="input"),
}
DEFAULT_PRESET = Preset("residual, all blocks", "the block's paper: channel attention on the residual branch")


def preset_for(attn: str) -> Preset:
    return PRESETS.get(str(attn), DEFAULT_PRESET)


log = logging.getLogger("attn_bench")


@dataclass(frozen=True)
class Placement:
    """A resolved placement: what ``place_attention`` gets, and what runs record."""

    placement: str
    site: str = "residual"
    stages: Any = None  # 1-based stage numbers; None: every stage
    position: str = "every"
    args: dict[str, Any] = field(default_factory=dict)
    only: tuple[str, ...] | None = None  # the slot paths of a layout (a stock SE layout, a preset's widths)
    layout: str = "stock SE blocks"  # what ``only`` is, in words
    slot_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_args: dict[int, dict[str, Any]] = field(default_factory=dict)  # recorded; applied through slot_args
    note: str | None = None  # what the row must say about this network (placement=paper off its paper's backbone)

    def as_record(self, model: nn.Module) -> dict[str, Any]:
        slots = find_slots(model, self.site)
        all_stages = sorted({s.stage for s in slots})
        selected = select_slots(slots, self.stages, self.position)  # validates
        chosen = sorted({s.stage for s in selected if self.only is None or s.path in self.only})
        stages = "all" if chosen == all_stages and self.only is None else chosen
        record = {"placement": self.placement, "site": self.site, "stages": stages, "position": self.position,
                  "args": dict(self.args)}
        if self.only is not None:
            record["layout"] = f"{self.layout} ({len(self.only)} of {len(slots)})"
        if self.note:
            record["note"] = self.note
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


def _paper_site(attn: str, preset: Preset, model: nn.Module, backbone: str) -> str:
    if preset.site is None:
        return _uniform_site(attn)
    if preset.bottlenecks_only and not all(isinstance(model.get_submodule(s.path), BOTTLENECKS) for s in find_slots(model)):
        log.info("%s: its paper's site (%s) is defined for bottleneck blocks, which %s does not have; using the "
                 "residual site", attn, preset.site, backbone)
        return _uniform_site(attn)
    sites = available_sites(model)
    if preset.site in sites:
        return preset.site
    fallback = _uniform_site(attn)
    if fallback not in sites:
        raise ConfigError(f"{attn}: its paper's site '{preset.site}' does not exist in {backbone} "
                          f"(its sites: {', '.join(sites)})")
    log.info("%s: its paper's site (%s) does not exist in %s; using the %s site", attn, preset.site, backbone, fallback)
    return fallback


def _paper_stages(attn: str, preset: Preset, model: nn.Module, backbone: str, site: str) -> list[int] | None:
    if preset.stages == DOWNSAMPLING:
        stages = sorted({s.stage for s in find_slots(model, site)})
        return [s for s in stages[:-1] if _downsamples(model, s + 1)]
    if preset.stages is None:
        return None
    if hasattr(model, "layer4"):  # the papers' stage numbers are the four-stage (ImageNet) ResNet's
        return list(preset.stages)
    log.info("%s: its paper places it in (ImageNet) ResNet stages %s only; using every stage of %s",
             attn, f"{preset.stages[0]}-{preset.stages[-1]}", backbone)
    return None


def _paper_args(attn: str, preset: Preset, backbone: str, args: dict[str, Any]) -> dict[str, Any]:
    """The paper's arguments, unless the run sets them, or sets what decides the same thing itself."""
    if set(args) & preset.decided_by:
        return {}
    note = preset.note
    if preset.args and note and backbone in note.backbones and not args.get(note.unless):
        log.info(note.text)
    return dict(preset.args)


def _paper_stage_args(preset: Preset, backbone: str, site: str, args: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per-stage arguments of the released network, unless the run sets what decides them itself."""
    stage_args = preset.stage_args.get(backbone, {})
    return {} if site != "residual" or set(args) & preset.decided_by else stage_args


def _fitted_stage_args(attn: str, preset: Preset, model: nn.Module, backbone: str, site: str,
                       args: dict[str, Any], only: tuple[str, ...] | None = None) -> dict[int, dict[str, Any]]:
    """Every stage's arguments from its width (``Preset.fit_width``) where some stage cannot take the paper's,
    said in a line; nothing where every stage can, or where the run sets them itself."""
    if preset.fit_width is None or set(args) & preset.decided_by:
        return {}
    widths: dict[int, int] = {}
    for slot in find_slots(model, site):  # a conv-site unit must fit the replaced conv's output width too
        if only is not None and slot.path not in only:
            continue
        width = math.gcd(slot.channels, dict(slot.geometry).get("out_channels", slot.channels))
        widths[slot.stage] = math.gcd(widths.get(slot.stage, 0), width)
    fitted = {stage: preset.fit_width(width) for stage, width in sorted(widths.items())}
    defaults = {**block_defaults(attn), **preset.args}
    paper = {key: defaults[key] for args in fitted.values() for key in args}
    if all(value == paper for value in fitted.values()):
        return {}
    changed = ", ".join(f"{widths[s]}-channel stage {s}: {', '.join(f'{k}={v}' for k, v in a.items())}"
                        for s, a in fitted.items() if a != paper)
    log.info("%s: its paper's %s cannot be built in every stage of %s; %s (set model.attn_args to choose)", attn,
             ", ".join(f"{k}={v}" for k, v in paper.items()), backbone, changed)
    return fitted


def resolve_placement(model: nn.Module, backbone: str, attn: str, placement: str, site: str | None,
                      stages: Iterable[int] | None, position: str | None,
                      args: dict[str, Any] | None) -> Placement:
    """The placement to build: the preset of ``placement`` for ``attn`` with explicit values on top."""
    if placement not in PLACEMENTS:
        raise ConfigError(f"unknown model.placement '{placement}'; valid choices: {', '.join(PLACEMENTS)}")
    if site is not None and site not in available_sites(model):
        raise ConfigError(f"model.attn_site '{site}' does not exist in {backbone}; its sites: "
                          f"{', '.join(available_sites(model))}")
    preset = preset_for(attn) if placement == "paper" else None
    explicit = dict(args or {})
    stock = (_stock_se(model) if preset and preset.stock_se and site is None and stages is None and position is None
             and not args else {})
    if stock:
        return Placement(placement, "residual", None, "every", {}, only=tuple(stock), slot_args=stock)
    if preset is None:
        return Placement(placement, site or _uniform_site(attn), stages, position or "every", explicit)
    resolved_site = site or _paper_site(attn, preset, model, backbone)
    resolved_stages = stages if stages is not None else _paper_stages(attn, preset, model, backbone, resolved_site)
    resolved_args = {**_paper_args(attn, preset, backbone, explicit), **explicit}
    only = _wide_enough(preset, model, resolved_site) if stages is None and position is None else None
    stage_args = (_paper_stage_args(preset, backbone, resolved_site, explicit)
                  or _fitted_stage_args(attn, preset, model, backbone, resolved_site, explicit, only))
    slot_args = {s.path: stage_args[s.stage] for s in find_slots(model, resolved_site) if s.stage in stage_args}
    return Placement(placement, resolved_site, resolved_stages, position or preset.position, resolved_args,
                     only=only, layout="blocks wider than the paper's thresholds", slot_args=slot_args,
                     stage_args=stage_args, note=_unpublished(attn, preset, backbone))


def _wide_enough(preset: Preset, model: nn.Module, site: str) -> tuple[str, ...] | None:
    """The slot paths whose blocks pass ``Preset.wider_than``; None where every slot does."""
    if not preset.wider_than or site != "residual":
        return None
    slots = find_slots(model, site)
    kept = tuple(s.path for s in slots
                 if s.channels > preset.wider_than.get(type(model.get_submodule(s.path)).__name__, 0))
    return None if len(kept) == len(slots) else kept


def _unpublished(attn: str, preset: Preset, backbone: str) -> str | None:
    """For a block whose paper network exists on some backbones only (SKNet-50 = ResNeXt-50 + SK): None
    there; elsewhere the words the record and the row label carry, and a line saying which backbone is."""
    if not preset.networks or backbone in preset.networks:
        return None
    log.info("%s on %s is not a published network: its paper's is on %s (model=%s model.attn=%s)", attn, backbone,
             ", ".join(preset.networks), preset.networks[0], attn)
    return "not a published network"
