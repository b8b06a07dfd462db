"""Wall time of the README's main job: `attn-bench` with no arguments, as a new user runs it.

Each repeat starts the real command in a fresh temporary directory (so nothing resumes), and
reports its wall time (process start to exit, install excluded), the training img/s and the
final top-1 from its metrics.json; then the median. Goal: about 90 s on 2 CPU cores.

    python scripts/time_default_run.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import machine


def one_run() -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [shutil.which("attn-bench") or "attn-bench"]
        started = time.perf_counter()
        subprocess.run(command, cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=dict(os.environ, ATTN_BENCH_OUTPUTS=str(Path(tmp) / "outputs")))
        wall = time.perf_counter() - started
        metrics = json.loads(next(Path(tmp).rglob("metrics.json")).read_text())
        return wall, metrics["train_img_per_s"], metrics["final"]["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for i in range(args.repeats):
        runs.append(one_run())
        print(f"run {i + 1}: {runs[-1][0]:.1f} s wall, {runs[-1][1]:.0f} img/s training, top-1 {runs[-1][2]:.2f}",
              flush=True)
    walls, rates, top1 = zip(*runs)
    print(f"\n{machine()}\n`attn-bench` (default run), median of {args.repeats}: {statistics.median(walls):.1f} s wall, "
          f"{statistics.median(rates):.0f} img/s training, top-1 {statistics.median(top1):.2f} %")
    sys.exit(0)


if __name__ == "__main__":
    main()
