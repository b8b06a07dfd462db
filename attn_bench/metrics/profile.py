"""``attn-bench profile``: what each attention block costs in one backbone.

    attn-bench profile backbone=resnet50 img_size=224 blocks=[none,se,eca,gc,ca,gam,cbam]

Arguments are Hydra overrides of ``configs/profile.yaml``, composed with Hydra's compose API
(no run directory, no logging setup). Every block is built into the backbone exactly as training
builds it, then measured with :func:`attn_bench.metrics.cost.run_cost_metrics`. The table shows
each row relative to the ``none`` baseline when ``none`` is listed, and is written as CSV,
Markdown and JSON to ``out_dir``.
"""
from __future__ import annotations

import csv
import io
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.table import Table

from attn_bench.attention import BASELINE, list_blocks
from attn_bench.errors import ConfigError, check
from attn_bench.io import atomic_write_json, atomic_write_text
from attn_bench.metrics.cost import run_cost_metrics
from attn_bench.devices import resolve_device
from attn_bench.metrics.latency import BusyDeviceWarning, TimingPlan, resolve_amp
from attn_bench.models.backbones import resolve_stem
from attn_bench.models.build import build_model

CONFIG_NAME = "profile"
PROBE_PX = 1024  # input size for measuring a backbone's output stride on the meta device
DELTA_KEYS = ("params", "macs", "flops", "latency_ms", "throughput_img_per_s")
LEADING_CSV_COLUMNS = ("block", "params", "attn_params", "macs", "flops", "latency_ms", "throughput_img_per_s")


def compose_config(argv: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from attn_bench.config import CONFIG_MODULE

    GlobalHydra.instance().clear()  # an earlier in-process Hydra app may have left it set
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=argv)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(" ".join(str(err).split())) from None
    return cfg


def checked_blocks(blocks: Any) -> list[str]:
    names = [str(b) for b in blocks] if isinstance(blocks, (list, ListConfig)) else [str(blocks)]
    check(len(names) > 0, "blocks is empty; list at least one, e.g. blocks=[none,se]")
    for name in names:
        check(name in list_blocks(), f"unknown attention block '{name}'; valid choices: {', '.join(list_blocks())}")
    check(len(set(names)) == len(names), f"blocks lists a block twice: {names}")
    return names


def stem_for(cfg: DictConfig) -> str:
    return resolve_stem(cfg.stem, int(cfg.img_size))


def build(cfg: DictConfig, block: str) -> torch.nn.Module:
    attn_args = OmegaConf.to_container(cfg.attn_args) if cfg.attn_args and block != BASELINE else None
    return build_model(
        cfg.backbone, block, cfg.num_classes, stem=stem_for(cfg), attn_args=attn_args,
        attn_stages=cfg.attn_stages, attn_position=cfg.attn_position,
        timm_kwargs=OmegaConf.to_container(cfg.timm_kwargs) if cfg.timm_kwargs else None,
    )


def check_models(cfg: DictConfig, blocks: list[str]) -> None:
    """Build every model on the meta device (shapes only: no memory, no arithmetic) so that bad
    arguments fail before anything is measured, and check that the input covers the backbone's
    output stride, without which the last feature map would be below 1x1."""
    img_size = cfg.img_size
    check(isinstance(img_size, int) and img_size >= 1, f"img_size={img_size!r} must be a positive integer")
    with torch.device("meta"):
        for block in blocks:
            build(cfg, block)
        probe = build(cfg, BASELINE).eval()
        stride = PROBE_PX // probe.forward_features(torch.empty(1, 3, PROBE_PX, PROBE_PX)).shape[-1]
    check(img_size >= stride,
          f"img_size={img_size} is too small for {cfg.backbone} with the {stem_for(cfg)} stem: it downsamples "
          f"{stride}x, so the last feature map would be smaller than 1x1; use img_size >= {stride}")


def timing_plan(node: DictConfig) -> TimingPlan:
    return TimingPlan(warmup=node.warmup, warmup_s=node.warmup_s, repeats=node.repeats,
                      min_repeats=node.min_repeats, budget_s=node.budget_s)


def timing_options(cfg: DictConfig) -> dict[str, Any]:
    """``run_cost_metrics`` keyword arguments, checked before any model is built."""
    return {
        "device": resolve_device(cfg.device), "num_threads": cfg.threads, "amp_dtype": resolve_amp(cfg.amp),
        "channels_last": cfg.channels_last, "latency_plan": timing_plan(cfg.latency),
        "throughput_plan": timing_plan(cfg.throughput), "throughput_batch": cfg.throughput.batch_size,
    }


def profile_block(cfg: DictConfig, block: str, options: dict[str, Any]) -> dict[str, Any]:
    model = build(cfg, block)
    with warnings.catch_warnings():  # the table marks busy rows itself
        warnings.simplefilter("ignore", BusyDeviceWarning)
        metrics = run_cost_metrics(model, cfg.img_size, **options)
    return {"block": block, **metrics}


def add_deltas(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``delta_<key>`` and ``delta_<key>_pct`` against the ``none`` row, if there is one."""
    base = next((r for r in rows if r["block"] == BASELINE), None)
    if base is None:
        return rows
    for row in rows:
        for key in DELTA_KEYS:
            row[f"delta_{key}"] = row[key] - base[key]
            row[f"delta_{key}_pct"] = 100 * (row[key] - base[key]) / base[key] if base[key] else float("nan")
    return rows


def _delta(key: str, scale: float, digits: int) -> Callable[[dict], str]:
    return lambda r: f"{r[f'delta_{key}'] / scale:+.{digits}f} ({r[f'delta_{key}_pct']:+.1f}%)"


def display_columns(rows: list[dict[str, Any]]) -> list[tuple[str, Callable[[dict], str]]]:
    """(header, formatter) pairs shared by the terminal table and the Markdown file."""
    with_delta = "delta_params" in rows[0]
    batch = rows[0]["throughput_batch_size"]
    columns = [
        ("block", lambda r: r["block"] + (" *" if r["latency_busy"] or r["throughput_busy"] else "")),
        ("params (M)", lambda r: f"{r['params'] / 1e6:.3f}"), ("Δ params (M)", _delta("params", 1e6, 3)),
        ("GMACs", lambda r: f"{r['gmacs']:.3f}"), ("Δ GMACs", _delta("macs", 1e9, 3)),
        ("GFLOPs", lambda r: f"{r['gflops']:.3f}"), ("Δ GFLOPs", _delta("flops", 1e9, 3)),
        ("latency ms", lambda r: f"{r['latency_ms']:.1f}"), ("Δ latency ms", _delta("latency_ms", 1, 1)),
        (f"img/s @{batch}", lambda r: f"{r['throughput_img_per_s']:.1f}"),
        (f"Δ img/s @{batch}", _delta("throughput_img_per_s", 1, 1)),
    ]
    return [c for c in columns if with_delta or not c[0].startswith("Δ")]


def caption(cfg: DictConfig, rows: list[dict[str, Any]]) -> str:
    r = rows[0]
    text = (f"{cfg.backbone} @ {cfg.img_size} px, {cfg.num_classes} classes; MACs/FLOPs: batch 1, eval; "
            f"timing on {r['device']} ({r['device_name']}), {r['dtype']}, {r['num_threads']} threads, "
            f"torch {r['torch_version']}; latency = median of batch-1 passes")
    if any(row["latency_busy"] or row["throughput_busy"] for row in rows):
        text += "; * = device busy while timing (wide spread or other processes on the CPU): compare with care"
    return text


def to_markdown(cfg: DictConfig, rows: list[dict[str, Any]]) -> str:
    columns = display_columns(rows)
    lines = [f"# attn-bench profile: {cfg.backbone} @ {cfg.img_size} px", "", caption(cfg, rows), "",
             "| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r) for _, fmt in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    fields = list(LEADING_CSV_COLUMNS) + [k for k in rows[0] if k not in LEADING_CSV_COLUMNS]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()})
    return out.getvalue()


def print_table(cfg: DictConfig, rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"attn-bench profile: {cfg.backbone} @ {cfg.img_size} px", caption=caption(cfg, rows),
                  box=box.SIMPLE_HEAD, collapse_padding=True)
    columns = display_columns(rows)
    for header, _ in columns:
        table.add_column(header, justify="left" if header == "block" else "right")
    for row in rows:
        table.add_row(*(fmt(row) for _, fmt in columns))
    console = Console()
    if not console.is_terminal:  # a file or pipe has no width: do not wrap cells at 80 columns
        console.width = max(console.width, 200)
    console.print(table)


def write_outputs(cfg: DictConfig, rows: list[dict[str, Any]]) -> Path:
    out_dir = Path(cfg.out_dir)
    atomic_write_text(out_dir / "profile.csv", to_csv(rows))
    atomic_write_text(out_dir / "profile.md", to_markdown(cfg, rows))
    atomic_write_json(out_dir / "profile.json", {"config": OmegaConf.to_container(cfg), "rows": rows})
    return out_dir


def print_help() -> None:
    from importlib import resources

    from attn_bench.config import CONFIG_MODULE

    defaults = (resources.files(CONFIG_MODULE) / f"{CONFIG_NAME}.yaml").read_text()
    text = f"{__doc__}\nKeys (override as key=value) and defaults:\n\n{defaults}"
    Console(highlight=False, soft_wrap=True).print(text, markup=False)


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        print_help()
        return 0
    cfg = compose_config(argv)
    blocks = checked_blocks(cfg.blocks)
    options = timing_options(cfg)
    check_models(cfg, blocks)
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
    print_table(cfg, rows)
    uncounted = sorted({op for row in rows for op in row["uncounted_ops"]})
    if uncounted:
        log.print(f"[yellow]warning:[/] FLOPs leave out ops without a formula: {', '.join(uncounted)}")
    log.print(f"written to {write_outputs(cfg, rows)}/profile.{{csv,md,json}}")
    return 0
