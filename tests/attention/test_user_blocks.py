"""Bring your own block: file and module specs, plug-ins, the contract, the doctor, and results that
follow the block's source."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import pytest
import torch

from attn_bench.attention import block_identity, create_block, get_block_class, list_blocks
from attn_bench.cli import main
from attn_bench.errors import ConfigError
from attn_bench.models import build_model

# the README's example block: a gate from per-channel mean and std (SRM-like), identity-free
SRM_GATE = '''
import torch
from torch import nn


class SRMGate(nn.Module):
    """Style-based recalibration: a per-channel gate from each channel's mean and std."""

    def __init__(self, channels: int, k: int = 1):
        super().__init__()
        self.mix = nn.Conv1d(channels, channels, kernel_size=2 * k, groups=channels, bias=False)
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x):
        flat = x.flatten(2)
        std = flat.std(dim=2, unbiased=False) if flat.shape[2] > 1 else torch.zeros_like(flat[:, :, 0])
        style = torch.stack([flat.mean(dim=2), std], dim=2).repeat(1, 1, self.mix.kernel_size[0] // 2)
        return x * torch.sigmoid(self.bn(self.mix(style).squeeze(2)))[:, :, None, None]


class Helper:
    pass
'''

BROKEN = {
    "shape": ("class Block(nn.Module):\n    def __init__(self, channels):\n        super().__init__()\n"
              "        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)\n"
              "    def forward(self, x):\n        return self.conv(x)\n", "output shape = input shape"),
    "unused": ("class Block(nn.Module):\n    def __init__(self, channels):\n        super().__init__()\n"
               "        self.used = nn.Conv2d(channels, channels, 1)\n        self.spare = nn.Linear(channels, 4)\n"
               "    def forward(self, x):\n        return x * torch.sigmoid(self.used(x))\n",
               "gradients reach every parameter"),
    "random": ("class Block(nn.Module):\n    def __init__(self, channels):\n        super().__init__()\n"
               "        self.scale = nn.Parameter(torch.ones(1))\n"
               "    def forward(self, x):\n        return x * self.scale * (1 + 0.1 * torch.rand_like(x))\n",
               "deterministic on the CPU"),
    "no_channels": ("class Block(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                    "        self.scale = nn.Parameter(torch.ones(1))\n"
                    "    def forward(self, x):\n        return x * self.scale\n", "constructor takes channels first"),
}


def exit_code(argv: list[str]) -> int:
    """The CLI's exit status (the Hydra app exits; subcommands return)."""
    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


def write_block(folder: Path, source: str = SRM_GATE, name: str = "my_blocks.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(source)
    return path


def test_a_file_block_builds_and_trains_from_python(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_block(tmp_path)
    model = build_model("resnet18", "my_blocks.py:SRMGate", num_classes=10, attn_args={"k": 2},
                        timm_kwargs={"channels": [16, 32, 64, 128]})
    gates = [m for m in model.modules() if type(m).__name__ == "SRMGate"]
    assert len(gates) == 8 and all(g.mix.kernel_size == (4,) for g in gates)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(), loss.backward(), optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    # an absolute path names the same block
    assert get_block_class(f"{tmp_path / 'my_blocks.py'}:SRMGate") is get_block_class("my_blocks.py:SRMGate")


def test_a_module_block_and_its_identity(tmp_path, monkeypatch):
    package = tmp_path / "mylab"
    write_block(package, name="attention.py")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = get_block_class("mylab.attention:SRMGate")
    assert cls.__name__ == "SRMGate" and create_block("mylab.attention:SRMGate", 32, k=1)(torch.randn(2, 32, 4, 4)).shape == (2, 32, 4, 4)
    identity = block_identity("mylab.attention:SRMGate")
    assert identity == {"attn": "mylab.attention:SRMGate", "class": "mylab.attention:SRMGate",
                        "source": str((package / "attention.py").resolve()),
                        "source_sha256": hashlib.sha256(SRM_GATE.encode()).hexdigest()}
    assert block_identity("se") == {"attn": "se", "class": "attn_bench.attention.squeeze_excite:SqueezeExcite"}


@pytest.mark.parametrize("spec, source, message", [
    ("missing.py:Gate", None, r"file '.*missing.py' not found \(relative paths start at the working directory"),
    ("bad.py:Gate", "class Gate(nn.Module:\n    pass\n", r"bad.py:1: syntax error"),
    ("bad.py:Gaet", SRM_GATE, r"no class 'Gaet' in bad.py; nn.Module classes defined there: SRMGate"),
    ("bad.py:Helper", SRM_GATE, r"'Helper' is not a torch.nn.Module subclass"),
    ("bad.py:Gate", "import torch\n\nx = torch.zeros(2)\ny = x.frobnicate()\n",
     r"importing it failed at .*bad.py:4: AttributeError: 'Tensor' object has no attribute 'frobnicate'"),
    ("nosuchpackage.blocks:Gate", None, r"cannot import 'nosuchpackage.blocks'|no module named 'nosuchpackage.blocks'"),
    ("bad.py:", SRM_GATE, r"expected path/to/file.py:ClassName or package.module:ClassName"),
])
def test_bad_specs_are_one_line_errors(spec, source, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if source is not None:
        write_block(tmp_path, source, "bad.py")
    with pytest.raises(ConfigError, match=message) as err:
        get_block_class(spec)
    assert "\n" not in str(err.value)


def test_bad_specs_stop_the_cli_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path / "outputs"))
    write_block(tmp_path, "import torch\nraise RuntimeError('my block is broken')\n", "bad.py")
    assert exit_code(["model.attn=bad.py:Gate", "trainer.progress=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.py:2: RuntimeError: my block is broken" in err
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.json"))


def test_a_block_that_breaks_the_contract_stops_training_before_the_first_step(tmp_path, monkeypatch, compose_train):
    from attn_bench.commands.train import run_training

    monkeypatch.chdir(tmp_path)
    write_block(tmp_path, "import torch\nfrom torch import nn\n\n" + BROKEN["shape"][0])
    with pytest.raises(ConfigError, match=r"block my_blocks.py:Block breaks the contract \(output shape = input shape\)"):
        run_training(compose_train(["model.attn=my_blocks.py:Block", "trainer.progress=false"]), tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()


def install_plugin(monkeypatch, name: str, target: str) -> None:
    """An installed plug-in block: ``name`` in the ``attn_bench.blocks`` entry points, standing for ``target``."""
    points = importlib.metadata.EntryPoints([importlib.metadata.EntryPoint(name=name, value=target,
                                                                           group="attn_bench.blocks")])
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: points if kw.get("group") == "attn_bench.blocks" else real(**kw))


def test_entry_point_blocks_are_listed_and_usable_by_name(tmp_path, monkeypatch, capsys):
    package = tmp_path / "plugin_pkg"
    write_block(package, name="gates.py")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    install_plugin(monkeypatch, "srm_gate", "plugin_pkg.gates:SRMGate")
    assert list_blocks()[-1] == "srm_gate"
    assert get_block_class("srm_gate").__name__ == "SRMGate"
    assert block_identity("srm_gate")["class"] == "plugin_pkg.gates:SRMGate"
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["blocks"]) == 0
    out = capsys.readouterr().out
    assert " srm_gate " in out and "plugin_pkg.gates:SRMGate" in out


def test_a_plug_in_under_a_builtins_name_is_said_to_be_unused_with_the_spec_that_runs_it(monkeypatch, caplog):
    """SRM became a built-in after plug-ins could be called 'srm': such a plug-in never runs as 'srm' unsaid."""
    install_plugin(monkeypatch, "srm", "plugin_pkg.gates:SRMGate")
    with caplog.at_level("WARNING", logger="attn_bench"):  # what a run records of its block, once per run
        assert block_identity("srm") == {"attn": "srm", "class": "attn_bench.attention.srm:StyleRecalibration"}
    assert get_block_class("srm").__name__ == "StyleRecalibration"
    assert "installed plug-in of that name (plugin_pkg.gates:SRMGate) is not used: " \
           "model.attn=plugin_pkg.gates:SRMGate runs it" in caplog.text
    assert list_blocks().count("srm") == 1


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "gam" else name  # 13 s:
                                  for name in list_blocks(include_baseline=False)])  # 528 M parameters at r=4
def test_the_doctor_passes_every_builtin_block(name):
    from attn_bench.commands.check_block import run_checks

    checks = run_checks(name, {}, timing=False)
    assert [c.name for c in checks if c.passed is False] == []
    assert any(c.name.startswith("cost on resnet50") for c in checks)


@pytest.mark.parametrize("broken", BROKEN)
def test_the_doctor_names_the_check_a_broken_block_fails(broken, tmp_path, monkeypatch):
    from attn_bench.commands.check_block import run_checks

    monkeypatch.chdir(tmp_path)
    source, check = BROKEN[broken]
    write_block(tmp_path, "import torch\nfrom torch import nn\n\n" + source, f"{broken}.py")
    checks = run_checks(f"{broken}.py:Block", {}, timing=False)
    assert [c.name for c in checks if c.passed is False] == [check]


def test_the_doctor_command_prints_its_table_and_exit_status(tmp_path, attn_bench_cli, monkeypatch):
    write_block(tmp_path)
    write_block(tmp_path, "import torch\nfrom torch import nn\n\n" + BROKEN["unused"][0], "unused.py")
    monkeypatch.setenv("COLUMNS", "200")
    good = attn_bench_cli("check-block", "my_blocks.py:SRMGate", "k=2")
    assert good.returncode == 0, good.stderr
    for fragment in ("output shape = input shape", "identity at initialisation", "cost on resnet50",
                     "CPU latency on resnet18", "SE: +2,530,992"):
        assert fragment in good.stdout, good.stdout
    bad = attn_bench_cli("check-block", "unused.py:Block")
    assert bad.returncode == 1 and "no gradient reaches spare.bias, spare.weight" in bad.stdout
    assert bad.stderr.strip() == "attn-bench: unused.py:Block failed: gradients reach every parameter"


@pytest.fixture
def run_cli(attn_bench_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    return lambda cwd, *args: attn_bench_cli(*args, cwd=cwd)


TINY_CLI = ["data.train_size=200", "data.test_size=100", "trainer.epochs=1", "trainer.batch_size=50",
            "trainer.progress=false", "measure_cost=false"]


def test_results_follow_the_blocks_source(tmp_path, run_cli):
    """Editing the block and running the same command again trains the new block in a new directory;
    the old result stays where it was, and a directory reused by hand is refused."""
    path = write_block(tmp_path)
    first = run_cli(tmp_path, "model.attn=my_blocks.py:SRMGate", *TINY_CLI)
    assert first.returncode == 0, first.stderr[-3000:]
    (first_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f",model.attn=my_blocks.py_SRMGate@{sha[:6]}," in first_dir.name  # the name carries the source hash
    metrics = json.loads((first_dir / "metrics.json").read_text())
    assert metrics["block"] == {"attn": "my_blocks.py:SRMGate", "class": f"{path.resolve()}:SRMGate",
                                "source": str(path.resolve()), "source_sha256": sha}
    assert metrics["status"] == "completed" and metrics["final"]["top1"] > 0
    assert f"SRMGate@{sha[:6]}" in first.stdout  # the run summary's title
    stamp = (first_dir / "metrics.json").stat().st_mtime_ns

    path.write_text(SRM_GATE.replace("torch.sigmoid(self.bn(", "torch.sigmoid(2 * self.bn("))  # an edit
    new_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    second = run_cli(tmp_path, "model.attn=my_blocks.py:SRMGate", *TINY_CLI)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already completed" not in second.stdout + second.stderr
    dirs = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(dirs) == 2 and (first_dir / "metrics.json").stat().st_mtime_ns == stamp
    (second_dir,) = [d for d in dirs if d != first_dir]
    assert json.loads((second_dir / "metrics.json").read_text())["block"]["source_sha256"] == new_sha

    path.write_text(SRM_GATE)  # back to the first version; the first directory, forced, is the same run again
    again = run_cli(tmp_path, "model.attn=my_blocks.py:SRMGate", *TINY_CLI, f"hydra.run.dir='{second_dir}'")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("attn-bench: error: run directory")
    assert f"holds a run of another version of block my_blocks.py:SRMGate ({path.resolve()} changed: sha256 " \
           f"{new_sha[:12]} -> {sha[:12]})" in again.stderr


@pytest.mark.slow  # 24 s; tests/test_readme.py runs the README's sweep of built-ins and a file block, and its report
def test_a_sweep_mixing_builtins_and_a_file_block_reports_its_row(tmp_path, run_cli, monkeypatch):
    """A built-in, a file block and a module block on PYTHONPATH, in one sweep (the attn-bench script does not
    look in the working directory for modules; the error says so, and this test failed for that reason)."""
    write_block(tmp_path)
    module_sha = hashlib.sha256(write_block(tmp_path, SRM_GATE.replace("class SRMGate", "class OtherGate"),
                                            "other_gates.py").read_bytes()).hexdigest()[:6]
    monkeypatch.syspath_prepend(str(tmp_path))  # the sweep's own checks, in this process
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # its jobs
    swept = run_cli(tmp_path, "-m", "model.attn=none,my_blocks.py:SRMGate,other_gates:OtherGate", "seed=0",
                    "hydra.launcher.cpu_workers=2", *TINY_CLI)  # two jobs at a time: the start-up is most of each
    assert swept.returncode == 0, swept.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()
    sha = hashlib.sha256((tmp_path / "my_blocks.py").read_bytes()).hexdigest()[:6]
    assert (sweep / f"model.attn=my_blocks.py_SRMGate@{sha}" / "metrics.json").exists(), sorted(sweep.iterdir())
    report = run_cli(tmp_path, "report", str(sweep), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "report" / "report.md").read_text()
    blocks = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert sorted(blocks[1:]) == sorted(["none", f"SRMGate@{sha}", f"OtherGate@{module_sha}"]), table


def test_the_hash_is_of_the_file_that_defines_the_class(tmp_path, monkeypatch):
    """A package re-exporting its block from __init__: editing the block's own file changes the hash."""
    package = tmp_path / "relab"
    attention = write_block(package, name="attention.py")
    (package / "__init__.py").write_text("from .attention import SRMGate\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    identity = block_identity("relab:SRMGate")
    assert identity["source"] == str(attention.resolve())
    assert identity["source_sha256"] == hashlib.sha256(attention.read_bytes()).hexdigest()


def test_a_plugin_that_does_not_load_is_listed_as_such(monkeypatch, capsys):
    install_plugin(monkeypatch, "ghost", "no_such_plugin_pkg.gates:Gate")
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["blocks"]) == 0
    out = capsys.readouterr().out
    assert "ghost" in out and "does not load" in out and " se " in out


def test_source_tags_follow_every_spelling_of_the_override(tmp_path, monkeypatch):
    from attn_bench.attention.registry import tag_sources

    monkeypatch.chdir(tmp_path)
    sha = hashlib.sha256(write_block(tmp_path).read_bytes()).hexdigest()[:6]
    for given in ("model.attn=my_blocks.py:SRMGate", "++model.attn=my_blocks.py:SRMGate",
                  "model.attn=my_blocks.py\\:SRMGate"):
        assert tag_sources(f"data.x=1,{given},seed=0").split(",")[1].endswith(f"my_blocks.py:SRMGate@{sha}"), given
    assert tag_sources("model.attn=se,seed=0") == "model.attn=se,seed=0"
    assert tag_sources("model.attn=missing.py:Gate") == "model.attn=missing.py:Gate"  # its own check says why


def test_the_same_bytes_at_two_paths_are_recorded_at_the_path_given(tmp_path):
    """In one process (a notebook, the test suite) a copy of an already loaded file is its own module: the
    record names the file the spec gave, not the first copy (which may be gone)."""
    from attn_bench.attention.user import class_source, load_class

    first, second = write_block(tmp_path / "a"), write_block(tmp_path / "b")
    sources = [class_source(load_class(f"{path}:SRMGate"))[0] for path in (first, second)]
    assert sources == [first.resolve(), second.resolve()]


def test_the_same_source_at_another_path_is_the_same_block(tmp_path):
    from attn_bench.rundir import RUN_FILE, check_same_run

    block = {"attn": "my_blocks.py:G", "class": "/a/my_blocks.py:G", "source": "/a/my_blocks.py", "source_sha256": "ab" * 32}
    (tmp_path / RUN_FILE).write_text(json.dumps({"block": block}))
    check_same_run(tmp_path, {"block": {**block, "class": "/b/my_blocks.py:G", "source": "/b/my_blocks.py"}})
    with pytest.raises(ConfigError, match="another version of block"):
        check_same_run(tmp_path, {"block": {**block, "source_sha256": "cd" * 32}})


def test_check_block_refuses_a_value_it_cannot_read(capsys):
    assert main(["check-block", "se", "rd_ratio=[1,"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read the value of 'rd_ratio=[1,'" in err
