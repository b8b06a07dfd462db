"""What a run's start costs before its first training step: how many times the backbone is built
(``timm.create_model`` calls, meta-device builds included) and the wall time from ``run_training``
to the first step, on the default config (synthetic data). Run it alone; medians of the repeats.

    python scripts/start_cost.py [--repeats 5] [overrides ...]

Compare two versions side by side (ratios, one machine) by running it in a checkout of each.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import timm

from _bench_common import compose_train, machine
from attn_bench.commands.train import run_training
from attn_bench.training.trainer import Trainer


class _FirstStep(Exception):
    """Raised where training would begin: the start is over."""


def one_start(overrides: list[str]) -> tuple[int, float]:
    builds, create_model, fit = [], timm.create_model, Trainer.fit

    def counted(*args, **kwargs):
        builds.append(args[0] if args else kwargs.get("model_name"))
        return create_model(*args, **kwargs)

    def stop(self, *args, **kwargs):
        raise _FirstStep

    timm.create_model, Trainer.fit = counted, stop
    try:
        cfg = compose_train(overrides + ["trainer.progress=false"])
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            try:
                run_training(cfg, Path(tmp) / "run")
            except _FirstStep:
                pass
            return len(builds), time.perf_counter() - started
    finally:
        timm.create_model, Trainer.fit = create_model, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    one_start(args.overrides)  # warm-up: imports, first-call caches
    results = [one_start(args.overrides) for _ in range(args.repeats)]
    builds = {b for b, _ in results}
    print(f"machine: {machine()}")
    print(f"backbone builds per start: {sorted(builds)}; start to first step: median "
          f"{statistics.median(t for _, t in results):.3f} s over {args.repeats} starts "
          f"(overrides: {' '.join(args.overrides) or 'none'})")


if __name__ == "__main__":
    main()
