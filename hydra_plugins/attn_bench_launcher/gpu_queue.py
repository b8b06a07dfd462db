"""Hydra launcher ``hydra/launcher=gpu_queue`` (the default for ``-m``), a thin shell.

One fresh process per job, one job per device; the logic lives in :mod:`attn_bench.sweeps`.
Its config is ``configs/hydra/launcher/gpu_queue.yaml``; :func:`attn_bench.cli.register`
registers this class before Hydra starts, so it also works in editable installs, where
Hydra's plugin scan misses this namespace portion.

Jobs whose ``metrics.json`` says completed are skipped (nothing finished is recomputed);
interrupted jobs resume from their checkpoint because each job runs in its own fixed directory.
A failing job does not stop the others; the sweep ends with a summary of what failed and why.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from attn_bench.errors import ConfigError, check, fail
from attn_bench.rundir import check_same_run, is_completed, read_record
from attn_bench.sweeps.queue import Job
from attn_bench.sweeps.sweep import check_jobs_differ, check_sweep_dir, job_dirnames, run_sweep, search_path, swept_keys


class GpuQueueLauncher(Launcher):
    def __init__(self, devices: Optional[Sequence[Any]] = None, cpu_workers: int = 1) -> None:
        self.devices = None if devices is None else [str(d) for d in devices]
        self.cpu_workers = cpu_workers
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        job_overrides = [list(overrides) for overrides in job_overrides]
        names = job_dirnames(job_overrides, swept_keys(self.config))
        jobs = [Job(index=initial_job_idx + i, overrides=overrides, run_dir=sweep_dir / name)
                for i, (overrides, name) in enumerate(zip(job_overrides, names))]
        self._check_before_starting(jobs, sweep_dir)
        jobs = run_sweep(jobs, sweep_dir, self.devices, self.cpu_workers, search_path(self.config))
        if any(j.status == "failed" for j in jobs):
            # Hydra would re-raise per job with a traceback; the summary already says what failed.
            sys.exit(1)
        return [self._job_return(job) for job in jobs]

    def _check_before_starting(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Resolve every job's spec with the job's own checks, check that a finished job's directory
        holds this job on this data (else it would be skipped with another run's numbers), and leave
        each job to run what was checked here (its block's source as hashed now): a mistake in one
        stops the sweep before any job runs."""
        from attn_bench.commands.train.spec import expect_at_launch, resolve_spec  # torch, timm: when a sweep runs
        from attn_bench.data.identity import dataset_identity

        identities: dict[str, dict] = {}
        try:
            check(self.cpu_workers >= 1, f"hydra.launcher.cpu_workers must be at least 1, got {self.cpu_workers}")
            check_sweep_dir(sweep_dir)
            check_jobs_differ([job.overrides for job in jobs])
            specs = []
            for job in jobs:
                job_cfg = self.hydra_context.config_loader.load_sweep_config(self.config, job.overrides)
                spec = resolve_spec(OmegaConf.masked_copy(job_cfg, [k for k in job_cfg if k != "hydra"]))
                if is_completed(job.run_dir):
                    key = OmegaConf.to_yaml(job_cfg.data)
                    if key not in identities:  # one walk over the files per dataset, not per job
                        identities[key] = dataset_identity(job_cfg.data)
                    check_same_run(job.run_dir, {**spec, "data": identities[key]})
                specs.append(spec)
        except ConfigError as err:
            sys.exit(fail(f"sweep not started: {err}"))
        for job, spec in zip(jobs, specs):
            if not is_completed(job.run_dir):
                expect_at_launch(job.run_dir, spec)

    @staticmethod
    def _job_return(job) -> JobReturn:
        ret = JobReturn(overrides=job.overrides, working_dir=str(job.run_dir))
        ret.status = JobStatus.COMPLETED
        record = read_record(job.run_dir)
        ret._return_value = record.final["top1"] if record and record.final else None
        return ret
