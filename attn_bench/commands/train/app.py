"""The Hydra app behind ``attn-bench [overrides]``: names checked up front, one run (or ``-m``
sweep), and a summary table of what the run measured."""
from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

from attn_bench.config import (CONFIG_GROUPS, CONFIG_MODULE, check_override_keys, check_unread_keys, group_options,
                               unescape_override, user_config_dirs)
from attn_bench.errors import ConfigError, fail
from attn_bench.rundir import OUTPUTS_ENV, RunRecord, outputs_root
from attn_bench.tables import wide_console


def check_overrides(overrides: list[str]) -> None:
    """Catch unknown group options and block names before Hydra or any job starts."""
    from attn_bench.attention import get_block_class

    for arg in overrides:
        key, sep, value = arg.partition("=")
        if not sep:
            continue
        key = key.lstrip("+~")
        sweep_fn = re.fullmatch(r"(\w+)\((.*)\)", value.strip())
        if sweep_fn and sweep_fn.group(1) in ("range", "interval", "glob"):
            continue  # not a list of names; Hydra and the run's own checks handle these
        values = [unescape_override(v.strip()) for v in (sweep_fn.group(2) if sweep_fn else value).split(",")]
        if key in CONFIG_GROUPS:
            valid = group_options(key, user_config_dirs(overrides))
            bad = [v for v in values if v not in valid and v != "null"]
            if bad:
                raise ConfigError(f"unknown {key} '{bad[0]}'; valid choices: {', '.join(valid)}")
        elif key == "model.attn":
            for name in values:  # unknown names list the choices; a user's block is loaded, once, here
                get_block_class(name)


def print_config_tree(cfg) -> None:
    """The resolved config as a tree, a branch per group (as lightning-hydra-template prints it)."""
    from omegaconf import OmegaConf
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("[bold]config[/] (resolved)", guide_style="dim")
    groups = [key for key in ("model", "data", "trainer") if key in cfg]
    for key in groups:
        tree.add(f"[bold]{key}[/]").add(Syntax(OmegaConf.to_yaml(cfg[key], resolve=True), "yaml", theme="ansi_dark"))
    rest = OmegaConf.masked_copy(cfg, [key for key in cfg if key not in groups])
    tree.add("[bold]top level[/]").add(Syntax(OmegaConf.to_yaml(rest, resolve=True), "yaml", theme="ansi_dark"))
    wide_console().print(tree)


def print_run_summary(record: RunRecord) -> None:
    """What the run measured, as one table (the same figures are in metrics.json)."""
    from rich.table import Table

    from attn_bench.models.labels import backbone_label, block_label  # the models package brings timm

    config, cost = record.config, record.cost or {}
    model = config["model"]
    debug = " (debug: a few batches, not comparable)" if config["trainer"].get("limit_batches") else ""
    table = Table(title=f"{backbone_label(model)} + {block_label(model, record.block, record.placement)} on "
                        f"{config['data']['name']}{debug}", show_header=False)
    rows = [
        ("top-1 / top-5 (final)", f"{record.final['top1']:.2f} / {record.final['top5']:.2f} %"),
        ("top-1 (best epoch)", f"{record.best['top1']:.2f} % (epoch {record.best['epoch']})"),
        *([("top-1 EMA (final / best)", f"{record.final_ema['top1']:.2f} / {record.best_ema['top1']:.2f} % "
                                         f"(epoch {record.best_ema['epoch']})")] if record.final_ema else []),
        ("params (attention)", f"{record.params:,} ({record.attn_params:,})"),
        ("MACs / FLOPs", f"{cost['gmacs']:.3f} G / {cost['gflops']:.3f} G" if cost else "-"),
        ("latency, batch 1", f"{cost['latency_ms']:.2f} ms on {cost['device_name']}" if cost else "-"),
        ("throughput (eval)", f"{cost['throughput_img_per_s']:.0f} img/s" if cost else "-"),
        ("training", f"{record.train_img_per_s:.0f} img/s, peak memory {record.peak_memory_mb:.0f} MB"),
        ("wall time", f"{record.wall_time_s:.1f} s, {record.epochs} epochs"),
        ("run directory", record.run_dir),
    ]
    for name, value in rows:
        table.add_row(name, value)
    wide_console().print(table)
    runs = Path(record.run_dir).parent
    run_dir = shlex.quote(str(record.run_dir))
    print(f"next: tensorboard --logdir {run_dir}\n"
          f"      attn-bench visualize {run_dir}   (Grad-CAM and the block's own maps)\n"
          f"      attn-bench report {shlex.quote(str(runs))}   (compares every run under it)")


# Hydra's run modes: more than one on a command line is a usage error (Hydra raises a ValueError)
MODE_FLAGS = {"-m": "-m/--multirun", "--multirun": "-m/--multirun", "-c": "--cfg", "--cfg": "--cfg",
              "-i": "--info", "--info": "--info", "-sc": "--shell-completion", "--shell-completion": "--shell-completion"}


def check_modes(argv: list[str]) -> None:
    modes = sorted({MODE_FLAGS[a] for a in argv if a in MODE_FLAGS})
    if len(modes) > 1:
        raise ConfigError(f"{' and '.join(modes)} cannot be combined: give one of -m/--multirun, --cfg, --info, "
                          f"--shell-completion")


OPTUNA_PLUGIN = "hydra_plugins.hydra_optuna_sweeper"


def check_sweeper(argv: list[str]) -> None:
    """``hydra/sweeper=optuna*``: the plugin is installed, and the search maximises what a job returns (its
    final top-1) rather than the plugin's default, minimise, which would look for the worst setting."""
    import importlib.util

    sweeper = next((a.partition("=")[2] for a in argv if a.lstrip("+").partition("=")[0] == "hydra/sweeper"), "")
    if not sweeper.startswith("optuna"):
        return
    if importlib.util.find_spec(OPTUNA_PLUGIN) is None:
        raise ConfigError(f"hydra/sweeper={sweeper} needs Hydra's Optuna sweeper, which is not installed: "
                          f"pip install 'attn-bench[optuna]'")
    direction = next((a.partition("=")[2] for a in argv if a.partition("=")[0] == "hydra.sweeper.direction"), None)
    if sweeper == "optuna" and direction != "maximize":
        raise ConfigError("hydra/sweeper=optuna minimises what each job returns, and a job returns its final top-1: "
                          "use hydra/sweeper=optuna_top1 (which maximises it) or add hydra.sweeper.direction=maximize")


def check_outputs_root(argv: list[str]) -> None:
    """The folder runs land in (``ATTN_BENCH_OUTPUTS``, default ``outputs``) can take them: one line naming
    it otherwise (Hydra would fail creating the run directory with a traceback). Not checked when the
    command line names its own run or sweep directory."""
    if any(a.partition("=")[0].lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") for a in argv) or \
            any(a in ("-h", "--help", "--hydra-help") or MODE_FLAGS.get(a, "-m/--multirun") != "-m/--multirun"
                for a in argv):  # nothing is run
        return
    root = outputs_root()
    where = f"{OUTPUTS_ENV}='{root}'" if os.environ.get(OUTPUTS_ENV) else f"the outputs folder '{root}'"
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{where} is a file, not a folder; set ATTN_BENCH_OUTPUTS to a folder runs can be written to")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write runs into {where}: {err.strerror or err}; set ATTN_BENCH_OUTPUTS to a "
                          f"writable folder") from None


def main(argv: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    check_modes(argv)
    check_sweeper(argv)
    check_overrides(argv)
    check_override_keys(argv)
    check_outputs_root(argv)

    @hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
    def train(cfg) -> float | None:
        hc = HydraConfig.get()
        try:
            check_unread_keys(cfg)  # a mistyped +key: one line before the tree, and before torch loads
            if hc.mode != RunMode.MULTIRUN and cfg.print_config and int(os.environ.get("RANK", 0)) == 0:
                print_config_tree(cfg)
            from attn_bench.commands.train.run import run_training  # torch and timm: only when a run starts

            metrics = run_training(cfg, hc.runtime.output_dir)
        except ConfigError as err:
            if hc.mode == RunMode.MULTIRUN:
                raise
            sys.exit(fail(str(err)))
        if hc.mode != RunMode.MULTIRUN and int(os.environ.get("RANK", 0)) == 0:
            print_run_summary(RunRecord.from_dict(metrics))
        return metrics["final"]["top1"]

    sys.argv = [sys.argv[0]] + argv
    train()
    return 0
