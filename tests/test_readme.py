"""The README is tested: every fenced command and Python snippet runs as written, on the CPU at small sizes.

Commands are taken from README.md itself, and so are the example files it shows (``my_blocks.py``,
``myconf/experiment/gc_ablation.yaml``), so the text and this test cannot drift. Each ``attn-bench``
command runs in-process with the same words plus small sizes (20 synthetic images, one epoch of one step;
short timings for ``profile``), in a temporary working directory whose ``outputs/`` it writes. Placeholders
(``<run>``, ``<sweep dir>``, ``RUN_A RUN_B``) are filled with the runs the earlier commands made. A command
that cannot run here is listed in ``NOT_HERE`` with its reason, and the test fails when that list and the
README disagree, so the list is reviewed, not silent. Figures the README quotes are measured by the
``scripts/`` benchmarks, not here.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from attn_bench.cli import main
from conftest import REPO, SHARED_CIFAR10

README = (REPO / "README.md").read_text()

# small sizes added to every training command (and to each job of a sweep)
SMALL_TRAIN = ["data.train_size=20", "data.test_size=20", "trainer.epochs=1", "trainer.batch_size=20",
               "measure_cost=false", "trainer.progress=false", "print_config=false"]
SMALL_PROFILE = ["img_size=32", "latency.warmup_s=0", "latency.budget_s=0.05", "latency.min_repeats=1",
                 "throughput.warmup_s=0", "throughput.budget_s=0.05", "throughput.batch_size=2"]
SMALL_EVAL = ["data.eval_subset_per_class=20"]  # the CIFAR-10 example: 200 of its 10,000 test images

# command fragment -> why it cannot run on a CPU-only machine without network or datasets
NOT_HERE = {
    "python3 -m venv": "the install commands: CI runs the test one (.ci/run) and scripts/time_default_run.py "
                       "times the main job",
    "pip install": "installs packages (the extras are installed for the suite already)",
    "data=cifar100": "needs the CIFAR-100 files, which cannot be downloaded here",
    "data.root=/datasets/birds": "needs the reader's own dataset folder",
    "hydra/launcher=slurm": "needs a SLURM cluster",
    "torchrun --nproc_per_node=4": "four GPUs (and CIFAR-100)",
    "tensorboard --logdir": "starts a server",
    "device=cuda": "needs a GPU",
    "mylab.attention:SRMGate": "a class in the reader's own installed package",
    "experiment=gc_ablation": "the example trains on /datasets/cifar10 (absent); composed below instead",
    "hydra/sweeper=optuna_top1": "tests/sweeps/test_optuna.py runs it at small size (here its sweep directory "
                                 "would stand beside the example sweep the later commands read)",
}


def fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def commands() -> list[str]:
    """Every shell command of the README's bash blocks, once each: continuation lines joined, comments
    dropped, ``&&`` chains split."""
    found = []
    for block in fenced("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(re.sub(r"<(\w+) (\w+)>", r"<\1_\2>", line), comments=True)
            while words:  # an install line is one command; `attn-bench ... && attn-bench ...` two
                cut = words.index("&&") if "&&" in words and words[0] == "attn-bench" else len(words)
                command = shlex.join(words[:cut])
                if command not in found:
                    found.append(command)
                words = words[cut + 1:]
    return found


def not_here(command: str) -> str | None:
    return next((why for fragment, why in NOT_HERE.items() if fragment in command), None)


def test_the_list_of_commands_that_cannot_run_here_matches_the_readme():
    listed = {fragment for fragment in NOT_HERE if any(fragment in c for c in commands())}
    assert listed == set(NOT_HERE), f"NOT_HERE names commands the README no longer has: {set(NOT_HERE) - listed}"
    runnable = [c for c in commands() if not not_here(c)]
    assert len(runnable) >= 15, runnable  # most of what the README shows runs here


def _example_files(root: Path) -> None:
    """The files the README shows, written where it says they live."""
    (block,) = [b for b in fenced("python") if b.startswith("# my_blocks.py")]
    (root / "my_blocks.py").write_text(block)
    (yaml,) = fenced("yaml")
    assert "`myconf/experiment/gc_ablation.yaml`" in README
    (root / "myconf" / "experiment").mkdir(parents=True)
    (root / "myconf" / "experiment" / "gc_ablation.yaml").write_text(yaml)


def _fill(words: list[str], root: Path) -> list[str]:
    """Placeholders -> the runs made so far; ``[--ckpt best]`` (optional syntax) -> ``--ckpt best``."""
    sweeps = sorted((root / "outputs" / "sweeps").glob("*"))
    runs = sorted(p.parent for p in (root / "outputs" / "runs").rglob("metrics.json"))
    jobs = sorted(p.parent for p in sweeps[0].glob("*/metrics.json")) if sweeps else []
    out = []
    for word in words:
        if word in ("[--ckpt", "best]"):
            out.append(word.strip("[]"))
        elif word == "RUN_A":
            out.append(str(jobs[0]))
        elif word == "RUN_B":
            out.append(str(jobs[1]))
        else:
            word = re.sub(r"outputs/sweeps/<\w+>", str(sweeps[0]) if sweeps else "<no sweep yet>", word)
            word = word.replace("outputs/runs/<run>", str(runs[0]) if runs else "<no run yet>")
            out.append(word.replace("/datasets/cifar10-jpeg", str(SHARED_CIFAR10)))
    return out


def _small(argv: list[str]) -> list[str]:
    if argv[:1] == ["profile"]:
        return argv + SMALL_PROFILE
    if argv[:1] == ["eval"]:
        return argv + (SMALL_EVAL if "data=imagefolder" in argv else [])
    if argv[:1] and argv[0] in ("report", "visualize", "check-block", "blocks", "export"):
        return argv
    sweep = ["hydra.launcher.cpu_workers=2"] if "-m" in argv else []
    return argv + SMALL_TRAIN + sweep


def _has_placeholder(command: str) -> bool:
    return bool(re.search(r"<\w+>|RUN_A", command))


@pytest.mark.parametrize("snippet", [b for b in fenced("python") if not b.startswith("# my_blocks.py")])
def test_every_python_snippet_runs(snippet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    assert "model" in namespace and sum(p.numel() for p in namespace["model"].parameters()) > 0


def test_every_command_runs_as_written_at_small_sizes(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pytorch_grad_cam")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATTN_BENCH_OUTPUTS", raising=False)
    _example_files(tmp_path)
    todo = [c for c in commands() if not not_here(c)]
    if not (SHARED_CIFAR10 / "test").is_dir():  # the evaluation on real CIFAR-10: only where it is
        todo = [c for c in todo if "/datasets/cifar10-jpeg" not in c]
    ran, filled = [], set()
    for command in sorted(todo, key=_has_placeholder):  # the runs first, then what reads them
        argv = _fill(shlex.split(command), tmp_path)
        assert argv[0] == "attn-bench", command
        if tuple(argv) not in filled:  # `<sweep dir>` and `<sweep>` name one folder: one command, run once
            code = main(_small(argv[1:]))
            captured = capsys.readouterr()
            assert code == 0, f"{command}\n{captured.err[-3000:]}"
            filled.add(tuple(argv))
        ran.append(command)
    assert len(ran) == len(todo)
    # what the commands made: the main job's run, the sweep's 12 jobs, its report and figures
    assert any((tmp_path / "outputs" / "runs").rglob("metrics.json"))
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert len(list(sweep.glob("*/metrics.json"))) == 12
    (report,) = sweep.rglob("report.md")
    rows = [line.split("|")[1].strip() for line in report.read_text().splitlines()
            if line.startswith("| ") and "---" not in line][1:]  # the table's rows, below its header
    assert sorted(r.split("@")[0] for r in rows) == ["SRMGate", "cbam", "none", "se"], rows
    assert (sweep / "visualize" / "heatmaps.png").exists() and len(list(tmp_path.rglob("heatmaps.png"))) == 2
    assert (sweep / "visualize" / "channel_weights.png").exists()  # the sweep has SE


def test_the_config_folder_example_composes_with_its_sweep(tmp_path, monkeypatch, capsys):
    """The gc_ablation example cannot train here (its data folder); it composes, and sweeps what it says."""
    monkeypatch.chdir(tmp_path)
    _example_files(tmp_path)
    command = next(c for c in commands() if "experiment=gc_ablation" in c)
    argv = [w for w in shlex.split(command)[1:] if w != "-m"]
    assert main(argv + ["--cfg", "all"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 100" in out and "precision: bf16" in out and "model.attn: none,se,gc" in out
