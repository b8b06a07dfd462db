"""``attn-bench export <run dir or checkpoint> --format onnx|torchscript [--ckpt last|best] [--ema]``: the trained network.

The network is rebuilt from the run's ``config.yaml`` with the weights of ``last.pt`` (or ``best.pt``,
or its EMA weights), exactly as ``eval`` does, and exported in eval mode, on the CPU, in fp32 (a run
trained in bf16/fp16 autocast keeps fp32 weights), from an example batch of 2 images at the run's
``img_size``: ``onnx`` through PyTorch's exporter (``torch.onnx.export(dynamo=True)``, the batch
dimension dynamic), ``torchscript`` through ``torch.jit.trace``. The file written is then loaded back
(ONNX Runtime; ``torch.jit.load``) and run on another batch, of 4 images, and its logits are compared
with PyTorch's: every one must agree within 1e-5 + 1e-4 x |PyTorch's logit|, or the command fails and
says by how much. Writes ``<run>/export/<checkpoint>.onnx`` (or ``.torchscript.pt``) and beside it a
``.json`` with the format, the check and the versions. A network that cannot be exported is one line
naming the op. ONNX needs the ``export`` extra (``pip install 'attn-bench[export]'``).
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

from attn_bench.errors import ConfigError, OneLineParser, check

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
EXAMPLE_BATCH, CHECK_BATCH = 2, 4
RTOL, ATOL = 1e-4, 1e-5


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="attn-bench export", description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path, help="a run directory, or a checkpoint file inside one")
    parser.add_argument("--format", choices=list(FORMATS), required=True, help="onnx | torchscript")
    parser.add_argument("--ckpt", choices=["last", "best"], default=None,
                        help="which checkpoint of the run (default: last; ignored when a file is given)")
    parser.add_argument("--ema", action="store_true", help="export the checkpoint's EMA weights")
    parser.add_argument("--trust-block", action="store_true",
                        help="use the run's own block as its file is now, where it differs from the recorded source")
    return parser.parse_args(argv)


def why_not_exported(err: BaseException, fmt: str) -> str:
    """The operator an exporter names in its error (``aten.kthvalue``, ``prims.bessel_i0``), else the
    error's first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{err}\n{err.__cause__ or ''}")  # the exporter colours its text
    found = re.search(r"op='([\w.]+)'", text) or re.search(r"\b((?:aten|prims)\.[A-Za-z_]\w*)", text)
    if found:
        return f"op {found.group(1)} has no {fmt} conversion"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return f"{type(err).__name__}: {first[:300]}"


def _export_onnx(model, example, path: Path):
    import torch

    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"export: ONNX needs {err.name}, which is not installed: pip install 'attn-bench[export]'") \
            from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=True, verbose=False, external_data=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))

    def run(batch):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0])
    return run


def _export_torchscript(model, example, path: Path):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trace's own deprecation notice and TracerWarnings: the check below decides
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
    return lambda batch: loaded(batch)


def export_run(target: Path, fmt: str, ckpt: str | None = None, ema: bool = False,
               trust_block: bool = False) -> dict:
    """The export's record (also written as JSON beside the exported file)."""
    import torch
    from omegaconf import OmegaConf

    from attn_bench.commands.eval import locate_checkpoint
    from attn_bench.io import atomic_write_json
    from attn_bench.rundir import CONFIG_FILE
    from attn_bench.training.checkpoint import load_run_model

    check(fmt in FORMATS, f"export: unknown format '{fmt}'; valid choices: {', '.join(FORMATS)}")
    run_dir, ckpt_path = locate_checkpoint(target, ckpt, "export")
    run_cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    img_size, num_classes = int(run_cfg.data.img_size), int(run_cfg.data.num_classes)
    model, checkpoint = load_run_model(run_dir, run_cfg.model, num_classes, img_size, ckpt_path, trust_block, ema)
    model = model.float().eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(EXAMPLE_BATCH, 3, img_size, img_size, generator=gen)
    batch = torch.randn(CHECK_BATCH, 3, img_size, img_size, generator=gen)
    out_dir = run_dir / "export"
    out_dir.mkdir(exist_ok=True)
    stem = ckpt_path.stem + ("_ema" if ema else "")
    path = out_dir / f"{stem}{FORMATS[fmt]}"
    partial = path.with_name(f".{path.name}.partial")  # renamed into place only once the check has passed
    exporter = _export_onnx if fmt == "onnx" else _export_torchscript
    try:
        with torch.no_grad():
            run_exported = exporter(model, example, partial)
            expected, got = model(batch), run_exported(batch)
    except ConfigError:
        raise
    except Exception as err:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"export: {run_cfg.model.backbone} + {run_cfg.model.attn} cannot be exported to {fmt}: "
                          f"{why_not_exported(err, fmt)}") from None
    diff = (got.float() - expected).abs()
    allowed = ATOL + RTOL * expected.abs()
    worst = float((diff - allowed).max())
    if got.shape != expected.shape or worst > 0:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"export: the {fmt} network's logits differ from PyTorch's on a batch of {CHECK_BATCH}: "
                          f"max |difference| {float(diff.max()):.3g} (allowed {ATOL:g} + {RTOL:g} x |logit|); "
                          f"nothing was written")
    partial.replace(path)
    record = {
        "run_dir": str(run_dir), "checkpoint": str(ckpt_path), "epoch": int(checkpoint["epoch"]),
        "weights": "ema" if ema else "raw", "format": fmt, "file": str(path),
        "input": [None, 3, img_size, img_size] if fmt == "onnx" else [EXAMPLE_BATCH, 3, img_size, img_size],
        "check": {"batch": CHECK_BATCH, "inputs": "torch.randn, seed 0", "max_abs_diff": float(diff.max()),
                  "rtol": RTOL, "atol": ATOL, "runtime": "onnxruntime" if fmt == "onnx" else "torch.jit.load"},
        "versions": _versions(fmt),
    }
    atomic_write_json(out_dir / f"{stem}_{fmt}.json", record)
    return record


def _versions(fmt: str) -> dict[str, str]:
    import torch

    versions = {"torch": torch.__version__}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        versions.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    return versions


def main(argv: list[str]) -> int:
    args = _parse(argv)
    record = export_run(args.target, args.format, args.ckpt, args.ema, args.trust_block)
    check_ = record["check"]
    print(f"wrote {record['file']} ({record['format']}, epoch {record['epoch']}, {record['weights']} weights): "
          f"its logits match PyTorch's on {check_['batch']} images (max |difference| {check_['max_abs_diff']:.2g}, "
          f"{check_['runtime']})", file=sys.stdout)
    return 0
