"""One run on two processes with torchrun and the gloo backend (CPU)."""
import json
import os
import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def free_port() -> int:
    """A port nothing listens on now (a fixed one collides with any other run on the machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_processes_train_one_run(tmp_path):
    run_dir = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
            "-m", "attn_bench", "data.train_size=2000", "data.test_size=500", "trainer.epochs=4",
            "trainer.batch_size=50", "trainer.scheduler.warmup_epochs=0.5", "trainer.progress=false",
            f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["world_size"] == 2
    # global batch 50 = 25 per rank; 2000 images -> 40 steps per epoch, as in a single process
    assert metrics["steps"] == 4 * 40
    assert all(h["eval_images"] == 500 for h in metrics["history"]), "evaluation gathered over both ranks"
    assert metrics["final"]["top1"] > 40.0
    # only rank 0 writes: one event file, one "done" line
    assert len(list(run_dir.glob("events.out.tfevents*"))) == 1
    assert (proc.stdout + proc.stderr).count("done: top-1") == 1
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert len(events.Scalars("eval/top1")) == 4
