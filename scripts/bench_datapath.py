"""Data path: the in-memory tensor loader vs torchvision DataLoader + PIL transforms.

Both read the shared CIFAR-10 JPEGs (ImageFolder layout) and produce normalised, augmented
training batches (random crop with 4-pixel padding, horizontal flip) on the CPU; no model runs.
Goal: the in-memory path at least 3x the img/s of the standard path for 32-pixel data.

    python scripts/bench_datapath.py [--root ../shared/data/cifar10-jpeg] [--workers 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _bench_common import compose_train, machine

from attn_bench.data.loaders import build_loaders


def epoch_rate(loader, max_batches: int) -> float:
    loader.set_epoch(0)
    start, seen = time.perf_counter(), 0
    for b, (x, _) in enumerate(loader):
        seen += x.shape[0]
        if b + 1 >= max_batches:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=150, help="batches of 128 timed per path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        base = ["data=imagefolder", f"data.root={args.root}", "data.num_classes=10", "data.img_size=32",
                f"data.cache_dir={cache}", f"data.num_workers={args.workers}"]
        rates = {}
        for kind in ("torch", "memory"):
            cfg = compose_train(base + [f"data.loader={kind}"])
            start = time.perf_counter()
            train, _ = build_loaders(cfg.data, 128, torch.device("cpu"), seed=0, drop_last=True)
            setup = time.perf_counter() - start
            rates[kind] = epoch_rate(train, args.batches)
            print(f"{kind:6s}: setup {setup:6.1f} s (memory: decode + cache of 50k JPEGs), {rates[kind]:9.0f} img/s")
        if "memory" in rates:
            start = time.perf_counter()
            build_loaders(compose_train(base + ["data.loader=memory"]).data, 128, torch.device("cpu"), 0, True)
            print(f"memory: setup from the on-disk cache {time.perf_counter() - start:.1f} s")
    print(f"machine: {machine()}; DataLoader workers: {args.workers}")
    print(f"speed-up of the in-memory path: {rates['memory'] / rates['torch']:.1f}x")


if __name__ == "__main__":
    main()
