"""Sweeps: one process per job, one job per device, failures isolated, finished work never redone."""
import csv
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from attn_bench.config import compose

from attn_bench.sweeps.queue import Job, cpu_slots, gpu_slots, run_queue

TINY = ["data.train_size=150", "data.test_size=50", "trainer.epochs=1", "trainer.batch_size=25",
        "measure_cost=false"]


@pytest.fixture
def sweep(attn_bench_cli):
    """``attn-bench -m ARGS`` with the sweep's parent in this process (its jobs are processes, as always)."""
    return lambda *args, base=TINY: attn_bench_cli("-m", *args, *base)


def sweep_dir(tmp_path) -> Path:
    (found,) = (tmp_path / "outputs" / "sweeps").iterdir()
    return found


def job_metrics(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("*/metrics.json")}


FAULT_AT = Path(__file__).resolve().parents[1] / "fault_at.py"


def overlapping(a, b) -> bool:
    return a["started"] < b["ended"] and b["started"] < a["ended"]


def test_queue_gives_every_job_a_device_and_never_shares_one(tmp_path):
    """Read from the queue's own start / end events, so no assertion depends on how fast jobs run."""
    script = "import os, sys; print(os.environ['CUDA_VISIBLE_DEVICES'])"
    jobs = [Job(i, [], tmp_path / f"job{i}") for i in range(7)]
    busy, events, most_at_once = set(), [], 0

    def on_event(event, job):
        nonlocal most_at_once
        events.append((event, job.index, job.device))
        if event == "start":
            assert job.device not in busy, f"job #{job.index} started on busy device {job.device}"
            busy.add(job.device)
        else:
            busy.remove(job.device)
        most_at_once = max(most_at_once, len(busy))

    run_queue(jobs, gpu_slots(["0", "1", "2"]), lambda job: [sys.executable, "-c", script], on_event)
    assert all(job.status == "completed" for job in jobs)
    assert [job.log_file.read_text().strip() for job in jobs] == [job.device for job in jobs]
    assert {job.device for job in jobs} == {"0", "1", "2"}
    assert most_at_once == 3, "jobs on different devices did not run at the same time"
    assert len(events) == 14 and [e for e, _, _ in events[:3]] == ["start"] * 3
    assert [i for e, i, _ in events if e == "start"] == list(range(7))  # in the sweep's order


def test_a_stop_signal_that_comes_as_a_job_starts_stops_the_sweep(tmp_path, monkeypatch):
    """SIGTERM while Popen starts a job: the queue's handler used to raise KeyboardInterrupt there, where
    logging's fork hook swallowed it, and the sweep went on starting (and finishing) jobs after it. Now no
    job starts after the signal, the running one gets it, and the queue raises KeyboardInterrupt."""
    import threading
    from contextlib import suppress

    from attn_bench.sweeps import queue

    assert threading.current_thread() is threading.main_thread()  # else the signal would reach pytest itself
    started, real_popen = [], subprocess.Popen

    def popen_then_signal(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        with suppress(BaseException):  # code that swallows what a handler raises, as logging's fork hook does
            signal.raise_signal(signal.SIGTERM)
        return started[-1]

    monkeypatch.setattr(queue.subprocess, "Popen", popen_then_signal)
    jobs = [Job(i, [], tmp_path / f"job{i}") for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        run_queue(jobs, cpu_slots(2), lambda job: [sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.undo()
    assert len(started) == 1 and [j.status for j in jobs] == ["running", "pending", "pending"]
    assert started[0].wait(timeout=30) == -signal.SIGTERM


def test_cpu_slots_share_the_cores_and_hide_gpus():
    slots = cpu_slots(2, cores=8)
    assert [s.env for s in slots] == [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "4"}] * 2


def test_gpu_slots_share_the_cores_for_intra_op_threads_unless_the_user_set_them(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [s.env for s in gpu_slots(["0", "3"], cores=16)] == [
        {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "8"}, {"CUDA_VISIBLE_DEVICES": "3", "OMP_NUM_THREADS": "8"}]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert [s.env for s in gpu_slots(["0", "3"], cores=16)] == [{"CUDA_VISIBLE_DEVICES": "0"},
                                                                {"CUDA_VISIBLE_DEVICES": "3"}]


# two epochs of 6 steps, a checkpoint every 2: a job can be killed mid-epoch and resumed bit for bit
RESUMABLE = [o for o in TINY if not o.startswith("trainer.epochs")] + [
    "trainer.epochs=2", "trainer.checkpoint_every_steps=2", "trainer.deterministic=true", "device=cpu"]


def test_sweep_runs_every_job_and_a_rerun_resumes_a_killed_one_and_recomputes_nothing_else(tmp_path, sweep):
    import shutil

    proc = sweep("model.attn=none,se", "seed=0,1", "hydra.launcher.devices=[0,1]", base=RESUMABLE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = sweep_dir(tmp_path)
    metrics = job_metrics(root)
    assert set(metrics) == {"model.attn=none,seed=0", "model.attn=none,seed=1", "model.attn=se,seed=0",
                            "model.attn=se,seed=1"}
    assert all(m["status"] == "completed" for m in metrics.values())
    assert {m["config"]["model"]["attn"] for m in metrics.values()} == {"none", "se"}
    assert {m["device"] for m in metrics.values()} == {f"cpu ({max(1, os.cpu_count() // 2)} threads)"}  # a share each
    for name in metrics:  # a job's log: its training, not the config tree a single run starts with
        log_text = (root / name / "job.log").read_text()
        assert "config (resolved)" not in log_text and "epoch 1/" in log_text, name
    launch = json.loads((root / "sweep_summary.json").read_text())["launches"][-1]
    assert {j["device"] for j in launch["jobs"]} == {"0", "1"}
    for m in metrics.values():  # the summary shows each job's final top-1, then what to run next
        assert f"{m['final']['top1']:.2f}" in proc.stderr
    assert f"attn-bench report {root}" in proc.stderr and f"tensorboard --logdir {root}" in proc.stderr
    assert f"attn-bench visualize {root}" in proc.stderr
    for a in launch["jobs"]:
        for b in launch["jobs"]:
            if a is not b and a["device"] == b["device"]:
                assert not overlapping(a, b)

    # the report on this sweep: a row per block, n = 2 seeds, a delta against the baseline
    from attn_bench.cli import main

    assert main(["report", str(root), "--out", str(tmp_path / "report")]) == 0
    csv_rows = {r["block"]: r for r in csv.DictReader((tmp_path / "report" / "report.csv").open())}
    assert set(csv_rows) == {"none", "se"} and {r["n"] for r in csv_rows.values()} == {"2"}
    se, none = csv_rows["se"], csv_rows["none"]
    assert float(se["delta_top1"]) == pytest.approx(float(se["top1_mean"]) - float(none["top1_mean"]), abs=1e-6)
    assert float(se["delta_ci_low"]) <= float(se["delta_top1"]) <= float(se["delta_ci_high"])

    # one job run again in the sweep's directory and SIGKILLed after a mid-epoch checkpoint (fault_at.py)
    straight = metrics["model.attn=se,seed=1"]
    job = root / "model.attn=se,seed=1"
    shutil.rmtree(job)
    as_in_the_sweep = dict(os.environ, **gpu_slots(["0", "1"])[1].env)  # its thread count: bit-identical sums
    killed = subprocess.run([sys.executable, str(FAULT_AT), "mid_epoch", *RESUMABLE, "model.attn=se", "seed=1",
                             f"hydra.run.dir='{job}'"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=as_in_the_sweep)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoint = torch.load(job / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["batch"], checkpoint["step"]) == (1, 2, 8)

    finished = {p: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")}
    again = sweep("model.attn=none,se", "seed=0,1", "hydra.launcher.devices=[0,1]", base=RESUMABLE)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "a finished job was recomputed"
    launches = json.loads((root / "sweep_summary.json").read_text())["launches"]
    assert len(launches) == 2
    assert {Path(j["run_dir"]).name: j["status"] for j in launches[-1]["jobs"]} == {
        "model.attn=none,seed=0": "skipped", "model.attn=none,seed=1": "skipped",
        "model.attn=se,seed=0": "skipped", "model.attn=se,seed=1": "completed"}
    resumed = job_metrics(root)["model.attn=se,seed=1"]
    # it picked up at the checkpoint: 4 of its 12 steps were run, and it ended as the uninterrupted job did
    assert resumed["resumed_from"] == [{"epoch": 1, "batch": 2, "step": 8}] and "resumed_from" not in straight
    assert resumed["steps"] == straight["steps"] == 12
    assert resumed["history"] == [{**h, **{k: r[k] for k in ("img_per_s", "epoch_train_time_s")}}
                                  for h, r in zip(straight["history"], resumed["history"])]

    (root / "sweep_summary.json").write_text('{"launches": [')  # torn bookkeeping: rebuilt, never a crash
    third = sweep("model.attn=none,se", "seed=0,1", "hydra.launcher.devices=[0,1]", base=RESUMABLE)
    assert third.returncode == 0 and "sweep_summary.json is unreadable" in third.stdout + third.stderr
    assert len(json.loads((root / "sweep_summary.json").read_text())["launches"]) == 1

    # a finished job whose block was built otherwise (an older attn-bench's paper preset) is not passed off
    # as this config's result: the sweep refuses in one line and changes nothing
    path = root / "model.attn=se,seed=0" / "metrics.json"
    older = json.loads(path.read_text())
    older["placement"]["args"] = {"rd_ratio": 0.25}
    path.write_text(json.dumps(older))
    mtimes = {p: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")}
    fourth = sweep("model.attn=none,se", "seed=0,1", "hydra.launcher.devices=[0,1]", base=RESUMABLE)
    lines = [line for line in fourth.stderr.splitlines() if "sweep not started" in line]
    assert fourth.returncode != 0 and len(lines) == 1, fourth.stderr[-3000:]
    assert "model.attn=se,seed=0' holds a run whose block was built otherwise" in lines[0]
    assert "args: {'rd_ratio': 0.25} -> {}" in lines[0]
    assert {p: p.stat().st_mtime_ns for p in root.glob("*/metrics.json")} == mtimes


def test_a_failing_job_does_not_stop_the_sweep_and_is_reported(tmp_path, sweep):
    proc = sweep("trainer.optimizer.lr=0.05,1e30", "trainer.scheduler.warmup_epochs=0",
                 "hydra.launcher.cpu_workers=2")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    root = sweep_dir(tmp_path)
    jobs = {j["overrides"][0]: j for j in json.loads((root / "sweep_summary.json").read_text())["launches"][-1]["jobs"]}
    assert jobs["trainer.optimizer.lr=0.05"]["status"] == "completed"
    assert jobs["trainer.optimizer.lr=1e+30"]["status"] == "failed"  # Hydra normalises the float
    assert "training diverged" in jobs["trainer.optimizer.lr=1e+30"]["reason"]
    assert "failed" in proc.stderr and "diverged" in proc.stderr


def test_a_config_mistake_in_any_job_stops_the_sweep_before_it_starts(tmp_path, sweep):
    proc = sweep("trainer.optimizer.lr=0.05,-1")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sweep not started" in lines[0] and "trainer.optimizer.lr must be positive" in lines[0]
    assert not list((tmp_path / "outputs").rglob("metrics.json"))


def _hydra_config(overrides):
    return compose("train", overrides, return_hydra_config=True)


def test_default_sweep_launcher_is_the_device_queue():
    cfg = _hydra_config([])
    assert cfg.hydra.launcher._target_.endswith("GpuQueueLauncher")


def test_slurm_launcher_config_asks_for_one_gpu_per_job():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _hydra_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    from hydra.utils import get_class

    # submitit's SLURM launcher, with attn-bench's sweep layout on top (compared by name: Hydra's
    # plugin scan may import the submitit module a second time)
    bases = [(c.__module__, c.__name__) for c in get_class(cfg.hydra.launcher._target_).__mro__]
    assert ("hydra_plugins.hydra_submitit_launcher.submitit_launcher", "SlurmLauncher") in bases
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1
    assert cfg.hydra.launcher.partition == "gpu"


@pytest.mark.slow  # the wrapped launcher (next test) runs submitit's local executor too
def test_submitit_local_executor_runs_a_sweep(tmp_path, sweep):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = sweep("hydra/launcher=submitit_local", "seed=0,1", "hydra.launcher.timeout_min=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "sweeps").glob("*/*/metrics.json"))
    assert len(runs) == 2 and all(json.loads(p.read_text())["status"] == "completed" for p in runs)


def test_the_local_submitit_launcher_keeps_the_sweep_layout_and_summary(tmp_path, sweep):
    """hydra/launcher=local (and slurm): jobs in the sweep's folder under their swept values, the
    same summary and sweep_summary.json as the default launcher, and a re-run finds them."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    threads_before = os.environ.get("OMP_NUM_THREADS")
    proc = sweep("hydra/launcher=local", "seed=0,1", "hydra.launcher.timeout_min=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = sweep_dir(tmp_path)
    metrics = job_metrics(root)
    assert set(metrics) == {"seed=0", "seed=1"} and all(m["status"] == "completed" for m in metrics.values())
    share = max(1, os.cpu_count() // 2)  # both jobs at once on this machine: half the cores each
    assert {m["device"] for m in metrics.values()} == {f"cpu ({share} threads)"}
    assert os.environ.get("OMP_NUM_THREADS") == threads_before  # the sweep's own environment is as it was
    for m in metrics.values():
        assert f"{m['final']['top1']:.2f}" in proc.stderr
    assert f"attn-bench report {root}" in proc.stderr
    launch = json.loads((root / "sweep_summary.json").read_text())["launches"][-1]
    assert sorted(j["status"] for j in launch["jobs"]) == ["completed", "completed"]


def test_jobs_are_named_by_their_swept_values_and_never_collide():
    from attn_bench.sweeps.sweep import job_dirnames

    jobs = [["model.attn=se", "seed=0", "data=cifar100"], ["model.attn=se", "seed=1", "data=cifar100"]]
    assert job_dirnames(jobs, {"model.attn", "seed"}) == ["model.attn=se,seed=0", "model.attn=se,seed=1"]
    # swept keys unknown (e.g. a sweeper plugin): fall back to every override rather than collide
    assert job_dirnames(jobs, set()) == ["data=cifar100,model.attn=se,seed=0", "data=cifar100,model.attn=se,seed=1"]


def test_experiment_sweeps_its_own_params():
    cfg = _hydra_config(["experiment=cifar100_blocks"])
    assert cfg.data.name == "cifar100" and cfg.model.backbone == "resnet18" and cfg.trainer.epochs == 200
    assert cfg.hydra.sweeper.params["model.attn"] == "none,se,eca,gc,ca,gam,cbam"


@pytest.mark.parametrize("bad", ["model.attn_stages=[7]", "model.attn_position=first", "data.loader=bogus"])
def test_the_sweep_precheck_runs_the_jobs_own_checks(tmp_path, sweep, bad):
    """Mistakes that only the model or data layer can see stop the sweep before any job starts."""
    key, value = bad.split("=", 1)
    proc = sweep("model.attn=none,se", f"{key}={value}")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sweep not started" in lines[0]
    assert not list((tmp_path / "outputs").rglob("metrics.json"))


def job_pids(marker: str) -> list[int]:
    """Live processes whose command line runs a sweep job under ``marker`` (zombies have none)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "hydra.run.dir=" in cmd and marker in cmd:
                pids.append(int(entry.name))
    return pids


def exited(pid: int, timeout: float) -> bool:
    """Wait for ``pid`` (not our child) to end: its pidfd becomes readable when it does."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_jobs_die_with_the_sweep_and_a_rerun_resumes_cleanly(tmp_path, sweep, how):
    env = dict(os.environ, ATTN_BENCH_OUTPUTS=str(tmp_path / "outputs"))
    swept = ["model.attn=none,se", *TINY, "data.train_size=400", "trainer.epochs=2", "hydra.launcher.cpu_workers=2"]
    parent = subprocess.Popen([sys.executable, "-m", "attn_bench", "-m", *swept], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in parent.stdout:  # Hydra's log: each job once its process runs (Popen returns after exec)
        if "job #0 started" in line:
            break
    jobs = job_pids(str(tmp_path))
    assert jobs, "no job started"
    parent.send_signal(how)
    parent.wait(timeout=300)
    still_running = [pid for pid in jobs if not exited(pid, timeout=300)]
    assert not still_running, f"jobs {still_running} outlived their sweep"
    finished = [m for m in job_metrics(sweep_dir(tmp_path)).values() if m.get("status") == "completed"]
    assert not finished, "a job trained to the end after its sweep was stopped"
    again = sweep(*swept, base=[])
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(m["status"] for m in job_metrics(sweep_dir(tmp_path)).values()) == ["completed", "completed"]


@pytest.mark.slow  # a packaging regression guard (9 s); every default sweep test runs jobs of the installed package
def test_jobs_run_the_sweeps_attn_bench_not_a_package_in_the_working_directory(tmp_path):
    """A sweep started from a source checkout with a regular install: `python -m` in the jobs would
    import the checkout's attn_bench (no configs inside) instead of the one the sweep runs."""
    from attn_bench.sweeps.sweep import JOB_BOOTSTRAP

    shadow = tmp_path / "attn_bench"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the working directory shadowed attn_bench')\n")
    env = dict(os.environ, ATTN_BENCH_OUTPUTS=str(tmp_path / "outputs"))
    proc = subprocess.run([sys.executable, "-c", JOB_BOOTSTRAP, "-m", "model.attn=none,se", *TINY,
                           "hydra.launcher.cpu_workers=2"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(m["status"] for m in job_metrics(sweep_dir(tmp_path)).values()) == ["completed", "completed"]


@pytest.mark.parametrize("how", ["--config-dir", pytest.param("searchpath", marks=pytest.mark.slow)])  # one by default
def test_a_sweep_of_your_own_experiment_runs_it_in_every_job(tmp_path, sweep, how):
    """Each job composes with the sweep's search path: it ran 'unknown experiment' in every job before."""
    (tmp_path / "myconf" / "experiment").mkdir(parents=True)
    (tmp_path / "myconf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nmodel:\n  attn_position: last\nhydra:\n  sweeper:\n    params:\n      model.attn: none,se\n")
    where = ["--config-dir", "./myconf"] if how == "--config-dir" else [f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"]
    proc = sweep(*where, "experiment=mine", "hydra.launcher.cpu_workers=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = job_metrics(sweep_dir(tmp_path))
    assert sorted(metrics) == ["model.attn=none", "model.attn=se"]
    assert all(m["status"] == "completed" and m["config"]["model"]["attn_position"] == "last" for m in metrics.values())
    assert metrics["model.attn=se"]["placement"]["position"] == "last"


def test_the_summary_says_the_overrides_every_job_shares_once(tmp_path, capsys, monkeypatch):
    from attn_bench.sweeps.sweep import _print_summary, shared_overrides

    monkeypatch.delenv("COLUMNS", raising=False)  # piped: rows and caption are not wrapped at 80 columns
    fixed = ["data=cifar100", "trainer.epochs=200", "model.attn_stages=[2,3]", "model.attn_args.rd_ratio=0.125",
             "trainer.optimizer.lr=0.05"]
    jobs = [Job(index=i, overrides=[f"model.attn={a}", f"seed={s}", *fixed], run_dir=tmp_path / f"{a}{s}",
                status="skipped") for i, (a, s) in enumerate([("none", 0), ("se", 0), ("se", 1)])]
    assert shared_overrides(jobs) == fixed and shared_overrides(jobs[:1]) == []
    _print_summary(jobs, tmp_path)
    err = capsys.readouterr().err
    assert err.count("trainer.epochs=200") == 1 and "every job: data=cifar100 trainer.epochs=200 " \
        "model.attn_stages=[2,3] model.attn_args.rd_ratio=0.125 trainer.optimizer.lr=0.05" in err
    assert "model.attn=se seed=1" in err and err.count("seed=0") == 2
