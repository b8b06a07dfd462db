"""Attention blocks, one per file, each faithful to its paper (see each module's docstring)."""
from attn_bench.attention.registry import (
    BASELINE, block_defaults, block_identity, block_sites, create_block, get_block_class, is_baseline, list_blocks,
)

__all__ = ["BASELINE", "block_defaults", "block_identity", "block_sites", "create_block", "get_block_class",
           "is_baseline", "list_blocks"]
