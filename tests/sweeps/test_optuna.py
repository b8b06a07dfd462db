"""``hydra/sweeper=optuna_top1``: Hydra's Optuna sweeper searching for the highest final top-1."""
from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

TINY = ["data.train_size=150", "data.test_size=200", "trainer.epochs=1", "trainer.batch_size=25",
        "measure_cost=false", "hydra.launcher.cpu_workers=2"]


def test_the_shipped_optuna_sweeper_maximises_the_final_top1_the_jobs_return(attn_bench_cli, tmp_path):
    """Two trials through attn-bench's own launcher: the study is a maximisation, and its best value and
    parameters are those of the job with the higher final top-1 in its metrics.json."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra is not installed")
    proc = attn_bench_cli("-m", "hydra/sweeper=optuna_top1", "model.attn=choice(none,se)",
                          "trainer.optimizer.lr=interval(0.001,0.3)", "hydra.sweeper.n_trials=2", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root,) = (tmp_path / "outputs" / "sweeps").iterdir()
    jobs = [json.loads(p.read_text()) for p in root.glob("*/metrics.json")]
    assert len(jobs) == 2 and all(j["status"] == "completed" for j in jobs)
    results = yaml.safe_load((root / "optimization_results.yaml").read_text())
    best = max(jobs, key=lambda j: j["final"]["top1"])
    assert len({j["final"]["top1"] for j in jobs}) == 2, "a tie would not tell maximise from minimise"
    assert results["best_value"] == best["final"]["top1"]
    assert results["best_params"]["model.attn"] == best["config"]["model"]["attn"]
    assert results["best_params"]["trainer.optimizer.lr"] == pytest.approx(best["config"]["trainer"]["optimizer"]["lr"])


def test_the_plugins_own_optuna_config_is_refused_while_it_would_minimise_top1(attn_bench_cli):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the optuna extra is not installed")
    proc = attn_bench_cli("-m", "hydra/sweeper=optuna", "model.attn=choice(none,se)")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert "minimises what each job returns" in lines[0] and "hydra/sweeper=optuna_top1" in lines[0]


def test_without_the_plugin_the_sweeper_is_one_line_naming_the_extra(attn_bench_cli, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "hydra_plugins.hydra_optuna_sweeper" else real(name, *a))
    proc = attn_bench_cli("-m", "hydra/sweeper=optuna_top1", "model.attn=choice(none,se)")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "attn-bench: error: hydra/sweeper=optuna_top1 needs Hydra's Optuna sweeper, which is not installed: "
        "pip install 'attn-bench[optuna]'")
