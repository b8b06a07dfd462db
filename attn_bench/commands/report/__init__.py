"""``attn-bench report``: compare finished runs, one row per attention block.

    attn-bench report outputs/sweeps/<sweep> [more dirs ...] [--out DIR] [--baseline none]

Every run directory below the given directories is read (``metrics.json``, see
:class:`attn_bench.rundir.RunRecord`). Completed runs are grouped by block, and also by backbone and
dataset when those vary; the seeds of a group are pooled: top-1 mean ± std, and the difference
to the baseline block with Welch's 95% interval and test (see :mod:`attn_bench.sweeps.stats`).
Failed runs and runs without ``metrics.json`` (in progress or interrupted) are listed, not
counted. Output: a table on the terminal, and ``report.{md,csv,tex}`` plus PNG plots in
``--out`` (default ``<first dir>/report``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from attn_bench.attention import BASELINE
from attn_bench.commands.report.collect import Problem, collect_runs, load_run, run_dirs
from attn_bench.commands.report.render import (
    CSV_FIELDS, csv_record, latex_document, latex_label, markdown_document, problems_table, results_table,
)
from attn_bench.commands.report.rows import build_rows, drop_busy_timings, group_of, pooling_warnings, varying_keys
from attn_bench.errors import ConfigError, OneLineParser, check
from attn_bench.io import atomic_write_text
from attn_bench.models.labels import backbone_label, block_label
from attn_bench.tables import print_tables, to_csv

__all__ = ["Problem", "backbone_label", "block_label", "build_rows", "collect_runs", "load_run", "main",
           "pooling_warnings", "run_dirs"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="attn-bench report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="directories to search for runs (recursively)")
    parser.add_argument("--out", type=Path, help="output directory (default: <first dir>/report)")
    parser.add_argument("--baseline", default=None, help=f"block the deltas are measured against (default: {BASELINE})")
    parser.add_argument("--pool", action="store_true",
                        help="pool runs of one block that differ in more than the seed (warned); without it the "
                             "report refuses")
    parser.add_argument("--exclude-busy", action="store_true",
                        help="leave out latency and throughput measured while the machine was busy")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    runs, problems = collect_runs(args.dirs)
    out_dir = args.out or args.dirs[0] / "report"
    try:  # before anything is printed: an unwritable --out is one line, not a late failure
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"report: cannot write to '{out_dir}': {error.strerror or error}") from None
    baseline = args.baseline or BASELINE
    blocks = sorted({group_of(run)[2] for run in runs})
    check(args.baseline is None or baseline in blocks,
          f"report: --baseline {baseline} has no completed runs; blocks found: {', '.join(blocks) or 'none'}")
    problems_pooling = pooling_warnings(runs)
    check(args.pool or not problems_pooling,
          f"report: {problems_pooling[0] if problems_pooling else ''}; these are not seeds of one experiment: "
          f"report them from separate directories, or pass --pool to pool them anyway")
    rows = build_rows(runs, baseline)
    if args.exclude_busy:
        drop_busy_timings(rows)
    for warning in problems_pooling:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    if not rows:
        err.print("[yellow]warning:[/] no completed runs; only failed/incomplete ones are listed")
    print_tables(*([results_table(rows, baseline)] if rows else []), *([problems_table(problems)] if problems else []))

    from attn_bench.commands.report.plots import write_plots

    plots = write_plots(rows, varying_keys(rows) if rows else [], out_dir)
    atomic_write_text(out_dir / "report.md", markdown_document(rows, problems, baseline, plots or []))
    atomic_write_text(out_dir / "report.csv", to_csv(map(csv_record, rows), CSV_FIELDS))
    atomic_write_text(out_dir / "report.tex", latex_document(rows, baseline, latex_label(args.dirs)))
    err.print(escape(f"written to {out_dir}/report.{{md,csv,tex}}") + (f" and {len(plots)} plots" if plots else ""))
    return 0
