"""One run on two processes with torchrun and the gloo backend (CPU): sharding, uneven evaluation,
resume after a kill, and one rank diverging."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def free_port() -> int:
    """A port nothing listens on now (a fixed one collides with any other run on the machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FAULT_AT = Path(__file__).resolve().parents[1] / "fault_at.py"
# 15 steps an epoch at a global batch of 40 (20 per rank); 103 test images: 52 on rank 0, 51 on rank 1
SMALL = ["data.train_size=600", "data.test_size=103", "trainer.epochs=2", "trainer.batch_size=40",
         "trainer.checkpoint_every_steps=3", "trainer.deterministic=true", "trainer.progress=false",
         "trainer.scheduler.warmup_epochs=0.5", "measure_cost=false", "device=cpu"]


def torchrun(tmp_path: Path, run_dir: Path, *target: str, overrides=SMALL) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
            *target, *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def straight_ddp(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ddp")
    run_dir = tmp_path / "straight"
    proc = torchrun(tmp_path, run_dir, "-m", "attn_bench")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, json.loads((run_dir / "metrics.json").read_text()), proc


def test_torchrun_two_processes_train_one_run(straight_ddp):
    run_dir, metrics, proc = straight_ddp
    assert metrics["status"] == "completed" and metrics["world_size"] == 2
    # global batch 40 = 20 per rank; 600 images -> 15 steps per epoch, as in a single process
    assert metrics["steps"] == 2 * 15
    assert metrics["final"]["top1"] > 15.0  # chance is 10 %; 22.3 % on this VM (2 short epochs)
    # only rank 0 writes: one event file, one "done" line
    assert len(list(run_dir.glob("events.out.tfevents*"))) == 1
    assert (proc.stdout + proc.stderr).count("done: top-1") == 1
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert len(events.Scalars("eval/top1")) == 2


def test_ddp_evaluation_counts_an_uneven_set_once(straight_ddp, compose_train):
    """103 images on 2 ranks: the gathered top-1 is exactly a single process's on the same weights."""
    from attn_bench.data.loaders import build_loaders
    from attn_bench.models import model_from_config

    run_dir, metrics, _ = straight_ddp
    assert [h["eval_images"] for h in metrics["history"]] == [103, 103]
    cfg = compose_train(SMALL)
    model = model_from_config(cfg.model, cfg.data.num_classes, cfg.data.img_size).model
    model.load_state_dict(torch.load(run_dir / "last.pt", weights_only=True)["model"])
    _, eval_loader = build_loaders(cfg.data, 40, torch.device("cpu"), 0, True)
    with torch.no_grad():
        correct = sum(int((model.eval()(x).argmax(1) == y).sum()) for x, y in eval_loader)
    assert metrics["final"]["top1"] == pytest.approx(100.0 * correct / 103, abs=1e-9)
    assert 0 < correct < 103


@pytest.mark.slow  # 3 torchrun launches; exact resume is tested in-process in tests/commands/test_resume.py
def test_ddp_run_killed_mid_epoch_resumes_identically(straight_ddp, tmp_path):
    straight_dir, straight, _ = straight_ddp
    run_dir = tmp_path / "killed"
    killed = torchrun(tmp_path, run_dir, str(FAULT_AT), "mid_epoch")
    assert killed.returncode != 0 and not (run_dir / "metrics.json").exists()
    at = torch.load(run_dir / "last.pt", weights_only=True)
    assert (at["epoch"], at["batch"]) == (1, 3)
    resumed = torchrun(tmp_path, run_dir, "-m", "attn_bench")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout + resumed.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    keys = ("epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "eval_top5", "eval_images")
    assert [{k: h[k] for k in keys} for h in metrics["history"]] == [{k: h[k] for k in keys} for h in straight["history"]]
    final, last = (torch.load(d / "last.pt", weights_only=True)["model"] for d in (straight_dir, run_dir))
    assert all(torch.equal(final[name], last[name]) for name in final)


def test_one_rank_diverging_stops_every_rank_at_that_step(tmp_path):
    """Only rank 1 sees a NaN loss (step 5); rank 0 learns it at the next sync point and records it."""
    run_dir = tmp_path / "nan"
    proc = torchrun(tmp_path, run_dir, str(FAULT_AT), "nan_on_rank1",
                    overrides=SMALL + ["trainer.log_every_steps=1"])
    assert proc.returncode != 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["failed_at"] == {"epoch": 1, "step": 5}, metrics
    assert "loss became nan at epoch 1, step 5" in metrics["reason"]


def _local_submitit(tmp_path: Path, *extra: str) -> subprocess.Popen:
    """One job of hydra/launcher=local (submitit's local executor) with 2 tasks: one run of 2 ranks."""
    args = [sys.executable, "-m", "attn_bench", "-m", "hydra/launcher=local", "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.timeout_min=10", "seed=0", *SMALL, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", ATTN_BENCH_OUTPUTS=str(tmp_path / "outputs"))
    return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(metrics: dict) -> list[dict]:
    keys = ("epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "eval_top5")
    return [{k: h[k] for k in keys} for h in metrics["history"]]


@pytest.mark.slow  # 12 s; DDP by torchrun and the submitit launcher each run in the default suite
def test_a_submitit_job_of_two_tasks_is_one_ddp_run_like_torchrun(straight_ddp, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = _local_submitit(tmp_path)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    (found,) = (tmp_path / "outputs" / "sweeps").glob("*/*/metrics.json")  # one run directory
    metrics = json.loads(found.read_text())
    assert metrics["status"] == "completed" and metrics["world_size"] == 2
    assert _results(metrics) == _results(straight_ddp[1])  # the same numbers as torchrun's two ranks
    assert len(list(found.parent.glob("events.out.tfevents*"))) == 1


@pytest.mark.slow  # through submitit's requeue (21 s); the signal -> checkpoint -> resume path is tested in test_resume.py
def test_slurms_warning_signal_checkpoints_requeues_and_the_job_resumes_exactly(straight_ddp, tmp_path):
    """The warning SLURM sends before a time limit (SIGUSR2), sent here to both tasks of a local
    submitit job: a checkpoint at the next step, a requeue, and a resumed run that ends exactly like
    the uninterrupted torchrun run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import time

    # no step or time checkpoints: the first last.pt is epoch 1's, and only the signal can save mid-epoch
    proc = _local_submitit(tmp_path, "trainer.checkpoint_every_steps=0", "trainer.checkpoint_every_minutes=0")
    deadline = time.monotonic() + 300
    while not list((tmp_path / "outputs").glob("sweeps/*/*/last.pt")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    listing = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    tasks = [int(line.split()[0]) for line in listing.splitlines()
             if "submitit.core._submit" in line and str(tmp_path) in line]
    assert len(tasks) == 2, listing
    for pid in tasks:
        os.kill(pid, signal.SIGUSR2)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    (found,) = (tmp_path / "outputs" / "sweeps").glob("*/*/metrics.json")
    metrics = json.loads(found.read_text())
    assert metrics["status"] == "completed" and metrics["world_size"] == 2
    (resume,) = metrics["resumed_from"]  # requeued once, from the checkpoint the signal caused
    assert resume["epoch"] == 1 and resume["batch"] > 0  # mid-epoch 2: the signal's own checkpoint
    assert _results(metrics) == _results(straight_ddp[1])


@pytest.mark.parametrize("launcher, message", [
    (["hydra.launcher.tasks_per_node=2", "hydra.launcher.gpus_per_node=1"],
     "tasks_per_node=2 is more than hydra.launcher.gpus_per_node=1"),
    (["hydra.launcher.tasks_per_node=3", "trainer.batch_size=64"], "trainer.batch_size 64 is not divisible by the 3"),
])
def test_a_job_its_ranks_cannot_share_is_refused_in_one_line_before_submission(tmp_path, launcher, message,
                                                                                attn_bench_cli):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = attn_bench_cli("-m", "hydra/launcher=local", *launcher, "seed=0,1")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("outputs/sweeps/*/.submitit"))  # nothing was submitted
