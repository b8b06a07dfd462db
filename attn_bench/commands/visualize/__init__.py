"""``attn-bench visualize``: what each block attends to, as a heatmap grid a paper can use.

    attn-bench visualize outputs/sweeps/<sweep>               # every run below, one row per block variant
    attn-bench visualize RUN [RUN ...] --images 8 --method gradcam --split test --layer layer3 --seed 0

Every completed run below the given directories (seed ``--seed`` of each block variant) is loaded
from its checkpoint (weights only); the same deterministic, class-balanced evaluation images are
drawn for every run: the inputs with their labels on top, then per run the class-activation map of
the predicted class (``grad-cam``, default Grad-CAM on the last stage) with the prediction and its
confidence (red: wrong). Blocks that expose ``spatial_map(x) -> (N, h, w)`` (CBAM, BAM, CA, GAM,
GC, NL, PSA, Triplet; a user's block may too) also get their own map, at the last placed module, in a second
grid; blocks that weigh channels (``channel_weights(x) -> (N, C)``: SE, ECA) get the distribution
of their weights per stage in ``channel_weights.{png,pdf}``.
Writes ``heatmaps.{png,pdf}`` and ``attention_maps.{png,pdf}`` (300 dpi / vector) to ``--out``
(default ``<first dir>/visualize``) and the grids as TensorBoard images into every drawn run. A run
without a checkpoint, or whose checkpoint does not match its config, is one line; the rest is drawn.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from attn_bench.attention import is_baseline
from attn_bench.commands.report.collect import collect_runs
from attn_bench.errors import ConfigError, OneLineParser, check
from attn_bench.models.labels import backbone_label, block_label

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _parse(argv: list[str]) -> argparse.Namespace:
    from attn_bench.commands.visualize.methods import METHODS

    parser = OneLineParser(prog="attn-bench visualize", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--images", type=int, default=8, help="images to draw (class-balanced)")
    parser.add_argument("--method", default="gradcam", choices=list(METHODS))
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--layer", default=None, help="target module path (default: the last stage)")
    parser.add_argument("--seed", type=int, default=0, help="which seed of each block variant to draw")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first dir>/visualize)")
    parser.add_argument("--trust-block", action="store_true",
                        help="use a run's own block as its file is now, where it differs from the recorded source")
    args = parser.parse_args(argv)
    check(args.images >= 1, f"visualize: --images must be at least 1, got {args.images}")
    return args


def _chosen_runs(dirs: list[Path], seed: int) -> list:
    """One completed run per block variant (the one with ``seed``, else the lowest seed), the
    baseline first."""
    runs, problems = collect_runs(dirs)
    for problem in problems:
        _err.print(f"visualize: skipped {problem.path}: {problem.status}, {problem.reason}")
    by_row: dict[str, list] = {}
    for run in runs:
        by_row.setdefault(_row_label(run), []).append(run)
    chosen = []
    for group in by_row.values():
        exact = [r for r in group if r.config.get("seed") == seed]
        chosen.append((exact or sorted(group, key=lambda r: str(r.config.get("seed"))))[0])
    check(bool(chosen), f"visualize: no completed run in {', '.join(map(str, dirs))}")
    return sorted(chosen, key=lambda r: (not is_baseline(r.config["model"]["attn"]), _row_label(r)))


def _row_label(run) -> str:
    return f"{backbone_label(run.config['model'])} + {block_label(run.config['model'], run.block, run.placement)}"


def _tensorboard(run_dir: Path, images: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir)) as writer:
        for tag, image in images.items():
            writer.add_image(tag, image, dataformats="HWC")


def _warn_if_wider_than_a_page(images: int) -> None:
    from attn_bench.commands.figures import FONT_PT, PAGE_WIDTH_IN
    from attn_bench.commands.visualize.grid import grid_width

    width = grid_width(images)
    if width > PAGE_WIDTH_IN:
        _err.print(f"visualize: {images} images make the grid {width:.1f} in wide: scaled to a {PAGE_WIDTH_IN:g}-in "
                   f"page its text prints at {FONT_PT * PAGE_WIDTH_IN / width:.1f} pt (--images 8 or fewer keep "
                   f"{FONT_PT} pt)")


def _require_extras() -> None:
    """grad-cam and matplotlib are the ``viz`` extra: without them, one line saying how to get them."""
    from importlib.util import find_spec

    missing = [name for name, module in (("grad-cam", "pytorch_grad_cam"), ("matplotlib", "matplotlib"))
               if find_spec(module) is None]
    check(not missing, f"visualize needs {' and '.join(missing)}, which a plain install leaves out: "
                       f"pip install 'attn-bench[viz]' (from a checkout: pip install -e '.[viz]')")


def main(argv: list[str]) -> int:
    args = _parse(argv)
    _require_extras()
    from attn_bench.commands.visualize import cams, grid  # torch, timm and grad-cam: not for --help

    runs = _chosen_runs(args.dirs, args.seed)
    data = runs[0].config["data"]
    images = cams.eval_images(data, args.images, args.split)
    backbones = {backbone_label(r.config["model"]) for r in runs}
    one_backbone = len(backbones) == 1
    rows, own, channel, drawn = [], [], [], []
    with Progress(console=_err, transient=True) as progress:
        task = progress.add_task("class-activation maps", total=len(runs))
        for run in runs:
            progress.advance(task)
            if run.config["data"] != data:
                _err.print(f"visualize: skipped {run.run_dir}: trained on other data than {runs[0].run_dir}")
                continue
            try:
                model = cams.load_model(Path(run.run_dir), run.config, args.trust_block)
                maps, probs = cams.class_activation_maps(model, images.inputs, args.method, args.layer)
            except ConfigError as err:
                _err.print(f"visualize: skipped: {err}")
                continue
            label = block_label(run.config["model"], run.block, run.placement) if one_backbone else _row_label(run)
            label += " (baseline)" if is_baseline(run.config["model"]["attn"]) else ""  # as the report's figures
            rows.append(grid.Row(f"{label}\nseed {run.config.get('seed')}", maps, probs))
            drawn.append(Path(run.run_dir))
            block_map = cams.block_maps(model, images.inputs)
            weights = cams.channel_weights_by_stage(model, images.inputs)
            if weights:
                channel.append((f"{label}, seed {run.config.get('seed')}", weights))
            if block_map is not None:
                own.append(grid.Row(f"{label}\n{block_map[1]}", block_map[0], probs))
            elif not weights and not is_baseline(run.config["model"]["attn"]):
                _err.print(f"visualize: {label}: the block defines neither spatial_map nor channel_weights; "
                           f"Grad-CAM only")
    check(bool(rows), "visualize: no run could be drawn (see the lines above)")
    epochs = runs[0].config["trainer"]["epochs"]
    where = "the last stage" if args.layer is None else args.layer
    title = f"{args.method} on {where} of {next(iter(backbones)) if one_backbone else 'each backbone'}, " \
            f"{data['name']} {args.split} images, {epochs} epoch{'s' if epochs != 1 else ''} (red: wrong prediction)"
    _warn_if_wider_than_a_page(len(images.labels))
    fig = grid.draw(images.raw, images.labels, images.class_names, rows, title,
                    f"{cams.METHODS[args.method]} of the predicted class, scaled to [0, 1] per image")
    out = args.out or args.dirs[0] / "visualize"
    written = grid.save(fig, out / "heatmaps")
    images_for_tb = {"visualize/heatmaps": grid.as_array(fig)}
    if own:
        fig = grid.draw(images.raw, images.labels, images.class_names, own,
                        f"the blocks' own spatial maps (last placed module, scaled to [0, 1] per image), "
                        f"{data['name']} {args.split} images", "the block's own map, scaled to [0, 1] per image")
        written += grid.save(fig, out / "attention_maps")
        images_for_tb["visualize/attention_maps"] = grid.as_array(fig)
    if channel:
        fig = grid.channel_weight_figure(channel, f"channel weights per stage over the {len(images.labels)} drawn "
                                                  f"{data['name']} {args.split} images")
        written += grid.save(fig, out / "channel_weights")
        images_for_tb["visualize/channel_weights"] = grid.as_array(fig)
    for run_dir in drawn:
        _tensorboard(run_dir, images_for_tb)
    for path in written:
        _out.print(f"wrote {path}")
    _out.print(f"added {len(images_for_tb)} grid(s) to the TensorBoard events of {len(drawn)} run(s) "
               f"(tags {', '.join(images_for_tb)})")
    return 0


__all__ = ["main"]
