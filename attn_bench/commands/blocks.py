"""``attn-bench blocks``: every attention block (built-in and installed plug-ins), its paper and its defaults."""
from __future__ import annotations

import sys

from rich.table import Table

from attn_bench.attention import block_defaults, block_identity, block_sites, get_block_class, list_blocks
from attn_bench.attention.registry import is_builtin
from attn_bench.errors import ConfigError
from attn_bench.tables import wide_console


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


USAGE = ("usage: attn-bench blocks  (every attention block, its paper, placement=paper, sites and defaults; "
         "then every backbone, its stages and the sites it has)")


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if argv:
        raise ConfigError(f"blocks takes no arguments, got {' '.join(argv)}; {USAGE}")
    from attn_bench.models.presets import preset_for  # torch: not for --help

    table = Table(title="attention blocks (model.attn=<name>, arguments as +model.attn_args.<arg>=<value>)",
                  caption="sites (model.attn_site): residual | mid | stage_end | trunk | conv | input; "
                          "model.placement=uniform puts every block at the residual site of every block "
                          "(or its own site if it has no residual one). Your own block: "
                          "model.attn=path/to/file.py:ClassName or package.module:ClassName "
                          "(check it first: attn-bench check-block SPEC)")
    for col in ("name", "paper", "with placement=paper", "sites", "defaults"):
        table.add_column(col, overflow="fold")  # a narrow terminal wraps cells, never cuts them
    for name in list_blocks():
        try:
            cls = get_block_class(name)
        except ConfigError as err:  # a plug-in that does not load: said in its row, the rest still listed
            table.add_row(name, str(err), "(does not load)", "", "")
            continue
        builtin = is_builtin(name)
        paper = _first_line(sys.modules[cls.__module__].__doc__) if builtin else _first_line(cls.__doc__)
        if not builtin:
            paper = f"{paper} ({block_identity(name)['class']}, plug-in)"
        defaults = ", ".join(f"{k}={v!r}" for k, v in block_defaults(name).items())
        where = preset_for(name).where
        table.add_row(name, paper, where, ", ".join(block_sites(name)), defaults)
    console = wide_console()
    console.print(table)
    console.print(backbone_table())
    return 0


def backbone_table() -> Table:
    """Every backbone (model=<name>): its blocks per stage, their kind and the sites it has, read from
    the network itself (built on the meta device: no memory, no arithmetic)."""
    import torch

    from attn_bench.models import SUPPORTED_BACKBONES
    from attn_bench.models.backbones import create_backbone
    from attn_bench.models.placement import available_sites, stage_paths

    table = Table(title="backbones (model=<name>) and the sites each has (model.attn_site)")
    table.add_column("backbone", no_wrap=True)  # a name to copy whole
    for col in ("blocks per stage", "block kinds", "sites"):
        table.add_column(col, overflow="fold")
    for name in SUPPORTED_BACKBONES:
        with torch.device("meta"):
            model = create_backbone(name, 10)
        stages = [model.get_submodule(path) for path in stage_paths(model)]
        kinds = sorted({type(block).__name__ for stage in stages for block in stage})
        table.add_row(name, " / ".join(str(len(stage)) for stage in stages), ", ".join(kinds),
                      ", ".join(available_sites(model)))
    return table
