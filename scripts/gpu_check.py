"""GPU check: what anyone with a GPU runs, in under 5 minutes, before trusting attn-bench's figures.

Prints one markdown table (and writes it with ``--out``); exits non-zero if any row failed.

1. Training img/s of full-width ResNet-18 (CIFAR stem) on 32-px synthetic images through the real
   trainer (``run_training``), second epoch, with the in-memory loader: fp32, bf16, fp16 (grad
   scaler), channels_last, ``compile``; then the same through the DataLoader path (the images
   written as an ImageFolder of PNGs, ``data.loader=torch``). Peak memory of each run.
2. Batch-1 latency and batch-64 throughput, with synchronisation, of ResNet-50 at 224 px with
   none / se / eca / gc / cbam in bf16: attn-bench's blocks (``placement=uniform``, timm's own
   ``se`` slot) next to timm's modules of the same names (``block_args=dict(attn_layer=...)``,
   i.e. ``timm.layers.create_attn``).
3. A 1-process DDP run (NCCL; gloo on the CPU): a few steps of a DDP-wrapped ResNet-18.

    python scripts/gpu_check.py [--out gpu_check.md]   # on a CUDA machine
    python scripts/gpu_check.py --cpu-smoke            # small sizes on the CPU: keeps the script from rotting

Never a test dependency: its figures go in the README with the GPU named.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import compose_train, machine  # noqa: E402

BLOCKS = ["none", "se", "eca", "gc", "cbam"]
VARIANTS = {  # name -> trainer overrides
    "fp32": [],
    "bf16": ["trainer.precision=bf16"],
    "fp16 (grad scaler)": ["trainer.precision=fp16"],
    "channels_last": ["trainer.channels_last=true"],
    "compile": ["trainer.compile=true"],
}


@dataclass
class Sizes:
    device: str
    train_size: int
    batch: int
    model: list[str]
    img_size: int  # for the latency rows
    throughput_batch: int
    timing_budget_s: float
    ddp_backend: str
    test_size: int


GPU = Sizes("cuda", 20_000, 256, ["model=resnet18"], 224, 64, 2.0, "nccl", 1000)
SMOKE = Sizes("cpu", 256, 64, ["model=resnet18_tiny"], 64, 8, 0.1, "gloo", 128)


@dataclass
class Row:
    section: str
    what: str
    value: str = ""
    extra: str = ""
    ok: bool = True


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:160]


def _cpu_only(variant: str, sizes: Sizes) -> str | None:
    if sizes.device == "cpu" and variant.startswith("fp16"):
        return "needs CUDA"
    if sizes.device == "cpu" and variant == "compile":
        return "left out on the CPU (minutes of compilation)"
    return None


def _write_imagefolder(root: Path, train_size: int, test_size: int) -> None:
    from PIL import Image

    from attn_bench.data.synthetic import CLASSES, make_synthetic

    for split, count, seed in (("train", train_size, 1), ("val", test_size, 2)):
        images, labels = make_synthetic(count, seed)[:2]
        for i, (image, label) in enumerate(zip(images, labels.tolist())):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")


def training_rows(sizes: Sizes, work: Path) -> list[Row]:
    from attn_bench.commands.train import run_training

    folder = work / "imagefolder"
    _write_imagefolder(folder, sizes.train_size // 2, sizes.test_size)
    common = [*sizes.model, f"device={sizes.device}", "trainer.epochs=2", f"trainer.batch_size={sizes.batch}",
              "trainer.scheduler.warmup_epochs=0", "trainer.progress=false", "measure_cost=false"]
    paths = {
        "in-memory": ["data=synthetic", f"data.train_size={sizes.train_size}", f"data.test_size={sizes.test_size}"],
        "DataLoader": ["data=imagefolder", f"data.root={folder}", "data.num_classes=10", "data.img_size=32",
                       "data.loader=torch", f"data.num_workers={min(8, os.cpu_count() or 1)}",
                       "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"],
    }
    rows = []
    for path, data in paths.items():
        for variant, overrides in VARIANTS.items():
            row = Row(f"training img/s ({path})", variant)
            reason = _cpu_only(variant, sizes)
            if reason:
                row.value, row.extra = "-", reason
                rows.append(row)
                continue
            try:
                if sizes.device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                run_dir = work / "runs" / f"{path}-{variant.split()[0]}"
                cfg = compose_train(common + data + overrides + [f"hydra.run.dir={run_dir}"])
                metrics = run_training(cfg, run_dir)
                row.value = f"{metrics['history'][-1]['img_per_s']:,.0f}"
                row.extra = f"peak {metrics['peak_memory_mb']:,.0f} MB, top-1 {metrics['final']['top1']:.1f} %"
            except Exception as err:  # noqa: BLE001 - a check reports every failure and goes on
                row.ok, row.value, row.extra = False, "FAIL", _one_line(err)
            rows.append(row)
            print(f"  {row.section}: {row.what}: {row.value} {row.extra}", file=sys.stderr, flush=True)
    return rows


def latency_rows(sizes: Sizes) -> list[Row]:
    import timm

    from attn_bench.metrics.latency import TimingPlan, measure
    from attn_bench.models import build_model

    plan = TimingPlan(warmup=3, warmup_s=0.2, repeats=30, min_repeats=5, budget_s=sizes.timing_budget_s)
    amp = "bf16"
    rows = []
    for block in BLOCKS:
        builders = {
            "attn-bench": lambda: build_model("resnet50", block, 1000),
            "timm": lambda: timm.create_model("resnet50", block_args=None if block == "none" else
                                              {"attn_layer": block}),
        }
        for source, build in builders.items():
            row = Row(f"resnet50@{sizes.img_size} bf16", f"{block} ({source})")
            try:
                model = build()
                params = sum(p.numel() for p in model.parameters())
                one = measure(model, sizes.img_size, sizes.device, batch_size=1, plan=plan, amp_dtype=amp)
                many = measure(model, sizes.img_size, sizes.device, batch_size=sizes.throughput_batch, plan=plan,
                               amp_dtype=amp)
                row.value = f"{one['median_ms']:.2f} ms"
                row.extra = f"{many['img_per_s']:,.0f} img/s at batch {sizes.throughput_batch}; {params / 1e6:.2f}M params"
            except Exception as err:  # noqa: BLE001
                row.ok, row.value, row.extra = False, "FAIL", _one_line(err)
            rows.append(row)
            print(f"  {row.section}: {row.what}: {row.value} {row.extra}", file=sys.stderr, flush=True)
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_row(sizes: Sizes) -> Row:
    import torch.distributed as dist

    from attn_bench.models import build_model

    row = Row("DDP", f"1 process, {sizes.ddp_backend}")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    try:
        device = torch.device(sizes.device)
        dist.init_process_group(sizes.ddp_backend, rank=0, world_size=1)
        model = build_model("resnet18", "se", 10, stem="small").to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0] if device.type == "cuda" else None)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        x, y = torch.randn(sizes.batch, 3, 32, 32, device=device), torch.randint(0, 10, (sizes.batch,), device=device)
        started = time.perf_counter()
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(ddp(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss {loss.item()} after 5 steps")
        row.value = f"{5 * sizes.batch / (time.perf_counter() - started):,.0f} img/s"
        row.extra = f"5 steps, loss {loss.item():.3f}"
    except Exception as err:  # noqa: BLE001
        row.ok, row.value, row.extra = False, "FAIL", _one_line(err)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return row


def table(rows: list[Row], sizes: Sizes, seconds: float) -> str:
    lines = [f"GPU check on {machine()}, {time.strftime('%Y-%m-%d')}, {seconds:.0f} s"
             f"{' (--cpu-smoke: small sizes, figures mean nothing)' if sizes.device == 'cpu' else ''}", "",
             "| check | variant | figure | notes |", "|---|---|---|---|"]
    lines += [f"| {r.section} | {r.what} | {r.value} | {r.extra} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="small sizes on the CPU (what the tests run)")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    sizes = SMOKE if args.cpu_smoke else GPU
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible; run with --cpu-smoke for the CPU smoke test", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        os.environ["ATTN_BENCH_OUTPUTS"] = str(Path(tmp) / "outputs")
        rows = training_rows(sizes, Path(tmp))
    rows += latency_rows(sizes)
    rows.append(ddp_row(sizes))
    text = table(rows, sizes, time.perf_counter() - started)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    failed = [r for r in rows if not r.ok]
    if failed:
        print(f"gpu_check: {len(failed)} check(s) failed: " + "; ".join(f"{r.section} {r.what}" for r in failed),
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001 - the script itself broke: show where
        traceback.print_exc()
        sys.exit(1)
