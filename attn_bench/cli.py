"""The ``attn-bench`` command.

``attn-bench [overrides]`` trains (a Hydra app; ``-m`` sweeps); ``attn-bench blocks`` lists the
attention blocks; ``attn-bench profile`` and ``attn-bench report`` are their own subcommands.
User mistakes end as one line on stderr and exit status 2; real crashes keep their traceback.
"""
from __future__ import annotations

import os
import re
import sys

from rich.console import Console

from attn_bench.config import CONFIG_GROUPS, CONFIG_MODULE, group_options, register
from attn_bench.errors import ConfigError

USAGE_EXIT = 2
_err = Console(stderr=True, highlight=False, soft_wrap=True)
register()


def fail(message: str) -> int:
    _err.print(f"[bold red]attn-bench: error:[/] {message}")
    return USAGE_EXIT


def check_overrides(overrides: list[str]) -> None:
    """Catch unknown group options and block names before Hydra or any job starts."""
    from attn_bench.attention import list_blocks

    for arg in overrides:
        key, sep, value = arg.partition("=")
        if not sep:
            continue
        key = key.lstrip("+~")
        sweep_fn = re.fullmatch(r"(\w+)\((.*)\)", value.strip())
        if sweep_fn and sweep_fn.group(1) in ("range", "interval", "glob"):
            continue  # not a list of names; Hydra and the run's own checks handle these
        values = [v.strip() for v in (sweep_fn.group(2) if sweep_fn else value).split(",")]
        if key in CONFIG_GROUPS:
            valid = group_options(key)
            bad = [v for v in values if v not in valid and v != "null"]
            if bad:
                raise ConfigError(f"unknown {key} '{bad[0]}'; valid choices: {', '.join(valid)}")
        elif key == "model.attn":
            bad = [v for v in values if v not in list_blocks()]
            if bad:
                raise ConfigError(f"unknown attention block '{bad[0]}'; valid choices: {', '.join(list_blocks())}")


def _train_app(argv: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from attn_bench.training.run import run_training

    @hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
    def train(cfg) -> float | None:
        hc = HydraConfig.get()
        try:
            metrics = run_training(cfg, hc.runtime.output_dir, hc.job.config.override_dirname.exclude_keys)
        except ConfigError as err:
            if hc.mode == RunMode.MULTIRUN:
                raise
            sys.exit(fail(str(err)))
        if hc.mode != RunMode.MULTIRUN and int(os.environ.get("RANK", 0)) == 0:
            print_run_summary(metrics)
        return metrics["final"]["top1"]

    sys.argv = [sys.argv[0]] + argv
    train()
    return 0


def print_run_summary(metrics: dict) -> None:
    """What the run measured, as one table (the same figures are in metrics.json)."""
    from rich.table import Table

    table = Table(title=f"{metrics['config']['model']['backbone']} + {metrics['config']['model']['attn']} "
                        f"on {metrics['config']['data']['name']}", show_header=False)
    cost = metrics.get("cost", {})
    rows = [
        ("top-1 / top-5 (final)", f"{metrics['final']['top1']:.2f} / {metrics['final']['top5']:.2f} %"),
        ("top-1 (best epoch)", f"{metrics['best']['top1']:.2f} % (epoch {metrics['best']['epoch']})"),
        ("params (attention)", f"{metrics['params']:,} ({metrics['attn_params']:,})"),
        ("MACs / FLOPs", f"{cost['gmacs']:.3f} G / {cost['gflops']:.3f} G" if cost else "-"),
        ("latency, batch 1", f"{cost['latency_ms']:.2f} ms on {cost['device_name']}" if cost else "-"),
        ("throughput (eval)", f"{cost['throughput_img_per_s']:.0f} img/s" if cost else "-"),
        ("training", f"{metrics['train_img_per_s']:.0f} img/s, peak memory {metrics['peak_memory_mb']:.0f} MB"),
        ("wall time", f"{metrics['wall_time_s']:.1f} s, {metrics['epochs']} epochs"),
        ("run directory", metrics["run_dir"]),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def _blocks_command(argv: list[str]) -> int:
    from rich.table import Table

    from attn_bench.attention import block_defaults, get_block_class, list_blocks

    table = Table(title="attention blocks (model.attn=<name>, arguments as +model.attn_args.<arg>=<value>)")
    for col in ("name", "class", "paper", "defaults"):
        table.add_column(col)
    table.add_row("none", "-", "baseline: the backbone with every attention slot empty", "")
    for name in list_blocks(include_baseline=False):
        cls = get_block_class(name)
        paper = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        defaults = ", ".join(f"{k}={v!r}" for k, v in block_defaults(name).items())
        table.add_row(name, cls.__name__, paper, defaults)
    Console().print(table)
    return 0


SUBCOMMANDS = {
    "blocks": _blocks_command,
    "profile": lambda argv: __import__("attn_bench.metrics.profile", fromlist=["main"]).main(argv),
    "report": lambda argv: __import__("attn_bench.sweeps.report", fromlist=["main"]).main(argv),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:])
        check_overrides(argv)
        return _train_app(argv)
    except ConfigError as err:
        return fail(str(err))
    except KeyboardInterrupt:
        _err.print("attn-bench: interrupted; run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
