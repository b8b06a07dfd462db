"""``hydra/launcher=slurm`` and ``hydra/launcher=local``: Hydra's submitit launchers, with the
sweep layout of attn-bench's own launcher.

Hydra's submitit launcher resolves ``hydra.sweep.dir`` inside each job, where the overrides that
name the sweep directory are the job's own, so every job landed beside the sweep, not in it, and
nothing summarised the sweep. Here each job is given the sweep's resolved directory and its
swept-values name (``hydra.*`` overrides, which do not enter the job's own name), and the sweep
ends with the same summary and ``sweep_summary.json`` as ``gpu_queue``.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from hydra.core.utils import JobReturn, JobStatus

from omegaconf import OmegaConf

from attn_bench.errors import ConfigError, check, fail
from attn_bench.rundir import is_completed, read_record
from attn_bench.sweeps.queue import Job, thread_share
from attn_bench.sweeps.sweep import check_jobs_differ, check_sweep_dir, finish_sweep, job_dirnames, swept_keys

try:  # an optional dependency (the `slurm` extra)
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
except ImportError:  # pragma: no cover - without it these launchers do not exist
    LocalLauncher = SlurmLauncher = None


class _SweepLayout:
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from attn_bench.commands.train.spec import expect_at_launch  # torch, timm: when a sweep runs

        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        job_overrides = [list(overrides) for overrides in job_overrides]
        names = job_dirnames(job_overrides, swept_keys(self.config))
        try:  # what would fail every job on the cluster fails here, in one line, before submission
            check_sweep_dir(sweep_dir)
            check_jobs_differ(job_overrides)
            specs = self._check_jobs(job_overrides)
        except ConfigError as err:
            sys.exit(fail(f"sweep not started: {err}"))
        for name, spec in zip(names, specs):  # each job runs what was checked here, its block as hashed now
            if not is_completed(sweep_dir / name):
                expect_at_launch(sweep_dir / name, spec)
        placed = [overrides + [f"hydra.sweep.dir='{sweep_dir}'", f"hydra.sweep.subdir='{name}'"]
                  for overrides, name in zip(job_overrides, names)]
        # submitit starts jobs with `python -m`, which puts the working directory first on sys.path: from
        # a source checkout with a regular install, the jobs would import the checkout's attn_bench (no
        # configs inside). Python >= 3.11 leaves the working directory out with PYTHONSAFEPATH.
        os.environ.setdefault("PYTHONSAFEPATH", "1")
        started = time.time()
        with _environment(self._job_env(len(placed))):
            returns = super().launch(placed, initial_job_idx)
        jobs = [self._job(initial_job_idx + i, overrides, sweep_dir / name, ret)
                for i, (overrides, name, ret) in enumerate(zip(job_overrides, names, returns))]
        finish_sweep(jobs, sweep_dir, time.time() - started)
        if any(job.status == "failed" for job in jobs):
            sys.exit(1)  # the summary says what failed; Hydra would re-raise each with a traceback
        return returns

    def _check_jobs(self, job_overrides: list[list[str]]) -> list[dict]:
        """Each job's spec, resolved with the job's own checks; each task of a job is one DDP rank on one
        GPU, and takes an equal share of the batch."""
        tasks, gpus = int(self.params.get("tasks_per_node") or 1), int(self.params.get("gpus_per_node") or 0)
        check(gpus == 0 or tasks <= gpus,
              f"hydra.launcher.tasks_per_node={tasks} is more than hydra.launcher.gpus_per_node={gpus}: each task "
              f"is one rank on one GPU; request as many GPUs per node as tasks")
        from attn_bench.commands.train.spec import resolve_spec
        from attn_bench.training.validate import per_rank_batch

        ranks = tasks * int(self.params.get("nodes") or 1)
        specs = []
        for overrides in job_overrides:
            job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            specs.append(resolve_spec(OmegaConf.masked_copy(job_cfg, [k for k in job_cfg if k != "hydra"])))
            per_rank_batch(job_cfg.trainer, ranks)
        return specs

    def _job_env(self, jobs: int) -> dict[str, str]:
        """What the jobs' environment adds (a cluster gives each job its own cores: nothing)."""
        return {}

    @staticmethod
    def _job(index: int, overrides: list[str], run_dir: Path, ret: JobReturn) -> Job:
        job = Job(index=index, overrides=overrides, run_dir=run_dir)
        record = read_record(run_dir)
        job.status = "completed" if ret.status == JobStatus.COMPLETED and record and record.completed else "failed"
        if job.status == "failed":
            job.reason = str(ret._return_value) if ret.status == JobStatus.FAILED else (record.reason if record else None)
        return job


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` while the jobs are started (they inherit it), then as it was."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if LocalLauncher is not None:
    class AttnBenchLocalLauncher(_SweepLayout, LocalLauncher):
        def _job_env(self, jobs: int) -> dict[str, str]:
            """submitit's local executor starts every job at once on this machine: each takes its share of the
            cores, as gpu_queue's slots do."""
            return thread_share(jobs)

    class AttnBenchSlurmLauncher(_SweepLayout, SlurmLauncher):
        pass
