"""Scaling of one run: training img/s with 1 and 2 processes under torchrun (gloo on CPU, NCCL on GPU).

    python scripts/bench_scaling.py [--nprocs 1 2] [--epochs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _bench_common import machine


def run(nproc: int, epochs: int, workdir: Path) -> float:
    run_dir = workdir / f"nproc{nproc}"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port=29533",
           "-m", "attn_bench", f"trainer.epochs={epochs}", "trainer.progress=false", "measure_cost=false",
           f"hydra.run.dir={run_dir}"]
    threads = max(1, (os.cpu_count() or 1) // nproc)
    subprocess.run(cmd, check=True, cwd=workdir, env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
                   stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "metrics.json").read_text())["train_img_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rates = {n: run(n, args.epochs, Path(tmp)) for n in args.nprocs}
    print(f"machine: {machine()}")
    for n, rate in rates.items():
        print(f"{n} process(es): {rate:8.1f} img/s  ({rate / rates[args.nprocs[0]]:.2f}x)")


if __name__ == "__main__":
    main()
