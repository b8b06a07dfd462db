"""``attn-bench blocks``: every attention block (built-in and installed plug-ins), its paper and its defaults."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from attn_bench.attention import block_defaults, block_identity, get_block_class, list_blocks
from attn_bench.attention.registry import is_builtin
from attn_bench.errors import ConfigError
from attn_bench.models.presets import PAPER_WHERE


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def main(argv: list[str]) -> int:
    table = Table(title="attention blocks (model.attn=<name>, arguments as +model.attn_args.<arg>=<value>)",
                  caption="sites: residual | mid | stage_end (model.attn_site); model.placement=uniform puts "
                          "every block at the residual site of every block. Your own block: "
                          "model.attn=path/to/file.py:ClassName or package.module:ClassName "
                          "(check it first: attn-bench check-block SPEC)")
    for col in ("name", "class", "paper", "placement=paper", "defaults"):
        table.add_column(col)
    table.add_row("none", "-", "baseline: the backbone with every attention slot empty", "", "")
    for name in list_blocks(include_baseline=False):
        try:
            cls = get_block_class(name)
        except ConfigError as err:  # a plug-in that does not load: said in its row, the rest still listed
            table.add_row(name, "(does not load)", str(err), "", "")
            continue
        builtin = is_builtin(name)
        paper = _first_line(sys.modules[cls.__module__].__doc__) if builtin else _first_line(cls.__doc__)
        label = cls.__name__ if builtin else f"{block_identity(name)['class']} (plug-in)"
        defaults = ", ".join(f"{k}={v!r}" for k, v in block_defaults(name).items())
        table.add_row(name, label, paper, PAPER_WHERE.get(name, "residual, all blocks"), defaults)
    Console().print(table)
    return 0
