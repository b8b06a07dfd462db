"""One record of what a run is (run.json): resolved once, checked by train, sweeps, eval, visualize and report.

Each case here reported a wrong number as right, or failed a documented feature, before the run spec."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from attn_bench.cli import main
from attn_bench.commands.train import run_training
from attn_bench.commands.train.spec import expect_at_launch, resolve_spec
from attn_bench.errors import ConfigError
from attn_bench.models import model_from_config

TINY = ["data.train_size=200", "data.test_size=100", "trainer.epochs=1", "trainer.batch_size=50",
        "trainer.progress=false", "measure_cost=false"]

GATE = '''
import torch
from torch import nn


class Gate(nn.Module):
    """A channel gate from each channel's mean; k scales the gate's input."""

    def __init__(self, channels: int, k: float = 1.0):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.k = k

    def forward(self, x):
        return x * torch.sigmoid(self.k * self.fc(x.mean((2, 3), keepdim=True)))
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def gate_run(tmp_path_factory):
    """A finished run of a user's block file: (run dir, block file)."""
    from conftest import _compose_train

    root = tmp_path_factory.mktemp("gate")
    block = write(root / "blocks" / "gate.py", GATE)
    run_dir = root / "run"
    run_training(_compose_train(TINY + [f"model.attn={block}:Gate"]), run_dir)
    return run_dir, block


def copy_run(gate_run, tmp_path) -> tuple[Path, Path]:
    """A copy of the gate run with its own copy of the block file (so a test may edit it)."""
    run_dir, block = gate_run
    new_block = write(tmp_path / "blocks" / "gate.py", block.read_text())
    new_run = tmp_path / "run"
    shutil.copytree(run_dir, new_run)
    for name in ("run.json", "metrics.json", "config.yaml"):
        path = new_run / name
        path.write_text(path.read_text().replace(str(block), str(new_block)))
    return new_run, new_block


def test_a_run_records_one_spec_with_every_part(gate_run):
    run_dir, block = gate_run
    spec = json.loads((run_dir / "run.json").read_text())
    assert set(spec) == {"config", "data", "block", "placement", "pretrained", "device"}
    assert spec["block"]["source_sha256"] == hashlib.sha256(block.read_bytes()).hexdigest()
    assert spec["device"] == "cpu" and spec["pretrained"] is None and spec["placement"]["site"] == "residual"
    assert spec["data"]["name"] == "synthetic" and not (run_dir / "block.json").exists()


# ---------------------------------------------------------------- 1. pretrained weights are part of the run

def test_overwritten_pretrained_weights_are_another_run_not_an_old_result(compose_train, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_train(TINY)
    torch.manual_seed(1)
    torch.save(model_from_config(cfg.model, 10, 32).model.state_dict(), tmp_path / "w.pth")
    cfg = compose_train(TINY + ["model.pretrained_file=w.pth"])
    first = run_training(cfg, tmp_path / "run")
    assert first["pretrained"] == {"file": str(tmp_path / "w.pth"),
                                   "sha256": hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()}
    torch.manual_seed(2)
    torch.save(model_from_config(cfg.model, 10, 32).model.state_dict(), tmp_path / "w.pth")  # other weights, same path
    with pytest.raises(ConfigError, match=r"started from other pretrained weights .*w\.pth sha256 \w{12} -> "):
        run_training(cfg, tmp_path / "run")
    # the same relative path from another working directory names another file
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(tmp_path / "w.pth", other / "w.pth")
    monkeypatch.chdir(other)
    with pytest.raises(ConfigError, match="other pretrained weights"):
        run_training(cfg, tmp_path / "run")


def test_timms_weights_are_named_by_timms_version_and_tag(compose_train):
    import timm

    from attn_bench.models.pretrained import pretrained_identity

    cfg = compose_train(["model=resnet50", "model.pretrained=true"])
    assert pretrained_identity(cfg.model) == {"timm": timm.__version__, "weights": "timm/resnet50.a1_in1k"}


# ---------------------------------------------------------------- 2./3. eval and visualize run the recorded block

def test_eval_of_an_edited_block_is_refused_naming_the_file_and_both_hashes(gate_run, tmp_path, capsys):
    run_dir, block = copy_run(gate_run, tmp_path)
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert main(["eval", str(run_dir)]) == 0  # unchanged: evaluates, and reproduces the run's top-1
    assert json.loads((run_dir / "eval_synthetic_test.json").read_text())["top1"] == recorded["final"]["top1"]
    old = hashlib.sha256(block.read_bytes()).hexdigest()
    block.write_text(GATE.replace("self.k * self.fc", "-self.k * self.fc"))  # an edit that changes every output
    new = hashlib.sha256(block.read_bytes()).hexdigest()
    (run_dir / "eval_synthetic_test.json").unlink()
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(block) in err and old[:12] in err and new[:12] in err, err
    assert "--trust-block" in err and not (run_dir / "eval_synthetic_test.json").exists()
    assert main(["eval", str(run_dir), "--trust-block"]) == 0  # the user's explicit choice: the file as it is
    assert (run_dir / "eval_synthetic_test.json").exists()


def test_visualize_skips_an_edited_block_in_one_line(gate_run, tmp_path, capsys):
    pytest.importorskip("pytorch_grad_cam")
    run_dir, block = copy_run(gate_run, tmp_path)
    block.write_text(GATE + "\n# edited\n")
    main(["visualize", str(run_dir), "--images", "2", "--out", str(tmp_path / "fig")])
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert len(lines) == 1 and str(block) in lines[0] and "sha256" in lines[0], lines
    assert not (tmp_path / "fig" / "heatmaps.png").exists()  # nothing drawn under the old run's label


def test_a_results_folder_cannot_make_eval_run_code_its_record_does_not_vouch_for(gate_run, tmp_path, capsys):
    run_dir, _ = copy_run(gate_run, tmp_path)
    marker = tmp_path / "executed"
    write(run_dir / "evil.py", f"open({str(marker)!r}, 'w').write('ran')\n" + GATE)
    config = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(
        "\n".join(f"  attn: {run_dir / 'evil.py'}:Gate" if line.startswith("  attn: ") else line
                  for line in config.splitlines()))
    assert main(["eval", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"would import the file {run_dir / 'evil.py'}" in err, err
    assert "--trust-block" in err and not marker.exists(), "the folder's code ran"


def test_bytes_other_than_the_recorded_ones_never_run(tmp_path):
    """The check and the run are one read: a file swapped in between is refused before it runs."""
    from attn_bench.attention.user import load_class, only_vouched

    path = write(tmp_path / "g.py", GATE)
    with only_vouched(path, "0" * 64):
        with pytest.raises(ConfigError, match=r"has sha256 \w{12} now, the run recorded 000000000000; it was not run"):
            load_class(f"{path}:Gate")


# ---------------------------------------------------------------- 4. a block edited during a sweep

def test_a_job_whose_block_changed_after_launch_is_refused(compose_train, tmp_path):
    block = write(tmp_path / "gate.py", GATE)
    cfg = compose_train(TINY + [f"model.attn={block}:Gate"])
    run_dir = tmp_path / "sweep" / "job"
    expect_at_launch(run_dir, resolve_spec(cfg))  # what the sweep checked and named the directory after
    block.write_text(GATE.replace("k: float = 1.0", "k: float = 2.0"))
    with pytest.raises(ConfigError, match=r"not the run its sweep checked at launch .*gate\.py changed: sha256"):
        run_training(cfg, run_dir)
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "run.json").exists()
    block.write_text(GATE)  # the source the sweep named the job after: the re-run trains it
    expect_at_launch(run_dir, resolve_spec(cfg))
    assert run_training(cfg, run_dir)["status"] == "completed"


def test_the_submitit_launchers_record_each_jobs_block_as_hashed_before_submission(tmp_path, attn_bench_cli,
                                                                                   monkeypatch):
    """hydra/launcher=local (and slurm, the same class): before submitit gets the jobs, each job's
    directory holds what the sweep checked, its block's SHA-256 included; a job that then finds another
    source is refused (the check above). Submission itself is stubbed: no job runs here."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from attn_bench.rundir import LAUNCH_FILE
    from hydra_plugins.attn_bench_launcher import submitit

    block = write(tmp_path / "gate.py", GATE)
    submitted = []
    monkeypatch.setattr(submitit.LocalLauncher, "launch", lambda self, overrides, idx: submitted.append(overrides) or [])
    proc = attn_bench_cli("-m", "hydra/launcher=local", f"model.attn={block}:Gate", "seed=0,1", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(submitted) == 1 and len(submitted[0]) == 2
    expected = hashlib.sha256(block.read_bytes()).hexdigest()
    launches = sorted((tmp_path / "outputs" / "sweeps").glob(f"*/*/{LAUNCH_FILE}"))
    assert [p.parent.name.split(",")[-1] for p in launches] == ["seed=0", "seed=1"]
    assert all(json.loads(p.read_text())["block"]["source_sha256"] == expected for p in launches)


# ---------------------------------------------------------------- 5. a record that contradicts itself

@pytest.mark.parametrize("edit, words", [
    (lambda m: m["final"].update(top1=99.0), "final top-1 99.0 but its last epoch's"),
    (lambda m: m["best"].update(top1=99.0), "best top-1 99.0"),
    (lambda m: m.update(history=[]), "no per-epoch history"),
])
def test_a_hand_edited_metrics_json_is_listed_as_corrupt_never_as_a_row(gate_run, tmp_path, edit, words):
    from attn_bench.commands.report.collect import collect_runs

    run_dir, _ = copy_run(gate_run, tmp_path)
    assert len(collect_runs([run_dir])[0]) == 1  # as written: a row
    metrics = json.loads((run_dir / "metrics.json").read_text())
    edit(metrics)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    runs, problems = collect_runs([run_dir])
    assert runs == [] and [p.status for p in problems] == ["corrupt"] and words in problems[0].reason


# ---------------------------------------------------------------- documented features

def test_arguments_to_your_own_block_are_accepted(compose_train, tmp_path, monkeypatch):
    """The README's `model.attn=my_blocks.py:SRMGate +model.attn_args.k=2` was refused: the model check
    probed the backbone with the baseline but kept the block's arguments."""
    from attn_bench.commands.train.checks import validate_config

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "gate.py", GATE)
    cfg = compose_train(TINY + ["model.attn=gate.py:Gate", "+model.attn_args.k=2"])
    validate_config(cfg)
    metrics = run_training(cfg, tmp_path / "run")
    assert metrics["placement"]["args"] == {"k": 2}
    with pytest.raises(ConfigError, match="has no argument"):
        validate_config(compose_train(TINY + ["model.attn=gate.py:Gate", "+model.attn_args.q=2"]))


# ---------------------------------------------------------------- one line, never a traceback

def test_a_user_blocks_failure_in_training_is_one_line_naming_block_file_line_and_step(compose_train, tmp_path):
    block = write(tmp_path / "gate.py", GATE.replace(
        "        return x * torch.sigmoid",
        "        if not self.training and x.shape[0] == 50:  # the evaluation batch, not the contract's\n"
        "            raise ValueError('only in eval mode')\n"
        "        return x * torch.sigmoid"))
    cfg = compose_train(TINY + [f"model.attn={block}:Gate"])
    with pytest.raises(ConfigError) as caught:
        run_training(cfg, tmp_path / "run")
    line = str(caught.value)
    assert "\n" not in line and f"block {block}:Gate failed at step 4 (epoch 1)" in line
    raised_at = block.read_text().splitlines().index("            raise ValueError('only in eval mode')") + 1
    assert f"{block}:{raised_at}: ValueError: only in eval mode" in line, line
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "only in eval mode" in metrics["reason"]


def test_outputs_folder_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path / "file"))
    assert main(TINY) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"attn-bench: error: ATTN_BENCH_OUTPUTS='{tmp_path / 'file'}' is a file, not a folder; set "
                   f"ATTN_BENCH_OUTPUTS to a folder runs can be written to")
    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path / "file" / "below"))
    assert main(TINY) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write runs into ATTN_BENCH_OUTPUTS=" in err, err


def test_eval_of_an_unfinished_run_says_so_and_names_its_file(gate_run, tmp_path, capsys):
    run_dir, _ = copy_run(gate_run, tmp_path)
    (run_dir / "metrics.json").unlink()  # as a run still training, or killed after its checkpoint
    assert main(["eval", str(run_dir)]) == 0
    assert not (run_dir / "eval_synthetic_test.json").exists()
    written = json.loads((run_dir / "eval_synthetic_test_unfinished_e1b0.json").read_text())
    assert written["finished"] is False
    assert "not a finished run" in capsys.readouterr().err


def test_repeated_stages_and_repeated_sweep_jobs_are_refused(compose_train):
    from attn_bench.commands.train.checks import validate_config
    from attn_bench.sweeps.sweep import check_jobs_differ

    with pytest.raises(ConfigError, match=r"names stage\(s\) \[2\] more than once; give each stage once, e\.g\. \[2\]"):
        validate_config(compose_train(["model.attn=se", "model.attn_stages=[2,2]"]))
    with pytest.raises(ConfigError, match="the sweep lists the same job twice .seed=0."):
        check_jobs_differ([["seed=0"], ["seed=0"]])
    check_jobs_differ([["seed=0"], ["seed=1"]])


def test_a_run_recorded_before_a_key_existed_is_the_same_run_with_its_default(compose_train, tmp_path):
    """model.drop_path_rate, trainer.clip_grad / clip_mode and the lr_base keys came later: a finished run's config without
    them is the run today's defaults describe (its rerun is skipped, not refused); another value differs."""
    from attn_bench.rundir import ADDED_KEYS, spec_difference

    cfg = compose_train(TINY)
    today = OmegaConf.to_container(cfg, resolve=True)
    older = json.loads(json.dumps(today))
    del older["model"]["drop_path_rate"], older["trainer"]["clip_grad"], older["trainer"]["clip_mode"]
    del older["trainer"]["accumulate_steps"]
    for key in ("lr_base", "lr_base_size", "lr_base_scale"):
        del older["trainer"]["optimizer"][key]
    for key in ("step_epochs", "patience_epochs"):
        del older["trainer"]["scheduler"][key]
    assert set(ADDED_KEYS) == {"model.drop_path_rate", "trainer.clip_grad", "trainer.clip_mode",
                               "trainer.optimizer.lr_base", "trainer.optimizer.lr_base_size",
                               "trainer.optimizer.lr_base_scale", "trainer.scheduler.step_epochs",
                               "trainer.scheduler.patience_epochs", "trainer.accumulate_steps"}
    assert spec_difference({"config": older}, {"config": today}) is None
    changed = OmegaConf.to_container(compose_train(TINY + ["model.drop_path_rate=0.1"]), resolve=True)
    found = spec_difference({"config": older}, {"config": changed})
    assert found is not None and "model.drop_path_rate: 0.0 -> 0.1" in found.what
