"""``attn-bench export RUN --format onnx|torchscript``: the trained network with its block, checked against PyTorch."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from attn_bench.commands.train import run_training
from conftest import _compose_train

SMALL = ["data.train_size=100", "data.test_size=50", "trainer.epochs=1", "trainer.batch_size=50",
         "trainer.progress=false", "measure_cost=false"]
MEDIAN_GATE = '''
import torch
from torch import nn


class MedianGate(nn.Module):
    """Scales each channel by the sigmoid of its median: kthvalue has no ONNX conversion."""

    def __init__(self, channels):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        median = x.flatten(2).kthvalue(x.shape[2] * x.shape[3] // 2 + 1, dim=2).values
        return x * torch.sigmoid(self.scale.view(1, -1, 1, 1) * median[..., None, None])
'''

BATCH_GATE = '''
from torch import nn


class BatchGate(nn.Module):
    """Halves its input except in a batch of two: Python control flow that torch.jit.trace freezes."""

    def __init__(self, channels):
        super().__init__()

    def forward(self, x):
        return x if x.shape[0] == 2 else 0.5 * x
'''


@pytest.fixture(scope="module")
def se_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "se"
    run_training(_compose_train(SMALL + ["model.attn=se"]), run_dir)
    return run_dir


def _trained_network(run_dir):
    from omegaconf import OmegaConf

    from attn_bench.training.checkpoint import load_run_model

    cfg = OmegaConf.load(run_dir / "config.yaml")
    model, _ = load_run_model(run_dir, cfg.model, 10, 32, run_dir / "last.pt")
    return model.eval()


def _eval_images(n: int) -> torch.Tensor:
    from attn_bench.data.loaders import build_eval_loader

    loader = build_eval_loader(_compose_train(SMALL).data, n, torch.device("cpu"))
    return next(iter(loader))[0]


def test_onnx_export_runs_in_onnx_runtime_with_the_blocks_gates_and_the_same_logits(se_run, attn_bench_cli):
    """The ONNX file holds SE's 8 sigmoid gates (one per BasicBlock of the default ResNet-18), takes any batch
    size, and in ONNX Runtime gives PyTorch's logits on real evaluation images to 1e-4."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    proc = attn_bench_cli("export", str(se_run), "--format", "onnx")
    assert proc.returncode == 0, proc.stderr
    path = se_run / "export" / "last.onnx"
    assert f"wrote {path}" in proc.stdout
    graph = onnx.load(str(path)).graph
    assert sum(node.op_type == "Sigmoid" for node in graph.node) == 8
    images = _eval_images(3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    with torch.no_grad():
        expected = _trained_network(se_run)(images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    record = json.loads((se_run / "export" / "last_onnx.json").read_text())
    assert record["format"] == "onnx" and record["epoch"] == 1 and record["file"] == str(path)
    assert 0 <= record["check"]["max_abs_diff"] < 1e-4 and record["input"] == [None, 3, 32, 32]


def test_torchscript_export_loads_without_attn_bench_and_gives_the_same_logits(se_run, attn_bench_cli, tmp_path):
    proc = attn_bench_cli("export", str(se_run / "best.pt"), "--format", "torchscript")
    assert proc.returncode == 0, proc.stderr
    path = se_run / "export" / "best.torchscript.pt"
    images = _eval_images(4)
    torch.save(images, tmp_path / "images.pt")
    # another interpreter, in which attn_bench cannot be imported: the file is the whole network
    code = ("import sys, torch; sys.modules['attn_bench'] = None; "
            f"net = torch.jit.load({str(path)!r}); "
            f"torch.save(net(torch.load({str(tmp_path / 'images.pt')!r})), {str(tmp_path / 'logits.pt')!r})")
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        expected = _trained_network(se_run)(images)
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=1e-4, atol=1e-5)


def test_an_export_whose_logits_differ_from_pytorchs_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    """The trace runs the example batch of 2, so the traced network keeps the batch-of-2 branch; on the check's
    batch of 4 PyTorch halves the features: the comparison must catch it."""
    from attn_bench.commands.export import export_run
    from attn_bench.errors import ConfigError

    (tmp_path / "batch_gate.py").write_text(BATCH_GATE)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "gate"
    run_training(_compose_train(SMALL + [f"model.attn={tmp_path / 'batch_gate.py'}:BatchGate"]), run_dir)
    with pytest.raises(ConfigError, match=r"the torchscript network's logits differ from PyTorch's on a batch of 4: "
                                          r"max \|difference\| [0-9.e+-]+ \(allowed 1e-05 \+ 0.0001 x \|logit\|\); "
                                          r"nothing was written"):
        export_run(run_dir, "torchscript")
    assert list((run_dir / "export").iterdir()) == []


def test_a_block_that_cannot_be_exported_is_one_line_naming_the_op_and_leaves_no_file(tmp_path, attn_bench_cli,
                                                                                       monkeypatch):
    pytest.importorskip("onnxruntime")
    (tmp_path / "median_gate.py").write_text(MEDIAN_GATE)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "median"
    run_training(_compose_train(SMALL + [f"model.attn={tmp_path / 'median_gate.py'}:MedianGate"]), run_dir)
    proc = attn_bench_cli("export", str(run_dir), "--format", "onnx")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "cannot be exported to onnx: op aten.kthvalue" in lines[0] and "Traceback" not in proc.stderr
    assert list((run_dir / "export").iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--format", "tf"], "invalid choice: 'tf'"),
    ([], "the following arguments are required: --format"),
])
def test_bad_export_arguments_are_one_line(se_run, attn_bench_cli, args, message):
    proc = attn_bench_cli("export", str(se_run), *args)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
