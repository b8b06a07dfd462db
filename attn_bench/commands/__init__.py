"""The ``attn-bench`` subcommands, one module (or package) each; :mod:`attn_bench.cli` dispatches."""
