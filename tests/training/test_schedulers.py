"""``trainer.scheduler.name`` picks timm's schedule; all warm up the same way and end at min_lr."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from attn_bench.training.optim import SCHEDULERS, build_scheduler


def lrs(name: str) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = OmegaConf.create(dict(name=name, warmup_epochs=1, warmup_lr=0.0, min_lr=0.001))
    scheduler = build_scheduler(optimizer, cfg, epochs=5, steps_per_epoch=10)
    out = []
    for step in range(1, 51):
        scheduler.step_update(step)
        out.append(optimizer.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_schedule_warms_up_then_decays_to_min_lr(name):
    values = lrs(name)
    assert values[9] == pytest.approx(0.1) and values[4] == pytest.approx(0.05)
    assert values[-1] == pytest.approx(0.001, abs=2e-3)
    assert all(a >= b - 1e-12 for a, b in zip(values[9:], values[10:]))


def test_the_name_changes_the_schedule():
    curves = {name: lrs(name)[25] for name in SCHEDULERS}
    assert len({round(v, 6) for v in curves.values()}) == len(SCHEDULERS)
