#!/usr/bin/env python
"""Markdown table of parameter counts: every attention block on ResNet-18/50 and MobileNetV2.

Each model is built exactly as the CLI builds it (``build_placed``: 1000 classes, ImageNet stem,
the block in every slot with its default arguments). Columns: total parameters, parameters of
the attention blocks alone (``attention_modules``), and the difference to the same backbone
with ``attn=none`` (which also clears built-in SE, so for MobileNetV3 it is not simply the
attention count).

    python scripts/param_table.py                    # print
    python scripts/param_table.py --out params.md    # print and write
    python scripts/param_table.py --parity           # the paper parity table (placement=paper)

The parameter table uses ``placement=uniform`` (every block at the residual site of every block,
default arguments): a like-for-like view. ``--parity`` builds each block as its paper placed it
(``placement=paper``, the CLI's default) next to the figure the paper publishes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

try:
    import attn_bench  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attn_bench.attention import list_blocks
from attn_bench.errors import ConfigError
from attn_bench.metrics.complexity import count_params
from attn_bench.models import build_placed
from attn_bench.models.backbones import CIFAR_NETS
from attn_bench.models.labels import stage_args_text

BACKBONES = ("resnet18", "resnet50", "mobilenetv2_100")
NUM_CLASSES = 1000


def _counted_model(backbone: str, attn: str, num_classes: int, placement: str = "uniform", timm_kwargs=None,
                   attn_args=None):
    """(model, placement) of :func:`build_placed` at the paper's input size (224 px; a CIFAR network: 32 px,
    its own stem)."""
    cifar = backbone in CIFAR_NETS
    kwargs = dict(placement=placement, timm_kwargs=timm_kwargs, attn_args=attn_args, img_size=32 if cifar else 224,
                  stem="small" if cifar else "imagenet")
    # the meta device skips allocating and initialising weights: counts only, and fast even for
    # GAM on ResNet-50 (half a billion parameters)
    try:
        with torch.device("meta"):
            return build_placed(backbone, attn, num_classes, **kwargs)
    except (NotImplementedError, RuntimeError):  # an init that needs real values
        return build_placed(backbone, attn, num_classes, **kwargs)


def param_rows(backbones=BACKBONES, blocks=None, num_classes: int = NUM_CLASSES) -> list[dict]:
    blocks = list(blocks or list_blocks())
    rows = []
    for backbone in backbones:
        baseline = None
        for attn in ["none"] + [b for b in blocks if b != "none"]:
            try:
                model, _ = _counted_model(backbone, attn, num_classes)
            except ConfigError as err:  # e.g. SK on a MobileNet: no conv site
                rows.append({"backbone": backbone, "attn": attn, "params": None, "why": str(err)})
                continue
            counts = count_params(model)
            total, attn_total = counts["params"], counts["attn_params"]
            if baseline is None:
                baseline = total
            rows.append({"backbone": backbone, "attn": attn, "params": total,
                         "attn_params": attn_total, "delta": total - baseline, "baseline": baseline})
    return rows


# What each paper publishes, from the papers' own tables: ImageNet-1K (1000 classes) unless ``classes``
# says CIFAR's 10 (``timm_kwargs``: the backbone's options, e.g. a shortcut). ``paper_m``: the
# total in M as printed (None: no count for a classification backbone); ``paper_added``: the
# parameters the paper says the block adds, where it gives them; ``gap``: why ours does not round to
# the paper's total, in one line (only where it does not).
HE_CIFAR = "ResNet (He et al. 2016), Table 6: CIFAR-10, option A shortcuts"
PUBLISHED = (
    dict(attn="none", backbone="resnet50", paper_m="25.56", source="CBAM paper (Woo et al. 2018), Table 4"),
    dict(attn="se", backbone="resnet50", paper_m="28.09", source="CBAM paper, Table 4 (SE-ResNet-50)"),
    dict(attn="cbam", backbone="resnet50", paper_m="28.09", source="CBAM paper, Table 4"),
    dict(attn="none", backbone="resnet18", paper_m="11.69", source="CBAM paper, Table 4"),
    dict(attn="se", backbone="resnet18", paper_m="11.78", source="CBAM paper, Table 4 (SE-ResNet-18)"),
    dict(attn="cbam", backbone="resnet18", paper_m="11.78", source="CBAM paper, Table 4"),
    dict(attn="eca", backbone="resnet50", paper_m="24.37", paper_added=80,
         source="ECA-Net (Wang et al. 2020), abstract: \"80 vs. 24.37M\"; released ECA-Net50 (k3557)",
         gap="the paper's totals (thop) sit below plain ResNet-50/101/152 (25.56/44.55/60.19 M) by 1.19/2.06/2.78 M; "
             "the 80 parameters ECA adds match exactly"),
    dict(attn="bam", backbone="resnet50", paper_m="25.92", source="BAM paper (Park et al. 2018), ImageNet table"),
    dict(attn="gc", backbone="resnet50", paper_m="28.08", source="GCNet (Cao et al. 2019), Table 2: c3-c5, r=16, add"),
    dict(attn="triplet", backbone="resnet50", paper_m="25.56",
         source="Triplet Attention (Misra et al. 2021), ImageNet table"),
    dict(attn="simam", backbone="resnet50", paper_m="25.56", source="SimAM (Yang et al. 2021): parameter-free"),
    dict(attn="sge", backbone="resnet50", paper_m="25.56",
         source="SGE (Li et al. 2019); implus/PytorchInsight README: SGE-ResNet50 25.56M (groups 64, every bottleneck)"),
    dict(attn="sa", backbone="resnet50", paper_m="25.56",
         source="SA-Net (Zhang & Yang 2021); wofmanaf/SA-Net README: sa_resnet50 25.56 (groups 64, every bottleneck)"),
    dict(attn="fca", backbone="resnet50", paper_m="28.07",
         source="FcaNet (Qin et al. 2021), ImageNet table: FcaNet-50 (top-16, r=16, every bottleneck)"),
    dict(attn="ca", backbone="mobilenetv2_100", paper_m="3.95",
         source="Coordinate Attention (Hou et al. 2021), MobileNetV2 table"),
    dict(attn="ema", backbone="mobilenetv2_100", paper_m="3.55",
         source="EMA (Ouyang et al. 2023); YOLOonMe/EMA-attention-module README: MobileNetV2 + EMA 3.55M (its timm: "
                "blocks wider than 144)"),
    dict(attn="ema", backbone="resnet50",
         source="EMA: no ResNet placement released; its README's CIFAR ResNet-50 (23.71M -> 23.85M) matches none counted"),
    dict(attn="se", backbone="mobilenetv3_large_100", paper_m="5.4",
         source="MobileNetV3 (Howard et al. 2019), Table 3: MobileNetV3-Large 1.0",
         gap="ours is timm's stock network parameter for parameter (5.48 M; 5.46 M without BN); the paper's "
             "5.4 M (its TF model) is 0.06-0.08 M lower, unexplained here"),
    dict(attn="sk", backbone="resnext50_32x4d", paper_m="27.5",
         source="SKNet (Li et al. 2019), Table 2: SKNet-50 (ResNeXt-50 + SK units)"),
    dict(attn="none", backbone="resnet20_cifar", classes=10, paper_m="0.27", source=HE_CIFAR),
    dict(attn="none", backbone="resnet32_cifar", classes=10, paper_m="0.46", source=HE_CIFAR),
    dict(attn="none", backbone="resnet44_cifar", classes=10, paper_m="0.66", source=HE_CIFAR),
    dict(attn="none", backbone="resnet56_cifar", classes=10, paper_m="0.85", source=HE_CIFAR),
    dict(attn="none", backbone="resnet110_cifar", classes=10, paper_m="1.7", source=HE_CIFAR),
    dict(attn="none", backbone="preact_resnet164_cifar", classes=10, paper_m="1.7",
         source="Identity Mappings (He et al. 2016b), Table 3: ResNet-164, pre-activation"),
    dict(attn="none", backbone="wrn16_8", classes=10, paper_m="11.0",
         source="Wide ResNets (Zagoruyko & Komodakis 2016), Table 4: WRN-16-8"),
    dict(attn="none", backbone="wrn28_10", classes=10, paper_m="36.5",
         source="Wide ResNets (Zagoruyko & Komodakis 2016), Table 4: WRN-28-10"),
    dict(attn="simam", backbone="resnet56_cifar", classes=10, timm_kwargs={"shortcut": "B"},
         source="SimAM (Yang et al. 2021), CIFAR tables: accuracy only; its networks/cifar ResNet-56, "
                "projection shortcuts; SimAM adds no parameter"),
    dict(attn="none", backbone="resnet110_abn_cifar", classes=10,
         source="ABN (Fukui et al. 2019): accuracy only; the trunk of its code's CIFAR ResNet-110 (bottlenecks)"),
    dict(attn="splat", backbone="resnet50d", paper_m="27.5",
         source="ResNeSt (Zhang et al. 2020), Table: ResNeSt-50 (radix 2, 1s64d, avd) = timm's resnest50d"),
    dict(attn="splat", backbone="resnet50",
         source="ResNeSt-50's trunk is resnet50d (deep stem, avg-down shortcuts): on resnet50 not a published network"),
    dict(attn="cot", backbone="resnet50", paper_m="22.2",
         source="CoTNet (Li et al. 2022), ImageNet table: CoTNet-50 22.2M (as widely quoted; not re-read here) = "
                "the official cotnet50, a CotLayer for every conv2"),
    dict(attn="nl", backbone="resnet50",
         source="Non-local (Wang et al. 2018): video I3D and Mask R-CNN only, no 2-D classifier"),
    dict(attn="psa", backbone="resnet50", source="PSA (Liu et al. 2021): keypoints and segmentation only"),
    dict(attn="ese", backbone="resnet50",
         source="eSE (Lee & Park 2020, CenterMask): VoVNet-V2 backbones only, no ResNet"),
    dict(attn="scse", backbone="resnet50",
         source="scSE (Roy et al. 2018): segmentation FCNs only (U-Net, SD-Net, QuickNAT), no classifier"),
    dict(attn="nam", backbone="resnet50",
         source="NAM (Liu et al. 2021): its ImageNet table could not be read here; +2C per bottleneck (its BN)"),
    dict(attn="cc", backbone="resnet50",
         source="CCNet (Huang et al. 2019): segmentation only (its head on the last stage), no classifier"),
    dict(attn="ge", backbone="resnet50",
         source="GENet (Hu et al. 2018), abstract: GE-theta- adds \"no additional learnable parameters\" (RN50-GEPF)"),
    dict(attn="ge", backbone="resnet50", attn_args={"variant": "theta"},
         source="GENet: its table could not be read here; counted from the official RN50-GEP.prototxt (224 px)"),
    dict(attn="ge", backbone="resnet50", attn_args={"variant": "theta+"},
         source="GENet: its table could not be read here; counted from the official RN50-GEPP.prototxt (224 px)"),
    dict(attn="gct", backbone="resnet50",
         source="GCT (Yang et al. 2020): its table could not be read here; before each of ResNet-50's 53 convs, 3C each"),
    dict(attn="stn", backbone="resnet50", source="STN (Jaderberg et al. 2015): task-specific networks, no ResNet"),
    dict(attn="gam", backbone="resnet50",
         source="GAM (Liu et al. 2021): r=16 from its text (\"as BAM\"); its tables could not be read here",
         gap="its text puts grouped convs with channel shuffle in ResNet-50 without a group count: not applied"),
)


def published_matches(params: int, published: str) -> bool:
    """Our count, rounded to the digits the paper prints, is the paper's figure."""
    decimals = len(published.partition(".")[2])
    return round(params / 1e6, decimals) == float(published)


def parity_rows() -> list[dict]:
    rows = []
    for paper in PUBLISHED:
        model, placement = _counted_model(paper["backbone"], paper["attn"], paper.get("classes", NUM_CLASSES),
                                          placement="paper", timm_kwargs=paper.get("timm_kwargs"),
                                          attn_args=paper.get("attn_args"))
        counts = count_params(model)
        rows.append({"paper_m": None, "paper_added": None, "gap": None, "classes": NUM_CLASSES, "timm_kwargs": {},
                     **paper, "params": counts["params"],
                     "attn_params": counts["attn_params"], "placement": placement})
    return rows


def parity_markdown(rows: list[dict]) -> str:
    lines = ["| Block | Backbone | Paper (M) | Ours, placement=paper | Where (site, stages, position) | Source | Difference |",
             "|---|---|---:|---:|---|---|---|"]
    for r in rows:
        p = r["placement"]
        where = f"{p['site']}, {p['stages']}" + ("" if p["position"] == "every" else f", {p['position']}")
        where += "".join(f"; {k}={v}" for k, v in sorted(p["args"].items())) + (f"; {p['layout']}" if p.get("layout") else "")
        where += "".join(f"; {text}" for text in stage_args_text(p))
        paper = r["paper_m"] or "none published"
        ours = f"{r['params']:,} ({_millions(r['params'])})"
        if r["paper_added"] is not None:
            paper += f" (+{r['paper_added']:,})"
            ours += f" (+{r['attn_params']:,})"
        gap = r["gap"] or ("" if r["paper_m"] is None else "rounds to the paper's figure")
        backbone = r["backbone"] + "".join(f", {k}={v}" for k, v in sorted(r["timm_kwargs"].items()))
        backbone += "" if r["classes"] == NUM_CLASSES else f" ({r['classes']} classes)"
        lines.append(f"| {r['attn']} | {backbone} | {paper} | {ours} | {where} | {r['source']} | {gap} |")
    return "\n".join(lines) + "\n"


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| Backbone | Attention | Params | Params (M) | Attention params | Δ vs none |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["params"] is None:
            lines.append(f"| {r['backbone']} | {r['attn']} | n/a | | | {r['why']} |")
            continue
        pct = 100 * r["delta"] / r["baseline"]
        delta = "0" if r["delta"] == 0 else f"{r['delta']:+,} ({pct:+.{2 if abs(pct) >= 0.01 else 4}f}%)"
        lines.append(
            f"| {r['backbone']} | {r['attn']} | {r['params']:,} | {_millions(r['params'])} "
            f"| {r['attn_params']:,} | {delta} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), help="timm backbone names")
    parser.add_argument("--blocks", nargs="+", default=None, help="attention blocks (default: all)")
    parser.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    parser.add_argument("--parity", action="store_true", help="the paper parity table instead")
    args = parser.parse_args(argv)
    table = parity_markdown(parity_rows()) if args.parity else markdown(param_rows(args.backbones, args.blocks, args.num_classes))
    print(table, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
