"""attn-bench profile: what each attention block costs in one backbone.

    attn-bench profile model=resnet50 img_size=224 blocks=[none,se,eca,gc,ca,gam,cbam]

    attn-bench profile model=resnet18 data=cifar100 blocks=[none,se]

Arguments are Hydra overrides of configs/profile.yaml (which uses the training model group).
Every block is built into the backbone exactly as training builds it, then counted and timed.
data= (or dataset=) gives the head the classes of the data the network will train on (cifar10, cifar100,
synthetic, or an ImageFolder tree's folder, whose class folders are counted) and, for the
built-in datasets, their image size. The table shows each row relative to the none baseline
when none is listed, and is written as CSV, Markdown and JSON to out_dir.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console

from attn_bench import models  # its names load torch and timm on first use, not --help
from attn_bench.attention import get_block_class, is_baseline
from attn_bench.config import CONFIG_MODULE, compose
from attn_bench.data.spec import SPECS
from attn_bench.errors import check, check_number, plain_text
from attn_bench.io import atomic_write_json, atomic_write_text
from attn_bench.models.labels import backbone_label, block_label
from attn_bench.rundir import outputs_root
from attn_bench.tables import Column, Table, print_tables, to_csv, to_markdown

if TYPE_CHECKING:
    from attn_bench.metrics.latency import TimingPlan

CONFIG_NAME = "profile"
MODEL_ALIASES = ("backbone", "attn_args", "attn_stages", "attn_position", "attn_site", "placement", "stem", "timm_kwargs")
DELTA_KEYS = ("params", "macs", "flops", "latency_ms", "throughput_img_per_s")
LEADING_CSV_COLUMNS = ("block", "params", "attn_params", "macs", "flops", "latency_ms", "throughput_img_per_s")


def with_aliases(argv: list[str]) -> list[str]:
    """``backbone=...`` (the earlier flat keys) -> ``++model.backbone=...`` (``++``: a dict value such
    as ``timm_kwargs={channels:[...]}`` is set into the model's empty dict, as the flat key was);
    ``data=...`` (as training spells it, where Hydra reads it as the data group) -> ``dataset=...``."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in MODEL_ALIASES:
            arg = f"++model.{key}={value}"
        elif sep and key == "data":
            arg = f"dataset={value}"
        out.append(arg)
    return out


def checked_blocks(cfg: DictConfig) -> list[str]:
    blocks = cfg.blocks
    names = [str(b) for b in blocks] if isinstance(blocks, (list, ListConfig)) else [str(blocks)]
    check(len(names) > 0, "blocks is empty; list at least one, e.g. blocks=[none,se]")
    for name in names:
        get_block_class(name)  # unknown names list the choices; file.py:Class and module:Class load
    check(len(set(names)) == len(names), f"blocks lists a block twice: {names}")
    check(is_baseline(cfg.model.attn), f"profile measures the blocks in blocks=[...], not model.attn; "
                                      f"use blocks=[{cfg.model.attn}]")
    return names


def block_model_cfg(cfg: DictConfig, block: str) -> DictConfig:
    """The ``model`` node for one row: ``attn=block``; the baseline gets no block arguments."""
    node = cfg.model.copy()
    node.attn = block
    if is_baseline(block):
        node.attn_args = {}
    return node


def build(cfg: DictConfig, block: str) -> models.Placed:
    return models.model_from_config(block_model_cfg(cfg, block), cfg.num_classes, cfg.img_size)


def timing_plan(node: DictConfig) -> TimingPlan:
    from attn_bench.metrics.latency import TimingPlan

    return TimingPlan(warmup=node.warmup, warmup_s=node.warmup_s, repeats=node.repeats,
                      min_repeats=node.min_repeats, budget_s=node.budget_s)


IMAGENET = (1000, 224)  # classes and image size without data=


def _class_folders(folder: Path) -> int:
    """The class folders ImageFolder would find in the tree's ``train`` split (or in the folder itself)."""
    check(folder.is_dir(), f"data={folder}: no such folder; give {', '.join(n for n in SPECS if n != 'imagefolder')} "
                           f"or a folder in ImageFolder layout (<folder>/train/<class>/<images>)")
    split = folder / "train" if (folder / "train").is_dir() else folder
    count = sum(1 for entry in split.iterdir() if entry.is_dir())
    check(count >= 2, f"data={folder}: '{split}' has {count} class folders; ImageFolder layout is "
                      f"<folder>/train/<class>/<images>, at least two classes")
    return count


def resolve_data(cfg: DictConfig) -> None:
    """``num_classes`` and ``img_size`` from ``dataset`` (the classes and, for a built-in dataset, the image size
    training on it uses), else ImageNet's; a value the user set that contradicts the data is refused."""
    data = cfg.dataset
    if data is None:
        classes, size = IMAGENET
    elif str(data) in SPECS and str(data) != "imagefolder":
        classes, size = SPECS[str(data)].num_classes, SPECS[str(data)].img_size
    else:
        check(str(data) != "imagefolder", "data=imagefolder: give the tree's folder instead, data=/path/to/tree")
        classes, size = _class_folders(Path(str(data)).expanduser()), None
    for key, value in (("num_classes", classes), ("img_size", size)):
        given = cfg[key]
        if given is None:
            cfg[key] = value if value is not None else IMAGENET[1]  # an ImageFolder tree's images: any size
            continue
        check_number(given, key, integer=True)
        check(data is None or value is None or given == value,
              f"data={data} has {key}={value}; {key}={given} contradicts it (leave {key} out)")
    check(cfg.num_classes >= 1, f"num_classes must be at least 1, got {cfg.num_classes}")


def timing_options(cfg: DictConfig) -> dict[str, Any]:
    """``run_cost_metrics`` keyword arguments, checked before any model is built."""
    from attn_bench.devices import resolve_device
    from attn_bench.metrics.latency import resolve_amp

    for key in ("threads", "throughput.batch_size"):
        value = OmegaConf.select(cfg, key)
        if value is not None:
            check_number(value, key, integer=True)
            check(value >= 1, f"{key} must be a positive integer or null, got {value}")
    return {
        "device": resolve_device(cfg.device), "num_threads": cfg.threads, "amp_dtype": resolve_amp(cfg.amp),
        "channels_last": cfg.channels_last, "latency_plan": timing_plan(cfg.latency),
        "throughput_plan": timing_plan(cfg.throughput), "throughput_batch": cfg.throughput.batch_size,
    }


def profile_block(cfg: DictConfig, block: str, options: dict[str, Any]) -> dict[str, Any]:
    from attn_bench.metrics.cost import run_cost_metrics
    from attn_bench.metrics.latency import BusyDeviceWarning

    model, placement = build(cfg, block)
    with warnings.catch_warnings():  # the table marks busy rows itself
        warnings.simplefilter("ignore", BusyDeviceWarning)
        metrics = run_cost_metrics(model, cfg.img_size, **options)
    # the row says where the block went and with what (gc: stages 2-4 under placement=paper)
    label = block_label({"attn": block}, None, placement)
    return {"block": block, "label": label, **metrics}


def add_deltas(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``delta_<key>`` and ``delta_<key>_pct`` against the ``none`` row, if there is one."""
    base = next((r for r in rows if is_baseline(r["block"])), None)
    if base is None:
        return rows
    for row in rows:
        for key in DELTA_KEYS:
            row[f"delta_{key}"] = row[key] - base[key]
            row[f"delta_{key}_pct"] = 100 * (row[key] - base[key]) / base[key] if base[key] else float("nan")
        for key, timing in TIMED.items():  # a timing difference inside the runs' own spread is not a difference
            row[f"delta_{key}_within_noise"] = _spreads_overlap(row, base, timing)
    return rows


TIMED = {"latency_ms": "latency", "throughput_img_per_s": "throughput"}  # delta key -> its timing fields' prefix


def _spreads_overlap(row: dict[str, Any], base: dict[str, Any], timing: str) -> bool:
    """The two rows' 10th-90th percentile ranges of the timed passes overlap: the medians' difference
    is within what repeated passes of one model already vary by."""
    low, high = f"{timing}_p10_ms", f"{timing}_p90_ms"
    return row[low] <= base[high] and base[low] <= row[high]


def _delta(key: str, scale: float, digits: int) -> Callable[[dict], str]:
    def fmt(r: dict) -> str:
        if r.get(f"delta_{key}_within_noise"):
            return "within noise"
        return f"{r[f'delta_{key}'] / scale:+.{digits}f} ({r[f'delta_{key}_pct']:+.1f}%)"
    return fmt


def columns(rows: list[dict[str, Any]]) -> list[Column]:
    with_delta = "delta_params" in rows[0]
    batch = rows[0]["throughput_batch_size"]
    cols = [
        Column("block", lambda r: r["label"] + (" *" if r["latency_busy"] or r["throughput_busy"] else ""), "left"),
        Column("params (M)", lambda r: f"{r['params'] / 1e6:.3f}"), Column("Δ params (M)", _delta("params", 1e6, 3)),
        Column("GMACs", lambda r: f"{r['gmacs']:.3f}"), Column("Δ GMACs", _delta("macs", 1e9, 3)),
        Column("GFLOPs", lambda r: f"{r['gflops']:.3f}"), Column("Δ GFLOPs", _delta("flops", 1e9, 3)),
        Column("latency ms", lambda r: f"{r['latency_ms']:.1f}"), Column("Δ latency ms", _delta("latency_ms", 1, 1)),
        Column(f"img/s @{batch}", lambda r: f"{r['throughput_img_per_s']:.1f}"),
        Column(f"Δ img/s @{batch}", _delta("throughput_img_per_s", 1, 1)),
    ]
    return [c for c in cols if with_delta or not c.header.startswith("Δ")]


def caption(cfg: DictConfig, rows: list[dict[str, Any]]) -> str:
    r = rows[0]
    classes = f"{cfg.num_classes} classes ({cfg.dataset})" if cfg.dataset is not None else \
        f"{cfg.num_classes} classes (ImageNet's; data= for your data's)"
    text = (f"{cfg.model.backbone} @ {cfg.img_size} px, {classes}; MACs/FLOPs: batch 1, eval; "
            f"timing on {r['device']} ({r['device_name']}), {r['dtype']}, {r['num_threads']} threads, "
            f"torch {r['torch_version']}; latency = median of batch-1 passes")
    if any(row["latency_busy"] or row["throughput_busy"] for row in rows):
        text += "; * = device busy while timing (wide spread or other processes on the CPU): compare with care"
    if any(row.get(f"delta_{key}_within_noise") for row in rows for key in TIMED):
        text += ("; within noise = the two models' 10th-90th percentile pass times overlap (the CSV keeps the "
                 "medians' difference)")
    return text


def _backbone(cfg: DictConfig) -> str:
    """The backbone as configured, timm arguments included (``resnet18 (channels=[16, 32, 64, 128])``)."""
    return backbone_label(OmegaConf.to_container(cfg.model, resolve=True))


def profile_table(cfg: DictConfig, rows: list[dict[str, Any]]) -> Table:
    return Table(f"attn-bench profile: {_backbone(cfg)} @ {cfg.img_size} px", columns(rows), rows,
                 caption(cfg, rows))


def output_dir(cfg: DictConfig) -> Path:
    """``out_dir``, or a folder named after the backbone as configured (its timm arguments included), the image
    size and a digest of every other setting (stem, placement, block arguments, classes, device, timing): two
    profiles share a folder only when they measure the same thing."""
    if cfg.out_dir is not None:
        return Path(str(cfg.out_dir))
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", _backbone(cfg)).strip("_")
    settings = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "out_dir"}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return outputs_root() / "profile" / f"{slug}_{cfg.img_size}px_{digest}"


def write_outputs(cfg: DictConfig, rows: list[dict[str, Any]]) -> Path:
    out_dir, table = output_dir(cfg), profile_table(cfg, rows)
    fields = list(LEADING_CSV_COLUMNS) + [k for k in rows[0] if k not in LEADING_CSV_COLUMNS]
    atomic_write_text(out_dir / "profile.csv", to_csv(rows, fields))
    markdown = [f"# {table.title}", "", table.caption, "", *to_markdown(table)]
    atomic_write_text(out_dir / "profile.md", "\n".join(markdown) + "\n")
    atomic_write_json(out_dir / "profile.json", {"config": OmegaConf.to_container(cfg), "rows": rows})
    return out_dir


def print_help() -> None:
    from importlib import resources

    defaults = (resources.files(CONFIG_MODULE) / f"{CONFIG_NAME}.yaml").read_text()
    text = f"{__doc__}\nKeys (override as key=value) and defaults:\n\n{defaults}"
    Console(highlight=False, soft_wrap=True).print(plain_text(text), markup=False)


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print_help()
        return 0
    cfg = compose(CONFIG_NAME, with_aliases(argv))
    OmegaConf.resolve(cfg)
    resolve_data(cfg)
    blocks = checked_blocks(cfg)
    options = timing_options(cfg)
    for block in blocks:  # every model checked before anything is measured
        models.check(block_model_cfg(cfg, block), cfg.num_classes, cfg.img_size)
    log = Console(stderr=True, highlight=False, soft_wrap=True)
    # The first model timed in a process runs slow for a while (allocator, kernel selection); a
    # discarded pass keeps that from penalising the first row, usually the baseline, and every delta.
    profile_block(cfg, blocks[0], options)
    rows = []
    for i, block in enumerate(blocks, start=1):
        started = time.perf_counter()
        rows.append(profile_block(cfg, block, options))
        log.print(f"[dim]profiled {block} ({i}/{len(blocks)}) in {time.perf_counter() - started:.1f} s[/]")
    rows = add_deltas(rows)
    print_tables(profile_table(cfg, rows))
    uncounted = sorted({op for row in rows for op in row["uncounted_ops"]})
    if uncounted:
        log.print(f"[yellow]warning:[/] FLOPs leave out ops without a formula: {', '.join(uncounted)}")
    log.print(f"written to {write_outputs(cfg, rows)}/profile.{{csv,md,json}}")
    return 0
