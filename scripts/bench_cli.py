"""How fast the CLI answers what needs no network: --help, each subcommand's --help, a TAB completion and
key typos, each timed in a fresh interpreter (median of --repeats) and as a ratio to ``python -c "import
torch"`` on the same machine, which is what these must not pay for. Run it alone.

    python scripts/bench_cli.py [--repeats 5] [--source DIR]

``--source DIR`` times the attn_bench package in DIR (another checkout: the figures before a change), with
this environment's libraries; the table says which.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

CASES = {
    "attn-bench --help": (["--help"], {}),
    "TAB completion of model.attn=s": (["-sc", "query=bash"], {"COMP_LINE": "attn-bench model.attn=s"}),
    "key typo model.atn=se": (["model.atn=se"], {}),
    "added-key typo +trainer.epoch=2": (["+trainer.epoch=2"], {}),
    **{f"attn-bench {sub} --help": ([sub, "--help"], {}) for sub in
       ("blocks", "check-block", "eval", "export", "profile", "report", "visualize")},
}
CLI = "import sys\nfrom attn_bench.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
# --source: that checkout's package first, and the editable install's finder (which would win over sys.path) gone
# and its top-level configs/ as attn_bench.configs, as an install maps it
FROM_SOURCE = ("import importlib.util, os, sys\nsrc = os.environ['BENCH_SOURCE']\nsys.path.insert(0, src)\n"
               "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
               "spec = importlib.util.spec_from_file_location('attn_bench.configs', os.path.join(src, 'configs', "
               "'__init__.py'), submodule_search_locations=[os.path.join(src, 'configs')])\n"
               "sys.modules['attn_bench.configs'] = importlib.util.module_from_spec(spec)\n")


def seconds(code: list[str], env: dict[str, str], repeats: int) -> float:
    times = []
    with tempfile.TemporaryDirectory() as cwd:  # a typo's run folder lands there, not in the checkout
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, *code], env={**os.environ, **env}, capture_output=True, timeout=300,
                           cwd=cwd)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", default=None, help="a checkout whose attn_bench to time")
    args = parser.parse_args()
    env = {"BENCH_SOURCE": os.path.abspath(args.source)} if args.source else {}
    prefix = FROM_SOURCE if args.source else ""
    torch_s = seconds(["-c", "import torch"], {}, args.repeats)
    print(f"{platform.node()} ({os.cpu_count()} cores), attn_bench from {args.source or 'this environment'}, "
          f"median of {args.repeats}; import torch: {torch_s:.2f} s")
    print(f"| command | seconds | x import torch |\n|---|---|---|")
    for name, (argv, extra) in CASES.items():
        took = seconds(["-c", prefix + CLI, *argv], {**env, **extra}, args.repeats)
        print(f"| `{name}` | {took:.2f} | {took / torch_s:.2f} |")


if __name__ == "__main__":
    main()
