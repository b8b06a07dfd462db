from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attn_bench.config import register

register()  # the run-directory resolver and the sweep launcher, as the CLI does
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO.parent / "shared" / "data" / "cifar10-jpeg"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def cifar10_jpeg() -> Path:
    if not (SHARED_CIFAR10 / "train").is_dir():
        pytest.skip(f"real CIFAR-10 JPEGs not found at {SHARED_CIFAR10} (shared data folder absent)")
    return SHARED_CIFAR10


def _compose_train(overrides: list[str] | None = None):
    GlobalHydra.instance().clear()
    with initialize_config_module("attn_bench.configs", version_base="1.3"):
        return compose("train", overrides=list(overrides or []))


@pytest.fixture
def compose_train():
    """The training config exactly as the CLI composes it (Hydra's compose API)."""
    return _compose_train


@pytest.fixture
def tiny_train() -> list[str]:
    """Overrides for a few seconds of training on 2 CPU cores."""
    return list(TINY_TRAIN)


TINY_TRAIN = [
    "data.train_size=1000",
    "data.test_size=500",
    "trainer.epochs=2",
    "trainer.batch_size=50",
    "trainer.progress=false",
]
