"""``attn-bench blocks``: every attention block, its paper and its defaults."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from attn_bench.attention import block_defaults, get_block_class, list_blocks


def main(argv: list[str]) -> int:
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
