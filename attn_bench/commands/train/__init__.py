"""``attn-bench [overrides]``: one training run (or, with ``-m``, a sweep of them)."""
from attn_bench.commands.train.checks import validate_config
from attn_bench.commands.train.run import run_training

__all__ = ["run_training", "validate_config"]
