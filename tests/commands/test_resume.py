"""Exact resume: a run killed at any point and started again ends exactly like an uninterrupted one."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attn_bench.errors import ConfigError
from attn_bench.commands.train import run_training
from conftest import TINY_TRAIN, _compose_train

DETERMINISTIC = ["trainer.deterministic=true", "trainer.epochs=3", "trainer.checkpoint_every_steps=3",
                 "data.train_size=150", "data.test_size=50", "trainer.batch_size=10", "measure_cost=false",
                 "device=cpu"]  # bit-identity is claimed on the CPU; a GPU kernel may differ run to run


def _results(metrics):
    keys = ("epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "eval_top5")
    return [{k: h[k] for k in keys} for h in metrics["history"]]


def _weights(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    return run_dir, run_training(_compose_train(TINY_TRAIN + DETERMINISTIC), run_dir)


FAULT_AT = Path(__file__).resolve().parents[1] / "fault_at.py"


def _kill_at(point: str, run_dir: Path, overrides: list[str]) -> Path:
    """Run the CLI until it SIGKILLs itself at ``point`` (see fault_at.py); return the run directory."""
    args = [sys.executable, str(FAULT_AT), point, *overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(args, cwd=run_dir.parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"not killed at {point}: {proc.stderr[-3000:]}"
    return run_dir


def _resume_counting_steps(overrides: list[str], run_dir: Path, monkeypatch) -> tuple[dict, int]:
    from attn_bench.training.trainer import Trainer

    steps_run = []
    original_step = Trainer._train_step
    monkeypatch.setattr(Trainer, "_train_step", lambda self, *a: steps_run.append(1) or original_step(self, *a))
    resumed = run_training(_compose_train(overrides), run_dir)
    monkeypatch.undo()
    return resumed, len(steps_run)


def _assert_same_run(straight_dir: Path, straight: dict, run_dir: Path, resumed: dict) -> None:
    assert resumed["status"] == "completed"
    assert _results(resumed) == _results(straight)
    for name, tensor in _weights(straight_dir).items():
        assert torch.equal(tensor, _weights(run_dir)[name]), name
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["epoch"] == straight["best"]["epoch"]
    for name, tensor in torch.load(straight_dir / "best.pt", weights_only=True)["model"].items():
        assert torch.equal(tensor, best["model"][name]), f"best.pt {name}"


# where each kill point leaves last.pt: (epochs done, batches done in the next epoch);
# 15 batches an epoch, a checkpoint every 3 steps
KILL_POINTS = {
    "mid_epoch": (1, 3),  # the first mid-epoch checkpoint of epoch 2
    "epoch_end": (1, 0),
    "before_last": (0, 12),  # epoch 1's best.pt written, last.pt still its last mid-epoch checkpoint
    "eval": (1, 12),  # epoch 2 trained, its evaluation cut short: last.pt is epoch 2's last checkpoint
    "before_metrics": (3, 0),  # everything done but metrics.json
}


# where each kill of one run leaves last.pt, when every resume of it is killed at the next point
KILL_CHAIN = [
    ("epoch_end", (1, 0)),
    ("mid_epoch", (1, 3)),  # the resumed run's first mid-epoch checkpoint
    ("eval", (2, 12)),  # its second evaluation is epoch 3's: last.pt is epoch 3's last mid-epoch checkpoint
    ("before_metrics", (3, 0)),
]


def test_a_run_killed_at_every_point_in_turn_resumes_to_identical_metrics_and_weights(uninterrupted, tmp_path,
                                                                                     monkeypatch):
    """One run, SIGKILLed at each point of KILL_CHAIN in turn (each resume is killed at the next), then
    resumed to the end: the same history, weights and best.pt as the uninterrupted run. Each kill
    point once, in a quarter of the time of one run per point (those are the slow test below)."""
    straight_dir, straight = uninterrupted
    overrides = TINY_TRAIN + DETERMINISTIC
    run_dir, reached = tmp_path / "killed", 0
    for point, where in KILL_CHAIN:
        _kill_at(point, run_dir, overrides)
        interrupted_at = torch.load(run_dir / "last.pt", weights_only=True)
        assert (interrupted_at["epoch"], interrupted_at["batch"]) == where, point
        assert interrupted_at["step"] > reached, f"the run killed at {point} started over"
        reached = interrupted_at["step"]
        assert not (run_dir / "metrics.json").exists()
    resumed, steps_run = _resume_counting_steps(overrides, run_dir, monkeypatch)
    _assert_same_run(straight_dir, straight, run_dir, resumed)
    assert steps_run == straight["steps"] - reached == 0
    assert [r["step"] for r in resumed["resumed_from"]] == [15, 18, 42, 45]


@pytest.mark.slow  # one run per point (about 20 s each); the chain above kills at each of them in the default run
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_anywhere_resumes_to_identical_metrics_and_weights(point, uninterrupted, tmp_path, monkeypatch):
    straight_dir, straight = uninterrupted
    overrides = TINY_TRAIN + DETERMINISTIC
    run_dir = _kill_at(point, tmp_path / "killed", overrides)
    interrupted_at = torch.load(run_dir / "last.pt", weights_only=True)
    assert (interrupted_at["epoch"], interrupted_at["batch"]) == KILL_POINTS[point]
    assert not (run_dir / "metrics.json").exists()

    resumed, steps_run = _resume_counting_steps(overrides, run_dir, monkeypatch)
    _assert_same_run(straight_dir, straight, run_dir, resumed)
    # it continued from the checkpoint rather than starting over
    assert steps_run == straight["steps"] - interrupted_at["step"]


def test_corrupt_checkpoint_is_named_in_one_line(tmp_path, compose_train, tiny_train):
    from attn_bench.commands.train.spec import resolve_spec
    from attn_bench.data.identity import dataset_identity
    from attn_bench.rundir import start_run

    cfg = compose_train(tiny_train)
    start_run(tmp_path, cfg, {**resolve_spec(cfg, torch.device("cpu")), "data": dataset_identity(cfg.data)})  # as a run does
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"checkpoint '.*last.pt' is corrupt"):
        run_training(cfg, tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == b"not a checkpoint", "nothing overwritten"


def test_resuming_with_another_model_is_refused_and_nothing_is_overwritten(uninterrupted, tmp_path, compose_train):
    import shutil

    straight_dir, _ = uninterrupted
    run_dir = tmp_path / "copy"
    shutil.copytree(straight_dir, run_dir)
    (run_dir / "metrics.json").unlink()  # looks interrupted
    before = (run_dir / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="different config.*model.attn: 'none' -> 'se'"):
        run_training(compose_train(TINY_TRAIN + DETERMINISTIC + ["model.attn=se"]), run_dir)
    assert (run_dir / "last.pt").read_bytes() == before


def test_time_based_checkpoints_resume_exactly(uninterrupted, tmp_path):
    """``checkpoint_every_minutes`` (here: at every sync point) checkpoints mid-epoch, and a run killed
    after one ends exactly like the uninterrupted run."""
    straight_dir, straight = uninterrupted
    overrides = [o for o in TINY_TRAIN + DETERMINISTIC if not o.startswith("trainer.checkpoint_every_steps")]
    overrides += ["trainer.checkpoint_every_steps=0", "trainer.checkpoint_every_minutes=1e-9"]
    run_dir = _kill_at("mid_epoch", tmp_path / "killed", overrides)
    assert torch.load(run_dir / "last.pt", weights_only=True)["batch"] > 0  # a mid-epoch, time-based checkpoint
    resumed = run_training(_compose_train(overrides), run_dir)
    _assert_same_run(straight_dir, straight, run_dir, resumed)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])  # 2: see test_loaders
def test_the_dataloader_path_resumes_mid_epoch_exactly(workers, tmp_path, monkeypatch):
    """``data.loader=torch`` (PIL transforms, DataLoader workers): augmentation and order survive a kill."""
    from conftest import make_imagefolder

    root = make_imagefolder(tmp_path / "images", per_class=24, noise=True)
    overrides = ["data=imagefolder", f"data.root={root}", "data.num_classes=2", "data.img_size=32",
                 "data.loader=torch", f"data.num_workers={workers}", "model=resnet18_tiny", "trainer=quick",
                 "trainer.epochs=2", "trainer.batch_size=8", "trainer.checkpoint_every_steps=2",
                 "trainer.deterministic=true", "trainer.progress=false", "measure_cost=false", "device=cpu"]
    straight_dir = tmp_path / "straight"
    straight = run_training(_compose_train(overrides), straight_dir)
    run_dir = _kill_at("mid_epoch", tmp_path / "killed", overrides)
    interrupted_at = torch.load(run_dir / "last.pt", weights_only=True)
    assert (interrupted_at["epoch"], interrupted_at["batch"]) == (1, 2)

    resumed, steps_run = _resume_counting_steps(overrides, run_dir, monkeypatch)
    _assert_same_run(straight_dir, straight, run_dir, resumed)
    assert steps_run == straight["steps"] - interrupted_at["step"] == 4


def test_the_clusters_stop_signal_checkpoints_at_the_next_step_and_the_requeued_run_ends_identically(
        uninterrupted, tmp_path, monkeypatch):
    """SLURM's time-limit warning (SIGUSR2, handled by submitit in its jobs) stops the run at the next
    sync point with a checkpoint of that step; then submitit's handler requeues, and the requeued
    job resumes exactly. Here a stand-in for submitit's handler records the hand-over and exits."""
    from attn_bench.training.trainer import Trainer

    handed_over = []

    def submitit_handler(signum, frame):  # submitit: checkpoint the callable, requeue, exit
        handed_over.append(signum)
        raise SystemExit(144)

    original_step = Trainer._train_step

    def step_then_signal(self, x, y, state):
        out = original_step(self, x, y, state)
        if state.step == 7:  # not a multiple of checkpoint_every_steps=3: only the signal saves here
            signal.raise_signal(signal.SIGUSR2)
        return out

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        monkeypatch.setattr(Trainer, "_train_step", step_then_signal)
        with pytest.raises(SystemExit) as stopped:
            run_training(_compose_train(TINY_TRAIN + DETERMINISTIC), tmp_path)
        monkeypatch.undo()
        assert stopped.value.code == 144 and handed_over == [signal.SIGUSR2]
        assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 7
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # given back after the run
        record = json.loads((tmp_path / "metrics.json").read_text())
        assert record["status"] == "failed" and record["reason"].startswith("preempted")
        resumed, steps = _resume_counting_steps(TINY_TRAIN + DETERMINISTIC, tmp_path, monkeypatch)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert steps == 45 - 7
    _assert_same_run(*uninterrupted, tmp_path, resumed)
    assert handed_over == [signal.SIGUSR2]  # nothing was handed over twice


def test_without_a_scheduler_sigusr2_keeps_its_default_meaning():
    from attn_bench.training import preemption

    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert preemption.install() is False and signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL


EMA = ["trainer.ema.enabled=true", "trainer.ema.decay=0.9"]  # 0.9: the average moves within a few steps


def _stop_at_step(step: int, overrides: list[str], run_dir: Path, monkeypatch) -> None:
    """Run until the cluster's stop signal at ``step`` (see the preemption test above)."""
    from attn_bench.training.trainer import Trainer

    original_step = Trainer._train_step

    def step_then_signal(self, x, y, state):
        out = original_step(self, x, y, state)
        if state.step == step:
            signal.raise_signal(signal.SIGUSR2)
        return out

    def submitit_handler(signum, frame):
        raise SystemExit(144)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        monkeypatch.setattr(Trainer, "_train_step", step_then_signal)
        with pytest.raises(SystemExit):
            run_training(_compose_train(overrides), run_dir)
    finally:
        monkeypatch.undo()
        signal.signal(signal.SIGUSR2, previous)


def test_ema_weights_differ_are_what_final_ema_evaluates_and_resume_exactly(tmp_path, monkeypatch):
    from attn_bench.data.loaders import build_eval_loader
    from attn_bench.models import model_from_config
    from attn_bench.training.trainer import evaluate

    overrides = TINY_TRAIN + DETERMINISTIC + EMA
    straight_dir = tmp_path / "straight"
    straight = run_training(_compose_train(overrides), straight_dir)
    ckpt = torch.load(straight_dir / "last.pt", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in ckpt["ema"].items()}
    assert set(ema) == set(ckpt["model"])
    assert any(not torch.equal(ema[k], ckpt["model"][k]) for k in ema if ema[k].is_floating_point())
    cfg = _compose_train(overrides)
    model = model_from_config(cfg.model, 10, 32).model
    model.load_state_dict(ema)
    stats = evaluate(model, build_eval_loader(cfg.data, 20, torch.device("cpu")), torch.device("cpu"))
    assert stats["eval_top1"] == straight["final_ema"]["top1"]  # final_ema is these weights' score
    assert stats["eval_loss"] == pytest.approx(straight["final_ema"]["loss"], rel=1e-12)
    assert straight["final_ema"]["loss"] != straight["final"]["loss"]  # and not the raw weights'
    assert straight["best_ema"]["epoch"] in (1, 2, 3) and "ema_eval_top1" in straight["history"][0]

    run_dir = tmp_path / "stopped"
    _stop_at_step(20, overrides, run_dir, monkeypatch)
    resumed = run_training(_compose_train(overrides), run_dir)
    _assert_same_run(straight_dir, straight, run_dir, resumed)
    assert [h["ema_eval_top1"] for h in resumed["history"]] == [h["ema_eval_top1"] for h in straight["history"]]
    resumed_ema = torch.load(run_dir / "last.pt", weights_only=True)["ema"]
    for name, tensor in ckpt["ema"].items():
        assert torch.equal(tensor, resumed_ema[name]), name


def test_mixup_and_cutmix_give_soft_targets_and_resume_exactly(tmp_path, monkeypatch):
    from timm.loss import SoftTargetCrossEntropy

    overrides = TINY_TRAIN + DETERMINISTIC + ["trainer.mixup.mixup_alpha=0.8", "trainer.mixup.cutmix_alpha=1.0",
                                              "trainer.label_smoothing=0.1"]
    targets = []
    original = SoftTargetCrossEntropy.forward
    monkeypatch.setattr(SoftTargetCrossEntropy, "forward", lambda self, x, t: targets.append(t) or original(self, x, t))
    straight_dir = tmp_path / "straight"
    straight = run_training(_compose_train(overrides), straight_dir)
    monkeypatch.undo()
    assert len(targets) == 45 and targets[0].shape == (10, 10) and targets[0].dtype.is_floating_point
    mixed = [t for t in targets if (t.max(1).values < 0.9 - 1e-6).any()]  # not one-hot-with-smoothing
    assert mixed and all(torch.allclose(t.sum(1), torch.ones(10)) for t in targets)
    plain = run_training(_compose_train(TINY_TRAIN + DETERMINISTIC + ["trainer.label_smoothing=0.1"]),
                         tmp_path / "plain")
    assert _results(plain) != _results(straight)  # mixing changed what was learned

    run_dir = tmp_path / "stopped"
    _stop_at_step(20, overrides, run_dir, monkeypatch)
    resumed = run_training(_compose_train(overrides), run_dir)
    _assert_same_run(straight_dir, straight, run_dir, resumed)


def test_a_run_with_dropout_resumes_exactly_so_the_global_rng_is_restored(tmp_path, monkeypatch):
    """Dropout draws from torch's global RNG: a resume that did not restore it (the checkpoint's "rng")
    would drop other units after the stop, and the runs would part."""
    small = ("trainer.epochs", "data.train_size", "data.test_size")
    overrides = [o for o in TINY_TRAIN + DETERMINISTIC if not o.startswith(small)]
    overrides += ["trainer.epochs=2", "data.train_size=50", "data.test_size=40", "+model.timm_kwargs.drop_rate=0.5"]
    straight_dir = tmp_path / "straight"
    straight = run_training(_compose_train(overrides), straight_dir)
    without = run_training(_compose_train([o for o in overrides if "drop_rate" not in o]), tmp_path / "no_dropout")
    assert _results(without) != _results(straight)  # the dropout is on, and it changes what is learned
    run_dir = tmp_path / "stopped"
    _stop_at_step(7, overrides, run_dir, monkeypatch)  # 5 steps an epoch: 2 steps into epoch 2
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 7
    resumed = run_training(_compose_train(overrides), run_dir)
    _assert_same_run(straight_dir, straight, run_dir, resumed)


def test_ctrl_c_is_recorded_as_interrupted_and_the_same_command_resumes_it(uninterrupted, tmp_path, monkeypatch):
    from attn_bench.commands.report.collect import load_run
    from attn_bench.training.trainer import Trainer

    straight_dir, straight = uninterrupted
    overrides = TINY_TRAIN + DETERMINISTIC
    step = Trainer._train_step

    def ctrl_c_at_step_20(self, x, y, state):
        if state.step == 20:
            raise KeyboardInterrupt
        return step(self, x, y, state)

    monkeypatch.setattr(Trainer, "_train_step", ctrl_c_at_step_20)
    with pytest.raises(KeyboardInterrupt):
        run_training(_compose_train(overrides), tmp_path / "run")
    monkeypatch.undo()
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["failed_at"] == {"epoch": 1, "step": 20}
    assert "resumes" in record["reason"] and "KeyboardInterrupt" not in record["reason"]
    assert load_run(tmp_path / "run").status == "interrupted"  # the report lists it as such, not as failed
    resumed = run_training(_compose_train(overrides), tmp_path / "run")
    assert resumed["resumed_from"] == [{"epoch": 1, "batch": 3, "step": 18}]
    _assert_same_run(straight_dir, straight, tmp_path / "run", resumed)


def test_the_plateau_schedule_follows_the_eval_top1_and_a_stopped_run_resumes_it_exactly(tmp_path, monkeypatch):
    """trainer.scheduler.name=plateau: after each epoch the lr is multiplied by decay_rate when the epoch's eval
    top-1 did not beat the best so far (patience 0); its counters are in the checkpoint, so a run stopped in
    epoch 2 ends with the same lrs, metrics and weights (without the restored best, epoch 2 would count as a gain)."""
    overrides = TINY_TRAIN + DETERMINISTIC + ["trainer.scheduler.name=plateau", "trainer.scheduler.patience_epochs=0",
                                              "trainer.scheduler.decay_rate=0.5", "trainer.optimizer.lr=0.001",
                                              "trainer.scheduler.warmup_epochs=0"]  # top-1 10.0, 10.0, 10.0 here
    straight_dir = tmp_path / "straight"
    straight = run_training(_compose_train(overrides), straight_dir)
    history, best = straight["history"], float("-inf")
    for before, after in zip(history, history[1:]):
        gained = before["eval_top1"] > best * (1 + 1e-4)  # torch's ReduceLROnPlateau, mode max, threshold rel 1e-4
        best = max(best, before["eval_top1"])
        assert after["lr"] == pytest.approx(before["lr"] * (1 if gained else 0.5))
    assert len({h["lr"] for h in history}) > 1, "no plateau in this run: the test would not test the decay"
    run_dir = tmp_path / "stopped"
    _stop_at_step(20, overrides, run_dir, monkeypatch)  # in epoch 2: its decision needs epoch 1's best, restored
    resumed = run_training(_compose_train(overrides), run_dir)
    _assert_same_run(straight_dir, straight, run_dir, resumed)
    assert [h["lr"] for h in resumed["history"]] == [h["lr"] for h in history]
