"""``trainer.scheduler.name`` picks timm's schedule; all warm up the same way and end at min_lr."""
from __future__ import annotations

import re

import pytest
import torch
from omegaconf import OmegaConf

from attn_bench.training.optim import SCHEDULERS, build_scheduler


def lrs(name: str) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = OmegaConf.create(dict(name=name, warmup_epochs=1, warmup_lr=0.0, min_lr=0.001, decay_epochs=[2, 3, 4],
                                decay_rate=0.1, step_epochs=2, patience_epochs=0))
    scheduler = build_scheduler(optimizer, cfg, epochs=5, steps_per_epoch=10)
    out = []
    for step in range(1, 51):
        scheduler.step_update(step)
        out.append(optimizer.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("name", sorted(set(SCHEDULERS) - {"plateau"}))  # plateau decays on the metric (below)
def test_every_schedule_warms_up_then_decays_to_min_lr(name):
    values = lrs(name)
    assert values[9] == pytest.approx(0.1) and values[4] == pytest.approx(0.05)
    assert values[-1] == pytest.approx(0.001, abs=2e-3)
    assert all(a >= b - 1e-12 for a, b in zip(values[9:], values[10:]))


def test_the_name_changes_the_schedule():
    curves = {name: lrs(name)[35] for name in SCHEDULERS}
    assert len({round(v, 6) for v in curves.values()}) == len(SCHEDULERS)


def test_multistep_drops_exactly_when_the_epochs_are_done_as_simams_script():
    """SimAM's main_cifar.py: lr 0.1 while epoch <= 81 (0-based), 0.01 while <= 122, then 0.001."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = OmegaConf.create(dict(name="multistep", warmup_epochs=0, warmup_lr=0.0, min_lr=0.0, decay_epochs=[82, 123],
                                decay_rate=0.1))
    spe = 3
    scheduler = build_scheduler(optimizer, cfg, epochs=164, steps_per_epoch=spe)
    used = []  # the lr each update uses, by 0-based epoch
    for step in range(1, 164 * spe + 1):
        used.append(((step - 1) // spe, optimizer.param_groups[0]["lr"]))
        scheduler.step_update(step)
    official = {epoch: 0.1 if epoch <= 81 else 0.01 if epoch <= 122 else 0.001 for epoch in range(164)}
    assert all(lr == pytest.approx(official[epoch]) for epoch, lr in used)


def test_decay_norm_and_bias_puts_weight_decay_on_every_parameter():
    from attn_bench.training.optim import build_optimizer

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    base = dict(name="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4)
    skipped = build_optimizer(model, OmegaConf.create(base))
    every = build_optimizer(model, OmegaConf.create(dict(base, decay_norm_and_bias=True)))
    assert sorted(len(g["params"]) for g in skipped.param_groups if g["weight_decay"] == 0) == [3]  # bias, BN w+b
    assert all(g["weight_decay"] == 5e-4 for g in every.param_groups)
    assert sum(len(g["params"]) for g in every.param_groups) == 4


def test_the_simam_recipe_composes_to_its_official_settings(compose_train):
    cfg = compose_train(["experiment=simam_cifar100"])
    t = cfg.trainer
    assert (t.epochs, t.batch_size, t.optimizer.lr, t.optimizer.momentum) == (164, 128, 0.1, 0.9)
    assert t.optimizer.nesterov is False and t.optimizer.decay_norm_and_bias is True and t.drop_last is False
    assert (t.scheduler.name, list(t.scheduler.decay_epochs), t.scheduler.warmup_epochs) == ("multistep", [82, 123], 0)
    assert cfg.data.name == "cifar100" and list(cfg.data.std) == [0.2023, 0.1994, 0.2010]


def test_multistep_decay_epochs_count_from_the_start_warm_up_included():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = OmegaConf.create(dict(name="multistep", warmup_epochs=1, warmup_lr=0.0, min_lr=0.0, decay_epochs=[2],
                                decay_rate=0.1))
    scheduler = build_scheduler(optimizer, cfg, epochs=3, steps_per_epoch=4)
    used = []
    for step in range(1, 13):
        used.append(optimizer.param_groups[0]["lr"])
        scheduler.step_update(step)
    assert used[0] == 0.0 and used[3] < 0.1  # warming up in epoch 1
    assert used[4:8] == pytest.approx([0.1] * 4) and used[8:] == pytest.approx([0.01] * 4)


def test_the_abn_recipe_composes_to_its_official_settings_and_schedule(compose_train):
    """ABN's cifar.py multiplies the lr by gamma at the start of each 0-based epoch in --schedule
    (150 225): lr 0.1 for epochs 0-149, 0.01 for 150-224, 0.001 for 225-299, as its published log shows."""
    cfg = compose_train(["experiment=abn_cifar100"])
    t = cfg.trainer
    assert (t.epochs, t.batch_size, t.drop_last, t.optimizer.lr, t.optimizer.momentum, t.optimizer.weight_decay) == \
        (300, 128, False, 0.1, 0.9, 1e-4)
    assert t.optimizer.nesterov is False and t.optimizer.decay_norm_and_bias is True
    assert cfg.data.name == "cifar100" and list(cfg.data.mean) == [0.4914, 0.4822, 0.4465]
    assert list(cfg.data.std) == [0.2023, 0.1994, 0.2010]
    assert cfg.data.crop_padding == 4 and cfg.data.augment is None and t.mixup.mixup_alpha == 0.0

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=t.optimizer.lr)
    spe = 2
    scheduler = build_scheduler(optimizer, t.scheduler, epochs=t.epochs, steps_per_epoch=spe)
    lr, used = t.optimizer.lr, []
    for epoch in range(t.epochs):  # cifar.py: adjust_learning_rate(optimizer, epoch) before each epoch
        if epoch in (150, 225):
            lr *= 0.1
        for step in range(epoch * spe + 1, (epoch + 1) * spe + 1):
            used.append((optimizer.param_groups[0]["lr"], lr))
            scheduler.step_update(step)
    assert all(ours == pytest.approx(official) for ours, official in used)


@pytest.mark.parametrize("overrides, expected", [
    (["trainer.optimizer.lr_base=0.1", "trainer.batch_size=64"], 0.1 * 64 / 256),  # sgd: linear
    (["trainer.optimizer.lr_base=0.1", "trainer.batch_size=64", "trainer.optimizer.name=adamw"], 0.1 * 0.5),  # sqrt
    (["trainer.optimizer.lr_base=0.1", "trainer.batch_size=64", "trainer.optimizer.lr_base_scale=sqrt"], 0.05),
    (["trainer.optimizer.lr_base=0.2", "trainer.batch_size=512", "trainer.optimizer.lr_base_size=128"], 0.8),
    (["trainer.optimizer.lr_base=0.1", "trainer.batch_size=64", "trainer.accumulate_steps=2"], 0.1 * 128 / 256),
    (["trainer.optimizer.lr=0.03"], 0.03),  # lr_base null: lr as given
])
def test_lr_base_sets_the_lr_the_run_records_and_the_optimiser_starts_from(compose_train, overrides, expected, caplog):
    """timm's --lr-base rule: lr = lr_base x global batch / lr_base_size (sqrt of the ratio for adaptive
    optimizers under 'auto'), resolved once into the run's config, so metrics.json, HParams and the optimiser
    all hold that one number."""
    import logging

    from attn_bench.commands.train.spec import resolve_spec
    from attn_bench.models import build_model
    from attn_bench.training.optim import build_optimizer

    cfg = compose_train(overrides)
    with caplog.at_level(logging.INFO, logger="attn_bench"):
        spec = resolve_spec(cfg)
    assert spec["config"]["trainer"]["optimizer"]["lr"] == pytest.approx(expected)
    assert ("lr_base" in caplog.text) == any("lr_base=" in o for o in overrides)
    optimizer = build_optimizer(build_model("resnet18", "none", 10), cfg.trainer.optimizer)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(expected)] * len(optimizer.param_groups)
    assert resolve_spec(cfg)["config"] == spec["config"]  # resolving again (a resume, a launcher) changes nothing


@pytest.mark.parametrize("override, message", [
    ("trainer.optimizer.lr_base=-1", "trainer.optimizer.lr_base must be positive (null = use lr), got -1"),
    ("trainer.optimizer.lr_base_size=0", "trainer.optimizer.lr_base_size must be a positive integer, got 0"),
    ("trainer.optimizer.lr_base_scale=cube", "unknown trainer.optimizer.lr_base_scale 'cube'; valid choices: auto, linear, sqrt"),
])
def test_bad_lr_base_settings_are_one_line(compose_train, override, message):
    from attn_bench.commands.train.spec import resolve_spec
    from attn_bench.errors import ConfigError

    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        resolve_spec(compose_train([override]))


def test_step_drops_the_lr_every_step_epochs_from_the_start():
    values = lrs("step")  # step_epochs=2, decay_rate 0.1, 10 updates per epoch, 1 warm-up epoch
    assert values[4] == pytest.approx(0.05) and values[9] == pytest.approx(0.1)  # warm-up, then the base lr
    assert values[18] == pytest.approx(0.1) and values[19] == pytest.approx(0.01)  # epoch 3's updates: x 0.1
    assert values[38] == pytest.approx(0.01) and values[39] == pytest.approx(0.001)  # epoch 5's: x 0.01
    assert lrs("multistep")[19] == values[19]  # the same epoch boundary as multistep's


def test_plateau_decays_when_the_top1_stops_rising_after_patience_epochs_and_its_state_resumes():
    def schedule(patience):
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([{"params": [param]}, {"params": [torch.nn.Parameter(torch.zeros(1))],
                                                           "lr_scale": 0.5}], lr=0.1)
        cfg = OmegaConf.create(dict(name="plateau", warmup_epochs=1, warmup_lr=0.0, min_lr=0.0, decay_rate=0.1,
                                    patience_epochs=patience))
        return optimizer, build_scheduler(optimizer, cfg, epochs=6, steps_per_epoch=10)

    optimizer, scheduler = schedule(patience=1)
    assert [g["lr"] for g in optimizer.param_groups] == [0.0, 0.0]  # the warm-up's start
    seen = []
    for epoch, top1 in enumerate([10.0, 20.0, 20.0, 20.0, 30.0, 30.0]):
        for step in range(epoch * 10 + 1, epoch * 10 + 11):
            scheduler.step_update(step)
        seen.append([g["lr"] for g in optimizer.param_groups])
        scheduler.step_epoch(top1)
        if epoch == 2:  # a checkpoint here: a fresh scheduler given its state goes on identically
            state, lrs_now = scheduler.state_dict(), [g["lr"] for g in optimizer.param_groups]
    # epoch 3 (20 = no gain, 1st bad epoch): same; epoch 4 (2nd bad > patience 1): x 0.1; 30 resets the count
    assert seen == [[0.1, 0.05], [0.1, 0.05], [0.1, 0.05], [0.1, 0.05], [pytest.approx(0.01), pytest.approx(0.005)],
                    [pytest.approx(0.01), pytest.approx(0.005)]]
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.01), pytest.approx(0.005)]
    fresh_optimizer, fresh = schedule(patience=1)
    fresh.load_state_dict(state)
    for group, lr in zip(fresh_optimizer.param_groups, lrs_now):  # the optimizer's own state dict holds its lrs
        group["lr"] = lr
    for epoch, top1 in ((3, 20.0), (4, 30.0), (5, 30.0)):
        for step in range(epoch * 10 + 1, epoch * 10 + 11):
            fresh.step_update(step)
        fresh.step_epoch(top1)
    assert [g["lr"] for g in fresh_optimizer.param_groups] == [pytest.approx(0.01), pytest.approx(0.005)]
    assert fresh.state_dict()["plateau"]["num_bad_epochs"] == scheduler.state_dict()["plateau"]["num_bad_epochs"]


@pytest.mark.parametrize("override, message", [
    ("trainer.scheduler.step_epochs=0", "trainer.scheduler.step_epochs must be positive, got 0"),
    ("trainer.scheduler.patience_epochs=-1", "trainer.scheduler.patience_epochs must be >= 0, got -1"),
    ("trainer.scheduler.decay_rate=2", "trainer.scheduler.decay_rate must be in (0, 1], got 2"),
])
def test_bad_step_and_plateau_settings_are_one_line(compose_train, override, message):
    from attn_bench.commands.train.spec import resolve_spec
    from attn_bench.errors import ConfigError

    name = "plateau" if "patience" in override else "step"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        resolve_spec(compose_train([f"trainer.scheduler.name={name}", override]))
