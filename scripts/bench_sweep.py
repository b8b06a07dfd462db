"""Sweep launcher: overhead per job, and wall time with N (faked) devices for N equal jobs.

Overhead = (wall time of a K-job sweep with one worker - wall time of the same K runs started
one after another as plain `attn-bench <overrides>` commands) / K: what the launcher adds on top
of the jobs themselves (its own start-up, config composition, scheduling, bookkeeping). Each
job's own process start-up (imports, data, model) is reported too. The parallel check gives the
launcher N fake GPU ids on a CPU machine (each job gets its own CUDA_VISIBLE_DEVICES and trains
on the CPU with cores / N threads) and compares the wall time with one job's.

    python scripts/bench_sweep.py [--devices 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import machine

TINY = ["data.train_size=1000", "data.test_size=200", "trainer.epochs=1", "trainer.batch_size=50",
        "measure_cost=false"]


def sweep(workdir: Path, args: list[str], threads: int) -> tuple[float, list[dict]]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, ATTN_BENCH_OUTPUTS=str(workdir), OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "attn_bench", "-m", *args, *TINY], check=True, env=env,
                   cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    runs = [json.loads(p.read_text()) for p in workdir.glob("sweeps/*/*/metrics.json")]
    return wall, runs


def single_run(workdir: Path, seed: int) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "attn_bench", f"seed={seed}", *TINY, "trainer.progress=false"],
                   check=True, cwd=workdir, env=dict(os.environ, ATTN_BENCH_OUTPUTS=str(workdir)),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    cores, n = os.cpu_count() or 1, args.devices
    with tempfile.TemporaryDirectory() as tmp:
        seeds = [0, 1, 2, 3]
        plain = sum(single_run(Path(tmp) / "plain", seed) for seed in seeds)
        wall, runs = sweep(Path(tmp) / "serial", [f"seed={','.join(map(str, seeds))}",
                                                  "hydra.launcher.cpu_workers=1"], cores)
        own = sum(r["wall_time_s"] for r in runs)
        print(f"launcher overhead per job: {(wall - plain) / len(seeds):.2f} s (sweep of {len(seeds)} jobs "
              f"{wall:.1f} s vs the same {len(seeds)} plain runs {plain:.1f} s)")
        print(f"each job's own process start-up (imports, data, model): {(plain - own) / len(seeds):.2f} s")
        single, _ = sweep(Path(tmp) / "one", ["seed=0", "hydra.launcher.devices=[0]"], max(1, cores // n))
        ids = ",".join(str(i) for i in range(n))
        parallel, _ = sweep(Path(tmp) / "par", [f"seed={ids}", f"hydra.launcher.devices=[{ids}]"], max(1, cores // n))
        print(f"{n} equal jobs on {n} fake devices: {parallel:.1f} s vs one job {single:.1f} s "
              f"(ratio {parallel / single:.2f})")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
