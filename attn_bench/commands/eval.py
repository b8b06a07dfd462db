"""``attn-bench eval <run dir or checkpoint> [data overrides] [--ckpt last|best]``: evaluate a trained run.

The network is rebuilt from the run's ``config.yaml`` and given the weights of ``last.pt`` (the
default: the report uses the final epoch) or ``best.pt``; it is evaluated, with the run's own
precision and memory format, on the run's evaluation split or on another dataset with the same
classes (``data=imagefolder data.root=... data.eval_splits=[val]``, ``data.img_size=...``). Prints
a table and writes ``eval_<dataset>_<split>.json`` (``..._best.json`` for best.pt) into the run
directory, with each class's top-1 and the confusion matrix, drawn beside it as ``confusion_<...>.png``
and ``.pdf``. ``--tta flip`` averages the logits of each image and its mirror image (``..._flip``).
Evaluating the run's own data reproduces its recorded final top-1 exactly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from attn_bench.errors import OneLineParser, check
from attn_bench.rundir import BEST_CKPT, CONFIG_FILE, LAST_CKPT

CHECKPOINTS = {"last": LAST_CKPT, "best": BEST_CKPT}
TTA = ("off", "flip")
NO_TTA = TTA[0]
_ABSENT = object()  # OmegaConf.select's default for a key the run's data node lacks (None is a value)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="attn-bench eval", description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="a run directory, or a checkpoint file inside one")
    parser.add_argument("overrides", nargs="*", help="data=<name> and data.<key>=<value> (another dataset)")
    parser.add_argument("--ckpt", choices=list(CHECKPOINTS), default=None,
                        help="which checkpoint of the run (default: last; ignored when a file is given)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--ema", action="store_true",
                        help="evaluate the checkpoint's EMA weights (a run with trainer.ema.enabled=true)")
    parser.add_argument("--tta", choices=TTA, default=NO_TTA,
                        help="test-time augmentation: flip averages the logits of each image and its mirror image")
    parser.add_argument("--trust-block", action="store_true",
                        help="use the run's own block as its file is now, where it differs from the recorded source")
    return parser.parse_intermixed_args(argv)


def locate_checkpoint(target: Path, ckpt: str | None, command: str = "eval") -> tuple[Path, Path]:
    """(run directory, checkpoint file) of a run directory or a checkpoint file in one (eval, export)."""
    check(target.exists(), f"{command}: '{target}' does not exist; give a run directory or a checkpoint in one")
    if target.is_file():
        check(ckpt is None, f"{command}: --ckpt picks a checkpoint of a run directory; '{target}' is already a file")
        run_dir, path = target.parent, target
    else:
        run_dir, path = target, target / CHECKPOINTS[ckpt or "last"]
        check(path.exists(), f"{command}: {run_dir} has no {path.name} (a run that never finished an epoch, or "
                             f"not a run directory)")
    check((run_dir / CONFIG_FILE).exists(),
          f"{command}: {run_dir} has no {CONFIG_FILE}: not an attn-bench run directory")
    return run_dir, path


def _data_config(run_cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The run's data node, or another dataset composed like the CLI does (``data=<name> ...``)."""
    from attn_bench.config import compose
    from attn_bench.data import check as check_data

    for item in overrides:
        key = item.partition("=")[0]
        check("=" in item and (key == "data" or key.startswith("data.")),
              f"eval: '{item}' is not a data override; give data=<name> or data.<key>=<value>")
    if any(item.startswith("data=") for item in overrides):
        data = compose("train", overrides).data
    else:
        data = run_cfg.data.copy()
        for item in overrides:
            key, _, value = item.partition("=")
            check(OmegaConf.select(run_cfg, key, default=_ABSENT) is not _ABSENT,
                  f"eval: unknown key '{key}'; valid keys: {', '.join(f'data.{k}' for k in run_cfg.data)}")
            OmegaConf.update(data, key.removeprefix("data."), yaml.safe_load(value) if value else value)
    check_data(data)
    check(int(data.num_classes) == int(run_cfg.data.num_classes),
          f"eval: the data has {data.num_classes} classes, the run's network {run_cfg.data.num_classes}; "
          f"evaluate on a dataset with the same classes")
    return data


def _unfinished(run_dir: Path, checkpoint: dict) -> str:
    """``""`` for a completed run's checkpoint, else ``_unfinished_e<epochs>b<batches>`` for the file name."""
    from attn_bench.rundir import is_completed

    if is_completed(run_dir):
        return ""
    return f"_unfinished_e{int(checkpoint['epoch'])}b{int(checkpoint.get('batch', 0))}"


def evaluate_run(target: Path, overrides: list[str] = (), ckpt: str | None = None, device: str = "auto",
                 trust_block: bool = False, ema: bool = False, tta: str = NO_TTA) -> tuple[dict, Path]:
    """(the evaluation's record, the JSON file written)."""
    import torch

    from attn_bench.data.datasets import eval_split_name
    from attn_bench.data.loaders import build_eval_loader
    from attn_bench.devices import resolve_device
    from attn_bench.io import atomic_write_json
    from attn_bench.precision import resolve_precision
    from attn_bench.training.checkpoint import load_run_model
    from attn_bench.training.trainer import evaluate

    run_dir, path = locate_checkpoint(target, ckpt)
    run_cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    data = _data_config(run_cfg, list(overrides))
    dev = resolve_device(device)
    precision = resolve_precision(run_cfg.trainer.precision, dev)
    channels_last = bool(run_cfg.trainer.channels_last)
    model, checkpoint = load_run_model(run_dir, run_cfg.model, int(run_cfg.data.num_classes),
                                       int(run_cfg.data.img_size), path, trust_block, ema)
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = build_eval_loader(data, int(run_cfg.trainer.batch_size), dev, channels_last=channels_last)
    unfinished = _unfinished(run_dir, checkpoint)
    num_classes = int(run_cfg.data.num_classes)
    stats = evaluate(model, loader, dev, lambda: precision.autocast(dev), num_classes=num_classes, flip=tta == "flip")
    split = eval_split_name(data)
    record = {
        "run_dir": str(run_dir), "checkpoint": str(path), "epoch": int(checkpoint["epoch"]),
        "dataset": str(data.name), "split": split, "data": OmegaConf.to_container(data, resolve=True),
        "device": str(dev), "precision": str(run_cfg.trainer.precision),
        "top1": stats["eval_top1"], "top5": stats["eval_top5"], "loss": stats["eval_loss"],
        "images": stats["eval_images"], "finished": not unfinished, "weights": "ema" if ema else "raw", "tta": tta,
        "per_class_top1": stats["eval_per_class_top1"], "confusion": stats["eval_confusion"],
    }
    suffix = "" if path.name == CHECKPOINTS["last"] else f"_{path.stem}"  # best.pt: eval_<data>_<split>_best.json
    suffix += ("_ema" if ema else "") + ("" if tta == NO_TTA else f"_{tta}")
    out = run_dir / f"eval_{data.name}_{split}{suffix}{unfinished}.json"
    atomic_write_json(out, record)
    record["figures"] = _draw_confusion(record, run_dir / f"confusion_{data.name}_{split}{suffix}{unfinished}")
    return record, out


def _draw_confusion(record: dict, stem: Path) -> list[str]:
    """The confusion matrix's figure; none, said in a line, without matplotlib (the ``report`` extra)."""
    try:
        from attn_bench.commands.figures import confusion_figure
        import matplotlib  # noqa: F401
    except ImportError:
        print("attn-bench eval: matplotlib is not installed (pip install 'attn-bench[report]'): no confusion figure",
              file=sys.stderr)
        return []
    weights = "EMA weights, " if record["weights"] == "ema" else ""
    tta = "" if record["tta"] == NO_TTA else f", TTA {record['tta']}"
    name = Path(record["run_dir"]).name
    title = (f"{name if len(name) <= 48 else name[:47] + '…'}\n{record['dataset']} {record['split']}, epoch {record['epoch']}, "
             f"{weights}top-1 {record['top1']:.2f} %{tta}")
    return [str(p) for p in confusion_figure(record["confusion"], title, stem)]


def main(argv: list[str]) -> int:
    from rich.table import Table

    from attn_bench.tables import wide_console

    args = _parse(argv)
    record, out = evaluate_run(args.target, args.overrides, args.ckpt, args.device, args.trust_block, args.ema,
                               args.tta)
    if not record["finished"]:
        print(f"attn-bench eval: {record['run_dir']} is not a finished run (its checkpoint is from epoch "
              f"{record['epoch']}): this evaluates an unfinished network, written as {out.name}", file=sys.stderr)
    print(f"{record['checkpoint']} (epoch {record['epoch']}) on {record['dataset']} {record['split']}:")
    table = Table(show_header=False)
    for name, value in (("top-1", f"{record['top1']:.2f} %"), ("top-5", f"{record['top5']:.2f} %"),
                        ("loss", f"{record['loss']:.4f}"), ("images", f"{record['images']:,}"),
                        ("device", record["device"])):
        table.add_row(name, value)
    wide_console().print(table)
    print(f"wrote {out}" + "".join(f"\n      {figure}" for figure in record["figures"]))
    return 0
