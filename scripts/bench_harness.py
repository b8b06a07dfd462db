"""Harness overhead: attn-bench's training img/s vs a minimal hand-written loop.

Same model (the default ResNet-18 at quarter width), same batch, same optimiser, same synthetic
images; the minimal loop feeds pre-normalised tensors with no augmentation, no logging, no
checkpoints. Goal: attn-bench within 5 % of it.

    python scripts/bench_harness.py [--epochs 2] [--train-size 10000]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from _bench_common import compose_train, machine

from attn_bench.data.datasets import load_tensors
from attn_bench.training.optim import build_optimizer
from attn_bench.commands.train import run_training
from attn_bench.models import model_from_config


def minimal_loop(cfg, epochs: int) -> float:
    torch.manual_seed(0)
    model, _ = model_from_config(cfg.model, cfg.data.num_classes, cfg.data.img_size)
    optimizer = build_optimizer(model, cfg.trainer.optimizer)
    data = load_tensors(cfg.data, train=True)
    mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    images = (data.images.float() / 255 - mean) / std
    labels, batch = data.labels, cfg.trainer.batch_size
    steps = len(labels) // batch
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(steps):
            x, y = images[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch]
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return epochs * steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements; medians are reported")
    args = parser.parse_args()
    cfg = compose_train([f"trainer.epochs={args.epochs}", f"data.train_size={args.train_size}",
                         "trainer.progress=false", "measure_cost=false", "data.test_size=1000"])
    minimal_loop(cfg, 1)  # warm-up: the first loop in a process pays for kernel selection and allocation
    plain, harness = [], []
    for _ in range(args.repeats):  # alternate, so that drifts in machine speed hit both alike
        plain.append(minimal_loop(cfg, args.epochs))
        with tempfile.TemporaryDirectory() as run_dir:
            harness.append(run_training(cfg, run_dir)["train_img_per_s"])
    plain, harness = statistics.median(plain), statistics.median(harness)
    print(f"machine: {machine()}, {torch.get_num_threads()} threads")
    print(f"minimal loop : {plain:8.1f} img/s")
    print(f"attn-bench   : {harness:8.1f} img/s  ({100 * (harness / plain - 1):+.1f} %)")


if __name__ == "__main__":
    main()
