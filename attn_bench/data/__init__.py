"""Datasets by name, their checks, and the loaders that batch them."""
from attn_bench.data.spec import SPECS, check, dataset_spec, resolve_loader

__all__ = ["SPECS", "check", "dataset_spec", "resolve_loader"]
