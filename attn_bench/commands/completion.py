"""Shell completion that knows attn-bench's names, on top of Hydra's (``-sc install=bash``).

Hydra completes config groups and keys; for a plain key such as ``model.attn=`` it offers only
the current value. We add the block names (built-ins, installed plug-ins) there, and the
subcommands for the first word.
"""
from __future__ import annotations

from typing import Iterable

from attn_bench.attention import list_blocks


def completions(line: str, subcommands: Iterable[str]) -> list[str]:
    """attn-bench's own candidates for the word being completed in ``line`` (the app name stripped)."""
    new_word = not line or line.endswith(" ")
    words = line.split()
    word = "" if new_word or not words else words[-1]
    before = words if new_word else words[:-1]
    key, sep, value = word.partition("=")
    if sep and key.lstrip("+") == "model.attn":  # a sweep's list: complete its last name
        done, comma, last = value.rpartition(",")
        return [f"{key}={done}{comma}{name}" for name in list_blocks() if name.startswith(last)]
    if not before and not sep:
        return [name for name in subcommands if name.startswith(word)]
    return []


def install(subcommands: Iterable[str]) -> None:
    """Put :func:`completions` into Hydra's completion plugins (once per process)."""
    from hydra.plugins.completion_plugin import CompletionPlugin

    hydra_query = CompletionPlugin._query
    if getattr(hydra_query, "attn_bench", False):
        return
    names = list(subcommands)

    def _query(self, config_name, line):
        ours = completions(line, names)
        if any("=" in c for c in ours):  # block names replace Hydra's single current value
            return ours
        return sorted(set(hydra_query(self, config_name, line)) | set(ours))

    _query.attn_bench = True
    CompletionPlugin._query = _query
