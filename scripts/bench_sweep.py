"""Sweep launcher: overhead per job, and wall time with N (faked) devices for N equal jobs.

Overhead = (sweep wall time - sum of the jobs' own wall_time_s) / jobs, with one worker, so it
counts process start-up, config composition and bookkeeping. The parallel check gives the
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
    env = dict(os.environ, ATTN_BENCH_OUTPUTS=str(workdir), OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "attn_bench", "-m", *args, *TINY], check=True, env=env,
                   cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    runs = [json.loads(p.read_text()) for p in workdir.glob("sweeps/*/*/metrics.json")]
    return wall, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2)
    args = parser.parse_args()
    cores, n = os.cpu_count() or 1, args.devices
    with tempfile.TemporaryDirectory() as tmp:
        wall, runs = sweep(Path(tmp) / "serial", ["seed=0,1,2,3", "hydra.launcher.cpu_workers=1"], cores)
        own = sum(r["wall_time_s"] for r in runs)
        print(f"overhead per job: {(wall - own) / len(runs):.2f} s "
              f"(sweep {wall:.1f} s, jobs' own time {own:.1f} s, {len(runs)} jobs, 1 worker)")
        single, _ = sweep(Path(tmp) / "one", ["seed=0", "hydra.launcher.devices=[0]"], max(1, cores // n))
        ids = ",".join(str(i) for i in range(n))
        seeds = ",".join(str(i) for i in range(n))
        parallel, _ = sweep(Path(tmp) / "par", [f"seed={seeds}", f"hydra.launcher.devices=[{ids}]"], max(1, cores // n))
        print(f"{n} equal jobs on {n} fake devices: {parallel:.1f} s vs one job {single:.1f} s "
              f"(ratio {parallel / single:.2f})")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
