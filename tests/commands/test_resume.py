"""Exact resume: a run killed at any point and started again ends exactly like an uninterrupted one."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from attn_bench.errors import ConfigError
from attn_bench.commands.train import run_training

DETERMINISTIC = ["trainer.deterministic=true", "trainer.epochs=3", "trainer.checkpoint_every_steps=3",
                 "data.train_size=600", "data.test_size=200", "trainer.batch_size=40"]


def _results(metrics):
    keys = ("epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "eval_top5")
    return [{k: h[k] for k in keys} for h in metrics["history"]]


def _weights(run_dir):
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from conftest import TINY_TRAIN, _compose_train

    run_dir = tmp_path_factory.mktemp("straight")
    return run_dir, run_training(_compose_train(TINY_TRAIN + DETERMINISTIC), run_dir)


def _kill_mid_run(tmp_path, overrides):
    """Start the CLI, SIGKILL it once a mid-epoch checkpoint exists; return the run directory."""
    run_dir = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = [sys.executable, "-m", "attn_bench", *overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            ckpt = run_dir / "last.pt"
            if ckpt.exists():
                state = torch.load(ckpt, weights_only=True)
                if state["epoch"] >= 1 and state["batch"] > 0:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted: " + proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return run_dir


def test_killed_run_resumes_to_identical_metrics_and_weights(uninterrupted, tmp_path, monkeypatch):
    from conftest import TINY_TRAIN, _compose_train

    from attn_bench.training.trainer import Trainer

    straight_dir, straight = uninterrupted
    overrides = TINY_TRAIN + DETERMINISTIC
    run_dir = _kill_mid_run(tmp_path, overrides)
    interrupted_at = torch.load(run_dir / "last.pt", weights_only=True)
    assert not (run_dir / "metrics.json").exists() or "completed" not in (run_dir / "metrics.json").read_text()

    steps_run = []
    original_step = Trainer._train_step
    monkeypatch.setattr(Trainer, "_train_step", lambda self, *a: steps_run.append(1) or original_step(self, *a))
    resumed = run_training(_compose_train(overrides), run_dir)
    assert resumed["status"] == "completed"
    assert _results(resumed) == _results(straight)
    # it continued from the checkpoint rather than starting over
    assert 0 < len(steps_run) == straight["steps"] - interrupted_at["step"]
    for name, tensor in _weights(straight_dir).items():
        assert torch.equal(tensor, _weights(run_dir)[name]), name


def test_corrupt_checkpoint_is_named_in_one_line(tmp_path, compose_train, tiny_train):
    from attn_bench.data.identity import dataset_identity
    from attn_bench.rundir import start_run

    cfg = compose_train(tiny_train)
    start_run(tmp_path, cfg, dataset_identity(cfg.data))  # config.yaml and dataset.json, as a run writes them
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
    from conftest import TINY_TRAIN

    with pytest.raises(ConfigError, match="different config.*model.attn: 'none' -> 'se'"):
        run_training(compose_train(TINY_TRAIN + DETERMINISTIC + ["model.attn=se"]), run_dir)
    assert (run_dir / "last.pt").read_bytes() == before


def test_time_based_checkpoints_resume_exactly(uninterrupted, tmp_path):
    """``checkpoint_every_minutes`` (here: at every sync point) checkpoints mid-epoch, and a run killed
    after one ends exactly like the uninterrupted run."""
    from conftest import TINY_TRAIN, _compose_train

    straight_dir, straight = uninterrupted
    overrides = [o for o in TINY_TRAIN + DETERMINISTIC if not o.startswith("trainer.checkpoint_every_steps")]
    overrides += ["trainer.checkpoint_every_steps=0", "trainer.checkpoint_every_minutes=1e-9"]
    run_dir = _kill_mid_run(tmp_path, overrides)
    assert torch.load(run_dir / "last.pt", weights_only=True)["batch"] > 0  # a mid-epoch, time-based checkpoint
    resumed = run_training(_compose_train(overrides), run_dir)
    assert _results(resumed) == _results(straight)
    for name, tensor in _weights(straight_dir).items():
        assert torch.equal(tensor, _weights(run_dir)[name]), name
