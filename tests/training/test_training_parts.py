"""Small parts of training: weight-decay groups, the schedule, device checks."""
import pytest
import torch
from omegaconf import OmegaConf

from attn_bench import build_model
from attn_bench.errors import ConfigError
from attn_bench.devices import resolve_device
from attn_bench.training.optim import build_optimizer, build_scheduler


def _sgd(**kw):
    return OmegaConf.create(dict(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4) | kw)


def test_weight_decay_skips_norm_and_bias_parameters():
    model = build_model("resnet18", "se", num_classes=10)
    optimizer = build_optimizer(model, _sgd())
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        expect_decay = p.ndim > 1  # conv and linear weights only; BN weights/biases and all biases are skipped
        assert (id(p) in decayed) == expect_decay, name
    assert all(g["nesterov"] for g in optimizer.param_groups)
    assert not any(g["nesterov"] for g in build_optimizer(model, _sgd(nesterov=False)).param_groups)


def test_adamw_is_available():
    model = build_model("resnet18", num_classes=10)
    optimizer = build_optimizer(model, OmegaConf.create(dict(name="adamw", lr=1e-3, weight_decay=0.05)))
    assert type(optimizer).__name__ == "AdamW"


def test_cosine_schedule_warms_up_linearly_then_decays_to_min_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    cfg = OmegaConf.create(dict(name="cosine", warmup_epochs=1, warmup_lr=0.0, min_lr=0.0))
    scheduler = build_scheduler(optimizer, cfg, epochs=5, steps_per_epoch=10)
    lrs = []
    for step in range(1, 51):
        scheduler.step_update(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[4] == pytest.approx(0.05)  # halfway through the 10 warm-up steps
    assert lrs[9] == pytest.approx(0.1)   # peak at the end of warm-up
    assert lrs[29] == pytest.approx(0.05, abs=1e-3)  # cosine half-way through the remaining 40 steps
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_more_processes_than_gpus_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="more processes per node than the 2 visible GPU"):
        resolve_device("auto", local_rank=2)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)


def test_cuda_requested_without_cuda_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_the_training_loss_is_cross_entropy_with_the_configured_label_smoothing(compose_train):
    """The criterion on a fixed batch equals torch's own cross entropy with label_smoothing=0.1 (and not
    the unsmoothed one)."""
    import torch.nn.functional as F

    from attn_bench.precision import resolve_precision
    from attn_bench.training.distributed import DistInfo
    from attn_bench.training.trainer import Trainer

    cfg = compose_train(["trainer.label_smoothing=0.1"]).trainer
    trainer = Trainer(torch.nn.Linear(2, 10), None, None, [None] * 3, [], cfg, torch.device("cpu"), DistInfo(),
                      None, precision=resolve_precision("fp32"), on_log=lambda *a: None, num_classes=10)
    logits, target = torch.randn(8, 10, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 10
    loss = trainer.criterion(logits, target)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, target, label_smoothing=0.1).item(), rel=1e-6)
    assert loss.item() != pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-3)


def _fp16_trainer(compose_train, model, *overrides, grad_scaler=True):
    """A trainer of ``model`` with fp16 autocast and loss scaling on the CPU: resolve_precision refuses
    fp16 off CUDA for users (slow kernels), but torch runs both here, so the scaler logic is testable."""
    from types import SimpleNamespace

    from attn_bench.precision import Precision
    from attn_bench.training.distributed import DistInfo
    from attn_bench.training.trainer import Trainer

    cfg = compose_train(["trainer.label_smoothing=0", *overrides]).trainer
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    precision = Precision("fp16", torch.float16, grad_scaler)
    trainer = Trainer(model, optimizer, SimpleNamespace(step_update=lambda step: None, state_dict=dict), [None] * 3, [], cfg,
                      torch.device("cpu"), DistInfo(), None, precision=precision, on_log=lambda *a: None,
                      num_classes=4)
    trainer.watch_divergence_from(0)
    return trainer


def test_an_fp16_step_whose_gradients_overflow_is_skipped_and_the_loss_scale_halves(compose_train):
    from attn_bench.training.trainer import TrainState

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    trainer = _fp16_trainer(compose_train, model)
    before = [p.detach().clone() for p in model.parameters()]
    huge = torch.full((8, 3), 1e3)  # fp16 gradients of 65536 x loss overflow
    trainer._train_step(huge, torch.arange(8) % 4, TrainState())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "an overflowing step was applied"
    assert trainer.scaler.get_scale() == 2.0 ** 15
    trainer._train_step(torch.randn(8, 3) * 1e-3, torch.arange(8) % 4, TrainState())
    assert not torch.equal(before[0], model.weight) and torch.isfinite(model.weight).all()
    assert trainer.scaler.get_scale() == 2.0 ** 15
    assert trainer.state_dict(TrainState(), model)["scaler"]["scale"] == 2.0 ** 15  # what a resume restores


def test_fp16_gradient_clipping_acts_on_the_true_gradients_not_the_scaled_ones(compose_train):
    from attn_bench.training.trainer import TrainState

    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.arange(16) % 4
    scaled, plain = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    plain.load_state_dict(scaled.state_dict())
    start = scaled.weight.detach().clone()
    clip = ["trainer.clip_grad=0.01", "trainer.clip_mode=norm"]
    _fp16_trainer(compose_train, scaled, *clip)._train_step(x, y, TrainState())
    _fp16_trainer(compose_train, plain, *clip, grad_scaler=False)._train_step(x, y, TrainState())
    step = (scaled.weight - start).norm().item()
    assert 0 < step <= 0.1 * 0.01 * 1.01  # lr x the clipped norm, at most (weight and bias share it)
    torch.testing.assert_close(scaled.weight, plain.weight, rtol=0, atol=1e-4)
