"""scripts/gpu_check.py: the GPU check runs end to end on the CPU (--cpu-smoke), so it cannot rot."""
import importlib.util
import re

import pytest
import subprocess
import sys
from pathlib import Path


SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # runs the whole GPU script on the CPU (25 s); the failing-check test below stays in the default run
def test_cpu_smoke_prints_one_table_of_real_figures(tmp_path):
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    figures = {(section.strip(), what.strip()): value.strip() for section, what, value, _ in rows}
    notes = {(section.strip(), what.strip()): note.strip() for section, what, _, note in rows}
    for path in ("in-memory", "DataLoader"):
        for variant in ("fp32", "bf16", "channels_last"):
            assert float(figures[(f"training img/s ({path})", variant)].replace(",", "")) > 0
        assert figures[(f"training img/s ({path})", "fp16 (grad scaler)")] == "-"  # needs CUDA, said so
    for block in ("none", "se", "eca", "gc", "cbam"):
        for source in ("attn-bench", "timm"):
            assert re.fullmatch(r"\d+\.\d\d ms", figures[("resnet50@64 bf16", f"{block} ({source})")])
    params = {what: note.rsplit("; ", 1)[1] for (section, what), note in notes.items() if section.startswith("resnet50")}
    # the published sizes: torchvision's ResNet-50, SENet (Hu et al. 2018, Table 2), CBAM (Woo et al. 2018, Table 4)
    assert params["none (attn-bench)"] == params["none (timm)"] == "25.56M params"
    assert params["se (attn-bench)"] == params["se (timm)"] == "28.09M params"
    assert params["cbam (attn-bench)"] == "28.09M params"
    assert params["eca (attn-bench)"] == params["eca (timm)"] == "25.56M params"  # ECA adds 86 parameters
    assert figures[("DDP", "1 process, gloo")].endswith("img/s")
    assert "FAIL" not in proc.stdout


def test_a_failing_check_is_a_row_and_a_non_zero_exit(monkeypatch, capsys):
    script = _load()
    monkeypatch.setattr(script, "BLOCKS", ["none", "not_a_block"])
    rows = script.latency_rows(script.SMOKE)
    failed = [r for r in rows if not r.ok]
    assert {r.what for r in failed} == {"not_a_block (attn-bench)", "not_a_block (timm)"}
    assert all("\n" not in r.extra and r.value == "FAIL" for r in failed)
    monkeypatch.setattr(script, "training_rows", lambda sizes, work: [])
    monkeypatch.setattr(script, "latency_rows", lambda sizes: rows)
    monkeypatch.setattr(script, "ddp_row", lambda sizes: script.Row("DDP", "stub"))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--cpu-smoke"])
    assert script.main() == 1
    assert "2 check(s) failed" in capsys.readouterr().err


def test_without_a_gpu_it_says_how_to_run_the_smoke_test(monkeypatch, capsys):
    script = _load()
    monkeypatch.setattr(sys, "argv", ["gpu_check.py"])
    monkeypatch.setattr(script.torch.cuda, "is_available", lambda: False)
    assert script.main() == 2
    assert "--cpu-smoke" in capsys.readouterr().err
