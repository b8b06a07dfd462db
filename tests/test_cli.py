"""The command line: clear one-line errors for user mistakes, non-zero exits, no tracebacks."""
import os
import subprocess
import sys

import pytest
import torch

from attn_bench.cli import main


def run_cli(args, tmp_path, timeout=300):
    env = dict(os.environ, ATTN_BENCH_OUTPUTS=str(tmp_path / "outputs"))
    return subprocess.run([sys.executable, "-m", "attn_bench", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_card_command_without_cifar100_files_names_the_path_and_the_fix(tmp_path):
    proc = run_cli(["model.attn=gam", "data=cifar100", f"data.root={tmp_path / 'nowhere'}"], tmp_path)
    assert_one_line_error(proc, "cifar100", str(tmp_path / "nowhere"), "data.download=true", "data.root")
    metrics = list((tmp_path / "outputs").rglob("metrics.json"))
    assert not metrics or '"failed"' in metrics[0].read_text()


@pytest.mark.parametrize("args, fragments", [
    (["model=resnet999"], ["unknown model 'resnet999'", "resnet18", "mobilenetv2_100"]),
    (["data=imagenette"], ["unknown data 'imagenette'", "cifar100", "synthetic"]),
    (["model.attn=skn"], ["unknown attention block 'skn'", "none", "gam", "cbam", "stn"]),
    (["model.attn=se,bogus"], ["unknown attention block 'bogus'"]),
    (["debug=slow"], ["unknown debug 'slow'; valid choices: fast"]),
])
def test_unknown_names_list_the_valid_choices(args, fragments, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    for fragment in fragments:
        assert fragment in err


@pytest.mark.parametrize("override, fragment", [
    ("trainer.optimizer.lr=-0.1", "trainer.optimizer.lr must be positive"),
    ("trainer.epochs=0", "trainer.epochs must be a positive integer"),
    ("model.backbone=vit_base", "unknown backbone 'vit_base'"),
    ("trainer.batch_size=20000", "larger than the 5000 training images"),
    pytest.param("trainer.precision=fp16", "fp16 needs a CUDA device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is valid on this CUDA host")),
    ("model.attn_stages=[7]", "this backbone has stages [1, 2, 3, 4]"),
    ("data=imagefolder", "missing value(s) for data.num_classes, data.root"),
    ("trainer.optimizer.lr=abc", "trainer.optimizer.lr must be a number, got 'abc'"),
    ("trainer.optimizer.lr=inf", "trainer.optimizer.lr must be a finite number, got inf"),
    ("+trainer.swa=true", "unknown key trainer.swa: nothing reads it; valid keys under trainer: accumulate_steps, batch_size"),
    ("trainer.optimizer.weight_decay=nan", "trainer.optimizer.weight_decay must be a finite number, got nan"),
    ("data.img_size=64", "synthetic images are 32x32; data.img_size=64 is not supported"),
    ("data.eval_subset_per_class=0", "data.eval_subset_per_class must be a positive integer or null"),
    ("trainer.log_every_steps=0.5", "trainer.log_every_steps must be an integer"),
    ("model.placement=papers", "unknown model.placement 'papers'; valid choices: paper, uniform"),
    ("model=mobilenetv2_100 model.attn_site=trunk",
     "model.attn_site 'trunk' does not exist in mobilenetv2_100; its sites: residual, mid, stage_end, input"),
    ("trainer.limit_batches=0", "trainer.limit_batches must be a positive integer or null, got 0"),
    ("trainer.mixup.mixup_alpha=-0.2", "trainer.mixup.mixup_alpha must be >= 0 (0 = off), got -0.2"),
    ("trainer.mixup.cutmix_alpha=1.0 trainer.batch_size=63", "trainer.batch_size must be even, got 63"),
    ("data.augment=randaug", "unknown data.augment 'randaug'; valid choices: None, randaugment, autoaugment"),
    ("data.random_erasing=1.5", "data.random_erasing must be in [0, 1], got 1.5"),
    ("trainer.scheduler.name=multistep trainer.scheduler.decay_epochs=[3,1]",
     "trainer.scheduler.decay_epochs must be increasing positive epochs, got [3, 1]"),
    ("trainer.mixup.mode=row", "unknown trainer.mixup.mode 'row'; valid choices: batch, pair, elem"),
    ("trainer.ema.decay=1.0", "trainer.ema.decay must be in (0, 1), got 1.0"),
    ("trainer.ema.decay=0", "trainer.ema.decay must be in (0, 1), got 0"),
    ("trainer.ema.enabled=maybe", "trainer.ema.enabled must be true or false, got 'maybe'"),
])
def test_invalid_values_are_rejected_before_training(override, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path))
    try:  # refused before Hydra starts (a +key nothing reads: a return code) or inside the run (an exit)
        code = main(["trainer.progress=false", *override.split()])
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.pt")), "nothing was trained"


def test_blocks_command_lists_every_block_with_its_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")  # one line per cell, so that the checks below see whole values
    assert main(["blocks"]) == 0
    out = capsys.readouterr().out
    for name in ("none", "se", "eca", "gc", "ca", "gam", "cbam", "bam", "simam", "triplet", "sk", "nl", "psa", "stn",
                 "srm", "sge", "ese", "scse", "nam", "sa", "fca", "cc", "splat", "ge", "cot", "gct", "ema"):
        assert f" {name} " in out
    assert "rd_ratio" in out and "kernel_size" in out
    assert "input, stage_end, trunk" in out  # stn's sites
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in out.splitlines() if line.count("│") == 5}  # the backbone table's rows
    assert rows["resnet56_cifar"] == ["9 / 9 / 9", "BasicBlock", "residual, mid, stage_end, trunk, conv, input, convs"]
    assert rows["resnet50"] == ["3 / 4 / 6 / 3", "Bottleneck", "residual, mid, stage_end, trunk, conv, input, convs"]
    assert rows["mobilenetv2_100"][2] == "residual, mid, stage_end, input, convs"  # no trunk, no 3x3 conv to replace


def test_sweep_choice_syntax_is_checked_too(capsys):
    assert main(["-m", "model.attn=choice(se,nonlocal)"]) == 2
    assert "unknown attention block 'nonlocal'" in capsys.readouterr().err


def test_a_run_prints_what_it_measured_and_lands_in_its_named_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path))
    monkeypatch.delenv("COLUMNS", raising=False)
    args = ["data.train_size=300", "data.test_size=100", "trainer.epochs=1", "trainer.batch_size=50",
            "trainer.progress=false"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for label in ("top-1 / top-5 (final)", "params (attention)", "MACs / FLOPs", "latency, batch 1", "run directory"):
        assert label in out
    run_dir = tmp_path / "runs" / "data.test_size=100,data.train_size=300,trainer.batch_size=50,trainer.epochs=1"
    assert (run_dir / "metrics.json").exists(), sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert "trainer.progress" not in run_dir.name  # keys that do not change results stay out of the name
    assert any("run directory" in line and str(run_dir) in line for line in out.splitlines())  # piped: unwrapped
    # what to run next, with the real paths
    assert f"next: tensorboard --logdir {run_dir}" in out and f"attn-bench report {tmp_path / 'runs'}" in out
    assert f"attn-bench visualize {run_dir}" in out



@pytest.mark.parametrize("line, expected, absent", [
    ("attn-bench model.attn=", {"model.attn=none", "model.attn=se", "model.attn=gam", "model.attn=triplet"}, set()),
    ("attn-bench -m model.attn=none,c", {"model.attn=none,ca", "model.attn=none,cbam"}, {"model.attn=none,se"}),
    ("attn-bench ", {"blocks", "check-block", "export", "profile", "report", "visualize", "model=", "data="}, set()),
    ("attn-bench pro", {"profile"}, {"report"}),
    ("attn-bench data=", {"data=cifar10", "data=synthetic"}, set()),  # Hydra's own completion still works
])
def test_shell_completion_knows_blocks_and_subcommands(line, expected, absent, monkeypatch, capsys):
    """Through Hydra's completion entry point (what `eval "$(attn-bench -sc install=bash)"` calls)."""
    monkeypatch.setenv("COMP_LINE", line)
    try:
        main(["-sc", "query=bash"])
    except SystemExit as exit_info:
        assert not exit_info.code
    offered = set(capsys.readouterr().out.split())
    assert expected <= offered and not absent & offered, offered


@pytest.mark.parametrize("argv", [["-m", "model.attn=none,se", "--cfg", "hydra"], ["--info", "-c", "job"]])
def test_two_hydra_modes_are_one_line_not_a_traceback(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be combined" in err


MY_EXPERIMENT = """# @package _global_
defaults:
  - override /model: resnet18_tiny
model:
  attn: eca
trainer:
  epochs: 2
"""


@pytest.mark.parametrize("how", ["--config-dir", "-cd", "searchpath"])
def test_your_own_experiment_configs_compose_from_your_config_dir(tmp_path, capsys, how):
    (tmp_path / "myconf" / "experiment").mkdir(parents=True)
    (tmp_path / "myconf" / "experiment" / "mine.yaml").write_text(MY_EXPERIMENT)
    where = [f"hydra.searchpath=[file://{tmp_path / 'myconf'}]"] if how == "searchpath" else [how, str(tmp_path / "myconf")]
    assert main([*where, "experiment=mine", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "attn: eca" in out and "epochs: 2" in out
    assert main([*where, "experiment=mien"]) == 2  # a typo still lists the choices, yours among them
    assert "unknown experiment 'mien'; valid choices: abn_cifar100, cifar100_blocks, mine, simam_cifar100" in capsys.readouterr().err


def test_debug_fast_runs_a_few_batches_prints_the_config_and_is_left_out_of_reports(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path / "outputs"))
    assert main(["debug=fast", "trainer.progress=false"]) == 0
    out = capsys.readouterr().out
    assert "config (resolved)" in out and "limit_batches: 5" in out and "not comparable" in out
    (metrics_file,) = (tmp_path / "outputs").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["steps"] == 5 and metrics["history"][0]["eval_images"] == 5 * 64 and "cost" not in metrics
    assert main(["report", str(tmp_path / "outputs")]) == 0
    report = capsys.readouterr().out
    assert "debug" in report and "not comparable" in report


def test_print_config_false_prints_no_tree(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path / "outputs"))
    assert main(["debug=fast", "print_config=false", "trainer.progress=false"]) == 0
    assert "config (resolved)" not in capsys.readouterr().out
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()  # printing or not changes no number: not in the name
    assert run_dir.name == "debug=fast", run_dir.name


def test_everything_the_help_texts_name_is_accepted(attn_bench_cli, tmp_path):
    """`attn-bench --help` and each subcommand's --help: every subcommand it names answers --help, every
    group option it lists composes, and every --option a help text names is one its parser knows (an
    option renamed in the code cannot stay in the help)."""
    import re

    from attn_bench.commands.train.app import check_overrides

    def help_text(*argv: str) -> str:
        proc = attn_bench_cli(*argv)
        assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stderr}"
        return proc.stdout

    top = help_text("--help")
    named = re.findall(r"attn-bench ([a-z][a-z-]+)", top.split("Subcommands", 1)[1].split("== Configuration groups")[0])
    assert set(named) == {"blocks", "check-block", "eval", "export", "profile", "report", "visualize"}  # every one
    groups = re.findall(r"^(\w+): ([\w, ]+)$", top.split("== Configuration groups ==", 1)[1].split("== Config ==")[0],
                        re.M)
    assert {g for g, _ in groups} >= {"data", "model", "trainer", "experiment", "debug"}
    for group, options in groups:
        for option in options.split(", "):
            check_overrides([f"{group}={option}"])  # a listed option that does not exist raises here
    for sub in sorted(set(named) | {"eval", "visualize"}):
        text = help_text(sub, "--help")
        assert text.strip(), sub
        for option in sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", text)) - {"--help"}):
            proc = attn_bench_cli(sub, str(tmp_path / "nowhere"), option)
            err = proc.stderr
            assert proc.returncode != 0, (sub, option)
            assert "unrecognized arguments" not in err and "unknown" not in err, (sub, option, err)


@pytest.mark.parametrize("args, line", [
    (["model.atn=se"], "unknown key 'model.atn'; did you mean 'model.attn'?"),
    (["trainer.epoch=2"], "unknown key 'trainer.epoch'; did you mean 'trainer.epochs'?"),
    (["-m", "model.attn=none,se", "trainer.optimizer.lrr=0.1"], "did you mean 'trainer.optimizer.lr'?"),
    (["model=resnet50,resnet18", "model.attn_args.k=2"], "a key of your own needs '+' (+model.attn_args.k=...)"),
    (["+trainer.epoch=2"], "unknown key trainer.epoch: nothing reads it; did you mean 'trainer.epochs'?"),
    (["data=imagefolder", "data.rot=/x"], "unknown key 'data.rot'; did you mean 'data.root'?"),  # root is ??? there
    (["evall"], "unknown subcommand 'evall'; did you mean 'eval'? valid subcommands: blocks, check-block, eval, "
                "export, profile, report, visualize"),
])
def test_a_typo_in_a_key_or_a_subcommand_is_one_line_with_the_closest_name(args, line, attn_bench_cli, tmp_path):
    proc = attn_bench_cli(*args)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and line in err[0], proc.stderr
    assert not list(tmp_path.rglob("*.pt")), "nothing was trained"


def test_a_mistyped_subcommand_is_answered_without_loading_torch():
    """The package imports build_model on first use, so a typo costs no torch/timm import (0.06 s, not 3.5 s)."""
    code = ("import sys; from attn_bench.cli import main; code = main(['evl']); "
            "print(code, 'torch' in sys.modules, 'timm' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stderr[-2000:]
    assert "unknown subcommand 'evl'" in proc.stderr and "eval" in proc.stderr


@pytest.mark.parametrize("argv, env, expect", [
    (["--help"], {}, "== Configuration groups =="),
    (["-sc", "query=bash"], {"COMP_LINE": "attn-bench model.attn=s"}, "model.attn=se"),  # TAB completion
    (["model.atn=se"], {}, "did you mean 'model.attn'"),  # a key typo
    (["+trainer.epoch=2"], {}, "unknown key trainer.epoch: nothing reads it; did you mean 'trainer.epochs'"),
    *[([sub, "--help"], {}, f"attn-bench {sub}") for sub in ("blocks", "check-block", "eval", "export",
                                                                    "profile", "report", "visualize")],
])
def test_help_completion_and_key_errors_answer_without_loading_torch(argv, env, expect):
    """--help, completion and every error about config keys compose configs only: no torch or timm import
    (measured: --help 3.75 s -> 0.51 s on a 2-core Xeon where `import torch` takes 1.41 s)."""
    code = ("import sys\nfrom attn_bench.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
            "except SystemExit as stop:\n    code = stop.code\n"
            "print('\\nMODULES', 'torch' in sys.modules, 'timm' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert proc.stdout.split("MODULES")[-1].split() == ["False", "False"], proc.stderr[-2000:]
    assert expect in proc.stdout + proc.stderr


def test_an_added_key_nothing_reads_is_refused_before_a_run_folder_is_made(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path / "outputs"))
    assert main(["+trainer.epoch=2", "data.train_size=100"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key trainer.epoch: nothing reads it; did you mean 'trainer.epochs'" in err
    assert not (tmp_path / "outputs").exists()  # Hydra made outputs/runs/+trainer.epoch=2/ when the run refused it


def test_blocks_piped_keeps_each_backbone_on_one_line(capsys, monkeypatch):
    """Into a pipe or file (not a terminal) the tables are not wrapped at rich's 80-column default."""
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["blocks"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "resnet110_abn_cifar" in line]
    assert len(lines) == 1 and "residual, mid, stage_end, trunk, conv, input" in lines[0]
