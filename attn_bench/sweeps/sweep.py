"""A sweep: skip what is done, run the rest on the device queue, summarise, record."""
from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

from omegaconf import OmegaConf
from rich.markup import escape
from rich.table import Table

from attn_bench.attention.registry import tag_sources
from attn_bench.rundir import dirname_for
from attn_bench.errors import check
from attn_bench.io import atomic_write_json
from attn_bench.rundir import is_completed, read_record
from attn_bench.sweeps.queue import Job, Slot, cpu_slots, gpu_slots, run_queue
from attn_bench.tables import wide_console

log = logging.getLogger("attn_bench")
SUMMARY_FILE = "sweep_summary.json"


def job_dirnames(job_overrides: list[list[str]], swept_keys: set[str]) -> list[str]:
    """A directory name per job from the values it sweeps (``model.attn=se,seed=0``).

    Readable, and the same each time the sweep is started, which is what lets a re-run find
    finished work. Should two jobs still share a name, every job is named by all its overrides.
    """
    names = [dirname_for(tag_sources(",".join(sorted(o for o in overrides if o.split("=", 1)[0] in swept_keys))))
             for overrides in job_overrides]
    if len(set(names)) < len(names):
        names = [dirname_for(tag_sources(",".join(sorted(overrides)))) for overrides in job_overrides]
    return names


def detect_slots(devices: Sequence[str] | None, cpu_workers: int) -> list[Slot]:
    if devices is None:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    return gpu_slots(devices) if devices else cpu_slots(cpu_workers)


def check_sweep_dir(sweep_dir: Path) -> None:
    # job_command passes the run directory as a quoted Hydra override value
    check("'" not in str(sweep_dir), f"the sweep directory path may not contain a quote: {sweep_dir}")


# A job runs the attn-bench the sweep runs. `python -m attn_bench` would put the working directory
# first on sys.path, so a sweep started from a source checkout with a regular (non-editable)
# install would run the checkout's package in its jobs, which has no attn_bench.configs.
# The working directory joins sys.path only once attn_bench is imported: a checkout's attn_bench/
# (no configs in it) must not shadow the installed package, while a user's module there
# (model.attn=mymod:Gate) must still import, as it did in the launcher.
JOB_BOOTSTRAP = ("import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
                 "from attn_bench.cli import main; sys.path.append(''); sys.exit(main())")


def job_command(job: Job, searchpath: Sequence[str] = ()) -> list[str]:
    """A job's command line: its overrides, its directory, and the sweep's own config search path
    (``--config-dir``, ``hydra.searchpath``), so that the job composes the config the sweep checked."""
    extra = [f"hydra.searchpath=[{','.join(repr(str(p)) for p in searchpath)}]"] if searchpath else []
    return [sys.executable, "-c", JOB_BOOTSTRAP, *job.overrides, f"hydra.run.dir='{job.run_dir}'",
            "trainer.progress=false", "print_config=false", *extra]  # no bar, no config tree in job.log


def search_path(hydra_cfg) -> list[str]:
    """The config folders the user added to the sweep (``--config-dir``, ``hydra.searchpath``), as
    Hydra resolved them for it."""
    sources = OmegaConf.select(hydra_cfg, "hydra.runtime.config_sources") or []
    return [str(s["path"]) for s in sources
            if s["provider"] == "command-line" or str(s["provider"]).startswith("hydra.searchpath")]


def check_jobs_differ(job_overrides: list[list[str]]) -> None:
    """``-m seed=0,0`` would run one job twice into one directory: refused, naming the repeat."""
    seen: set[tuple[str, ...]] = set()
    for overrides in job_overrides:
        key = tuple(sorted(overrides))
        check(key not in seen, f"the sweep lists the same job twice ({' '.join(overrides) or 'no overrides'}); "
                               f"give each value once")
        seen.add(key)


def run_sweep(jobs: list[Job], sweep_dir: Path, devices: Sequence[str] | None, cpu_workers: int,
              searchpath: Sequence[str] = ()) -> list[Job]:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    history = earlier_launches(sweep_dir)  # checked before any job starts
    for job in jobs:
        if is_completed(job.run_dir):
            job.status = "skipped"
    slots = detect_slots(devices, cpu_workers)
    where = ", ".join(f"GPU {s.device}" for s in slots) if slots[0].device is not None else f"{len(slots)} CPU worker(s)"
    todo = sum(j.status == "pending" for j in jobs)
    log.info("sweep %s: %d jobs, %d already completed, running %d on %s", sweep_dir, len(jobs), len(jobs) - todo,
             todo, where)
    started = time.time()

    def on_event(event: str, job: Job) -> None:
        if event == "start":
            log.info("job #%d started on %s: %s", job.index, job.device or "cpu", " ".join(job.overrides))
        else:
            log.info("job #%d %s after %.1f s%s", job.index, job.status, job.ended - job.started,
                     f": {job.reason}" if job.reason else "")

    run_queue(jobs, slots, lambda job: job_command(job, searchpath), on_event)
    _write_summary(sweep_dir, jobs, time.time() - started, history)
    _print_summary(jobs, sweep_dir)
    return jobs


def finish_sweep(jobs: list[Job], sweep_dir: Path, wall: float) -> None:
    """Record and print a sweep that another engine ran (the submitit launchers)."""
    _write_summary(sweep_dir, jobs, wall, earlier_launches(sweep_dir))
    _print_summary(jobs, sweep_dir)


def swept_keys(hydra_cfg) -> set[str]:
    """The keys a multirun sweeps: comma/range overrides on the command line and the sweeper's params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parsed = OverridesParser.create().parse_overrides(list(hydra_cfg.hydra.overrides.task))
    keys = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    return keys | set(OmegaConf.select(hydra_cfg, "hydra.sweeper.params", default=None) or {})


def earlier_launches(sweep_dir: Path) -> list[dict]:
    """The launches ``sweep_summary.json`` records; a corrupt file is set aside with a warning (it is
    bookkeeping: each job's own metrics.json holds its results)."""
    path = sweep_dir / SUMMARY_FILE
    if not path.exists():
        return []
    try:
        launches = json.loads(path.read_text())["launches"]
        if isinstance(launches, list):
            return launches
    except (OSError, ValueError, KeyError, TypeError):
        pass
    log.warning("%s is unreadable; it is rebuilt from this launch on", path)
    return []


def _write_summary(sweep_dir: Path, jobs: list[Job], wall: float, history: list[dict]) -> None:
    path = sweep_dir / SUMMARY_FILE
    launch = {"started": time.time() - wall, "wall_time_s": wall, "jobs": [j.as_dict() for j in jobs]}
    atomic_write_json(path, {"sweep_dir": str(sweep_dir), "launches": history + [launch],
                             "counts": {s: sum(j.status == s for j in jobs)
                                        for s in ("completed", "skipped", "failed")}})


def _final_top1(job: Job) -> str:
    record = read_record(job.run_dir)
    top1 = (record.final or {}).get("top1") if record is not None and record.completed else None
    return "-" if top1 is None else f"{top1:.2f}"


def shared_overrides(jobs: list[Job]) -> list[str]:
    """The overrides every job of a sweep of several has (the sweep's fixed settings), in the first job's order."""
    if len(jobs) < 2:
        return []
    return [o for o in jobs[0].overrides if all(o in job.overrides for job in jobs[1:])]


def _print_summary(jobs: list[Job], sweep_dir: Path) -> None:
    """Every job's outcome, final top-1 and own overrides (those all jobs share once, above), then the
    commands a user wants next."""
    shared = shared_overrides(jobs)
    table = Table(title="sweep summary", caption=escape(f"every job: {' '.join(shared)}") if shared else None)
    for column in ("#", "status", "top-1 (%)", "device", "time (s)", "overrides", "reason"):
        table.add_column(column)
    for job in jobs:
        took = f"{job.ended - job.started:.1f}" if job.ended else "-"
        style = {"failed": "red", "skipped": "dim"}.get(job.status, "")
        table.add_row(str(job.index), job.status, _final_top1(job), job.device or "cpu" if job.started else "-", took,
                      escape(" ".join(o for o in job.overrides if o not in shared)), escape(job.reason or ""),
                      style=style)
    console = wide_console(stderr=True, highlight=False, soft_wrap=True)
    console.print(table)
    where = shlex.quote(str(sweep_dir))
    console.print(f"next: attn-bench report {where}\n"
                  f"      attn-bench visualize {where}\n"
                  f"      tensorboard --logdir {where}", markup=False)
