"""A free-device queue: run jobs as fresh processes, at most one job per device at a time.

Hydra's stock launchers do not do this (submitit's local executor gives every job the same GPU;
joblib assigns by index modulo, which collides when jobs differ in length), so attn-bench owns
it. A "device" is a GPU index exported to the job as ``CUDA_VISIBLE_DEVICES``; on a CPU-only
machine the slots are plain worker processes that share the cores.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

POLL_S = 0.1
STOP_WAIT_S = 30  # how long an interrupted job may take to stop before it is killed
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class Job:
    index: int
    overrides: list[str]
    run_dir: Path
    status: str = "pending"  # pending | skipped | running | completed | failed
    device: str | None = None
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    reason: str | None = None
    log_file: Path | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(run_dir=str(self.run_dir), log_file=str(self.log_file) if self.log_file else None)
        return d


@dataclass
class Slot:
    device: str | None  # GPU id for CUDA_VISIBLE_DEVICES; None for a CPU worker
    env: dict[str, str] = field(default_factory=dict)


def _share_of_cores(workers: int, cores: int | None) -> str:
    return str(max(1, (cores or os.cpu_count() or 1) // max(1, workers)))


def thread_share(jobs: int, cores: int | None = None) -> dict[str, str]:
    """The environment that gives each of ``jobs`` jobs running at once an equal share of the cores for its
    intra-op threads (as torchrun does), unless OMP_NUM_THREADS is set: jobs that each start a team of every
    core's threads share the cores by spinning, and on 2 cores two such jobs ran 7x slower."""
    return {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": _share_of_cores(jobs, cores)}


def cpu_slots(workers: int, cores: int | None = None) -> list[Slot]:
    """``workers`` CPU slots, each with an equal share of the cores and no GPU."""
    threads = _share_of_cores(workers, cores)
    return [Slot(None, {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads}) for _ in range(workers)]


def gpu_slots(devices: Sequence[str | int], cores: int | None = None) -> list[Slot]:
    """A slot per GPU, each job with its share of the CPU cores (``thread_share``: a CPU-side op, a job run
    with device=cpu)."""
    share = thread_share(len(devices), cores)
    return [Slot(str(d), {"CUDA_VISIBLE_DEVICES": str(d), **share}) for d in devices]


def run_queue(jobs: list[Job], slots: list[Slot], command: Callable[[Job], list[str]],
              on_event: Callable[[str, Job], None] = lambda event, job: None) -> list[Job]:
    """Run every pending job; a job waits until a slot is free. Returns the jobs, updated. SIGINT/SIGTERM
    stop the sweep: no job starts after it, every running job gets the signal, and KeyboardInterrupt is
    raised once they have stopped."""
    pending = [j for j in jobs if j.status == "pending"]
    running: dict[int, tuple[Job, subprocess.Popen, object]] = {}
    free = list(range(len(slots)))
    with _stop_requests() as stop:
        while pending or running:
            while pending and free and not stop:
                slot_id, job = free.pop(0), pending.pop(0)
                running[slot_id] = _start(job, slots[slot_id], command(job))
                on_event("start", job)
            if stop:
                _stop_jobs([proc for _, proc, _ in running.values()], stop)
            time.sleep(POLL_S)
            for slot_id, (job, proc, handle) in list(running.items()):
                if proc.poll() is None:
                    continue
                _finish(job, proc, handle)
                del running[slot_id]
                free.append(slot_id)
                on_event("end", job)
        if stop:  # it came as the last job ended
            _stop_jobs([], stop)
    return jobs


@contextmanager
def _stop_requests():
    """The SIGINT/SIGTERM signals the sweep received, in a list the queue's loop reads. The handler only
    records: raised in it, KeyboardInterrupt could land in code that swallows it (logging's fork hook
    runs as Popen starts a job), and the sweep went on starting jobs after a SIGTERM."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_jobs(procs: list, received: list[int]) -> None:
    """Every running job gets the signal the sweep got (each is its own process group), and the sweep waits
    for them to stop, so that a re-run finds their directories free; a second signal, or STOP_WAIT_S, and
    they are killed. kill -9 cannot be caught; for it each job carries a parent-death signal
    (:func:`_die_with_parent`)."""
    _kill_all(procs, received[0])
    deadline = time.monotonic() + STOP_WAIT_S  # one deadline for all jobs, not one each
    while any(proc.poll() is None for proc in procs) and time.monotonic() < deadline and len(received) == 1:
        time.sleep(POLL_S)
    _kill_all([proc for proc in procs if proc.poll() is None], signal.SIGKILL)
    raise KeyboardInterrupt


def _kill_all(procs: list, signum: int) -> None:
    for proc in procs:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)


def _die_with_parent(parent: int) -> Callable[[], None]:
    """In the job, before exec: its own process group, and SIGTERM when the sweep process dies (Linux)."""
    def setup() -> None:
        os.setpgrp()
        with suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the sweep died before the death signal was armed
            os.kill(os.getpid(), signal.SIGTERM)
    return setup


def _start(job: Job, slot: Slot, argv: list[str]):
    job.run_dir.mkdir(parents=True, exist_ok=True)
    job.log_file = job.run_dir / "job.log"
    handle = open(job.log_file, "a")
    env = dict(os.environ, **slot.env, PYTHONUNBUFFERED="1")
    job.status, job.device, job.started = "running", slot.device, time.time()
    proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent(os.getpid()))
    return job, proc, handle


def _finish(job: Job, proc: subprocess.Popen, handle) -> None:
    handle.close()
    job.ended, job.returncode = time.time(), proc.returncode
    job.status = "completed" if proc.returncode == 0 else "failed"
    if job.status == "failed":
        job.reason = _last_error_line(job.log_file) or f"exit status {proc.returncode}"


def _last_error_line(log_file: Path | None) -> str | None:
    if log_file is None or not log_file.exists():
        return None
    lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line[:500]
    return lines[-1][:500] if lines else None
