from __future__ import annotations

import functools
import logging
import os
import subprocess
from pathlib import Path

import pytest

# One intra-op thread in every test process and every process a test starts (they inherit the variable): the
# suite's networks are tiny, so a second thread gains little, and on an oversold VM or under a CPU quota threads
# that wait for each other spin away the quota (a resume test ran 2x slower with 2 threads under 0.64 CPUs).
# pytest-xdist uses the cores instead, a test module per worker; equal thread counts everywhere also keep a
# subprocess run and an in-process run bit-identical.
os.environ["OMP_NUM_THREADS"] = "1"
import torch  # noqa: E402

from PIL import Image

from attn_bench.cli import main, register
from attn_bench.config import compose

register()  # the run-directory resolver and the sweep launcher, as the CLI does

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR10 = REPO.parent / "shared" / "data" / "cifar10-jpeg"

torch.set_num_threads(1)
MAX_WORKERS = 8  # each worker holds torch and a few networks (about 1 GB)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, at most MAX_WORKERS."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))



def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.requires_cuda`` tests are skipped, with the reason, where no GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible here)")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """Hydra's in-process runs configure logging (handlers on the root logger bound to the stream of that
    moment, which pytest's capture then closes): put every logger's handlers and level back after each
    test, so that a later test's log line never writes to a closed stream."""
    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.fixture
def attn_bench_cli(tmp_path, monkeypatch, capfd):
    """``attn-bench ARGS`` run in this process, as the entry point runs it (``cli.main``), in ``tmp_path`` with
    the outputs under ``tmp_path/outputs``: the exit status, stdout and stderr as a CompletedProcess. It saves the
    ~4 s of imports a subprocess costs; tests of what only a process shows (signals, kills, the entry point)
    keep their subprocess."""
    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd or tmp_path)
        monkeypatch.setenv("ATTN_BENCH_OUTPUTS", str(tmp_path / "outputs"))
        capfd.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit:  # Hydra ends some failures, and argparse its --help, with sys.exit
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        out = capfd.readouterr()
        return subprocess.CompletedProcess(["attn-bench", *args], code, out.out, out.err)
    return run


@pytest.fixture
def cifar10_jpeg() -> Path:
    if not (SHARED_CIFAR10 / "train").is_dir():
        pytest.skip(f"real CIFAR-10 JPEGs not found at {SHARED_CIFAR10} (shared data folder absent)")
    return SHARED_CIFAR10


@functools.lru_cache(maxsize=None)
def _composed(name: str, overrides: tuple[str, ...]):
    return compose(name, list(overrides))


def _compose_train(overrides: list[str] | None = None):
    """The training config exactly as the CLI composes it: composed once per set of overrides in a
    session, and a fresh copy for every caller (tests may change it)."""
    return _composed("train", tuple(overrides or ())).copy()


@pytest.fixture
def compose_train():
    return _compose_train


@pytest.fixture
def tiny_train() -> list[str]:
    """Overrides for a few seconds of training on 2 CPU cores."""
    return list(TINY_TRAIN)


TINY_TRAIN = [
    "data.train_size=500",
    "data.test_size=250",
    "trainer.epochs=2",
    "trainer.batch_size=25",
    "trainer.progress=false",
    "measure_cost=false",
]
LEARN = ["data.train_size=2000", "data.test_size=500", "trainer.epochs=4", "trainer.batch_size=50",
         "trainer.scheduler.warmup_epochs=0.5"]  # learns the task


@pytest.fixture(scope="session")
def learned_synthetic(tmp_path_factory):
    """One default-model run that learns the synthetic task (TINY_TRAIN + LEARN, cost measured), trained once for
    the session: test_train reads it, visualize copies it as its baseline (20 s each time it was trained)."""
    from attn_bench.commands.train import run_training

    run_dir = tmp_path_factory.mktemp("synthetic")
    cfg = _compose_train(TINY_TRAIN + LEARN + ["measure_cost=true"])
    return run_dir, run_training(cfg, run_dir), cfg


def make_imagefolder(root: Path, colour_of=lambda c, i: (40 + 150 * c, 60 + 10 * i, 90), per_class=6,
                     noise: bool = False) -> Path:
    """A two-class ImageFolder tree (``train`` and ``val``) of 32x32 PNGs: flat colours, or (``noise``)
    seeded random pixels, so that crops and flips change what the network sees."""
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(2):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                if noise:
                    pixels = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8)
                    pixels[:, :16] //= 2 if c else 1  # a class signal on one side, so it can be learned
                    Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
                else:
                    Image.new("RGB", (32, 32), colour_of(c, i)).save(folder / f"{i}.png")
    return root


def slot_sees(model: torch.nn.Module, block_path: str, upstream: str, size: int = 64) -> tuple[type, bool]:
    """One eval forward: the type of the block in ``block_path``'s ``se`` slot, and whether the input it got
    is exactly the output of that timm block's ``upstream`` module (e.g. ``bn3``: the residual site)."""
    block, seen = model.get_submodule(block_path), {}
    handles = [block.get_submodule(upstream).register_forward_hook(lambda m, i, o: seen.update(upstream=o)),
               block.se.register_forward_hook(lambda m, i, o: seen.update(slot_in=i[0]))]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return type(block.se), torch.equal(seen["upstream"], seen["slot_in"])


def assert_legible_at_print_size(fig) -> int:
    """A figure as printed at its own size: every text at least 8 pt, none outside the figure, no two
    overlapping (rendered extents). Returns how many texts were checked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ticks = {id(label): False for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for tick in axis.get_major_ticks() + axis.get_minor_ticks() for label in (tick.label1, tick.label2)}
    ticks.update({id(label): True for ax in fig.axes if ax.axison for axis in (ax.xaxis, ax.yaxis)
                  for tick in axis._update_ticks() for label in (tick.label1, tick.label2)})  # those drawn
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and ticks.get(id(t), True)]
    boxes = [t.get_window_extent(renderer) for t in texts]
    for t, box in zip(texts, boxes):
        assert t.get_fontsize() >= 8, (t.get_text(), t.get_fontsize())
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, t.get_text()
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            a, b = boxes[i], boxes[j]
            overlap = min(a.x1, b.x1) - max(a.x0, b.x0), min(a.y1, b.y1) - max(a.y0, b.y0)
            assert min(overlap) <= 0, (texts[i].get_text(), texts[j].get_text())
    return len(texts)
