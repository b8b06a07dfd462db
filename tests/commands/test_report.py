"""``attn-bench report``: rows whose statistics can be checked by hand (the functions: tests/sweeps/test_stats.py), every output file, and no crashes
on failed, running or missing runs."""
import csv
import json
import math
import re
import sys
from pathlib import Path

import pytest

from attn_bench.cli import main
from attn_bench.commands import report
from attn_bench.sweeps.stats import NEED_SEEDS

T975_DF2 = 4.302652729911275  # Student-t 97.5% quantile, 2 degrees of freedom (tables: 4.303)


# ---------------------------------------------------------------- fake run directories (metrics.json schema: rundir.RunRecord)

def config(block, seed, backbone="resnet18", dataset="synthetic", epochs=3):
    return {
        "model": {"backbone": backbone, "attn": block, "attn_args": {}, "attn_stages": None, "attn_position": "every",
                  "stem": "auto", "timm_kwargs": {"channels": [16, 32, 64, 128], "stem_width": 16}},
        "trainer": {"epochs": epochs, "batch_size": 128, "optimizer": {"name": "sgd", "lr": 0.1}, "progress": False},
        "data": {"name": dataset, "num_classes": 10, "img_size": 32, "train_size": 10000, "test_size": 2000},
        "seed": seed, "name": None, "device": "auto",
    }


def completed(run_dir, block, seed, top1, *, gmacs=0.04, latency_ms=1.0, epochs=3, busy=False, **config_kwargs):
    history = [{"epoch": e, "step": 78 * e, "lr": 0.1, "train_loss": 2.0 / e, "train_top1": top1 - 5,
                "eval_top1": top1 - 10 * (epochs - e), "eval_top5": 99.0, "eval_loss": 0.9, "eval_images": 2000,
                "img_per_s": 900.0, "epoch_train_time_s": 11.0} for e in range(1, epochs + 1)]
    metrics = {
        "status": "completed", "final": {"top1": top1, "top5": 99.0, "loss": 0.9},
        "best": {"top1": top1, "top5": 99.0, "epoch": epochs}, "params": 700_000, "attn_params": 0,
        "epochs": epochs, "steps": 78 * epochs, "wall_time_s": 40.0, "train_time_s": 33.0, "train_img_per_s": 900.0,
        "peak_memory_mb": 500.0, "device": "cpu (2 threads)", "world_size": 1, "seed": seed, "history": history,
        "cost": {"params": 700_000, "attn_params": 0, "img_size": 32, "macs": int(gmacs * 1e9), "gmacs": gmacs,
                 "flops": int(2 * gmacs * 1e9), "gflops": 2 * gmacs, "uncounted_ops": [], "latency_ms": latency_ms,
                 "throughput_img_per_s": 2000.0, "device": "cpu", "device_name": "test cpu", "num_threads": 2,
                 "latency_busy": busy, "throughput_busy": False},
        "config": config(block, seed, epochs=epochs, **config_kwargs), "versions": {"torch": "2.x"},
        "run_dir": str(run_dir),
    }
    write_metrics(run_dir, metrics)


def write_metrics(run_dir, metrics):
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(json.dumps(metrics["config"]))  # JSON is YAML
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def sweep(tmp_path):
    """none and se/eca with 2 seeds each (se clearly better, eca within noise), ca with 1 seed,
    a failed cbam run and an unfinished gc run."""
    root = tmp_path / "sweep"
    for block, top1s, gmacs, latencies in [("none", (70.0, 72.0), 0.040, (1.0, 1.2)),
                                           ("se", (80.0, 82.0), 0.041, (1.5, 1.7)),
                                           ("eca", (71.0, 73.0), 0.040, (1.1, 1.3))]:
        for seed, (top1, latency) in enumerate(zip(top1s, latencies)):
            completed(root / f"model.attn={block},seed={seed}", block, seed, top1, gmacs=gmacs, latency_ms=latency)
    completed(root / "model.attn=ca,seed=0", "ca", 0, 75.0)
    write_metrics(root / "model.attn=cbam,seed=0", {
        "status": "failed", "reason": "diverged: loss is nan", "failed_at": {"epoch": 2, "step": 150}, "seed": 0,
        "config": config("cbam", 0), "versions": {}, "run_dir": "x"})
    unfinished = root / "nested" / "model.attn=gc,seed=1"
    unfinished.mkdir(parents=True)
    (unfinished / "config.yaml").write_text("model:\n  attn: gc\nseed: 1\n")
    (unfinished / "last.pt").write_bytes(b"")
    return root


def rows_by_block(root, baseline="none"):
    runs, problems = report.collect_runs([root])
    return {row["block"]: row for row in report.build_rows(runs, baseline)}, problems


def test_rows_hold_seed_statistics_and_deltas(sweep):
    rows, problems = rows_by_block(sweep)
    assert list(rows) == ["none", "ca", "eca", "se"]  # baseline first
    assert {b: rows[b]["n"] for b in rows} == {"none": 2, "ca": 1, "eca": 2, "se": 2}
    assert rows["se"]["top1_mean"] == pytest.approx(81.0) and rows["se"]["top1_std"] == pytest.approx(math.sqrt(2))
    assert rows["se"]["latency_ms"] == pytest.approx(1.6) and rows["se"]["gmacs"] == pytest.approx(0.041)
    assert rows["none"]["is_baseline"] and rows["none"]["comparison"] is None
    se, eca = rows["se"]["comparison"], rows["eca"]["comparison"]
    assert se.delta == pytest.approx(10.0) and se.significant
    assert se.ci_low == pytest.approx(10 - T975_DF2 * math.sqrt(2))
    assert eca.delta == pytest.approx(1.0) and eca.significant is False and eca.ci_low < 0 < eca.ci_high
    assert rows["ca"]["comparison"].verdict == NEED_SEEDS
    assert rows["none"]["curve"][-1] == pytest.approx((3, 71.0, math.sqrt(2)))
    assert sorted((p.status, p.block, str(p.seed)) for p in problems) == [("failed", "cbam", "0"),
                                                                           ("incomplete", "gc", "1")]


def test_report_writes_every_file_and_lists_failures(sweep, capsys):
    assert main(["report", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "beyond seed noise?" in out and "81.00 ± 1.41" in out and "diverged: loss is nan" in out
    out_dir = sweep / "report"
    for name in ("report.md", "report.csv", "report.tex", "accuracy_vs_macs.png", "accuracy_vs_latency.png",
                 "training_curves.png"):
        assert (out_dir / name).stat().st_size > 0, name
    assert (out_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"

    md = (out_dir / "report.md").read_text()
    # Holm over the family {se, eca}: 2 x 0.0194 = 0.0388; max(0.0388, 1 x 0.553) = 0.553
    assert "| se | 2 | 81.00 ± 1.41 | +10.00 | [+3.92, +16.08] | yes (p=0.0194, Holm 0.0388) |" in md
    assert "| eca | 2 | 72.00 ± 1.41 | +1.00 | [-5.08, +7.08] | no (p=0.553, Holm 0.553) |" in md
    assert "n/a: need >= 2 seeds" in md and "## Failed / incomplete runs" in md
    assert "| failed | cbam | 0 |" in md and "| incomplete | gc | 1 |" in md and "last.pt present" in md
    assert "backbone" not in md.split("\n|---")[0].splitlines()[-1]  # one backbone, one dataset: no such columns

    records = {r["block"]: r for r in csv.DictReader((out_dir / "report.csv").open())}
    assert float(records["se"]["delta_top1"]) == pytest.approx(10.0)
    assert records["se"]["beyond_seed_noise"] == "True" and records["eca"]["beyond_seed_noise"] == "False"
    assert records["none"]["seeds"] == "0;1" and records["ca"]["p_value"] == "" and records["se"]["params"] == "700000"

    tex = (out_dir / "report.tex").read_text()
    assert r"\begin{tabular}" in tex and r"81.00 $\pm$ 1.41" in tex and r"top-1 (\%)" in tex and "±" not in tex
    assert r"\caption{resnet18" in tex and tex.rstrip().endswith(r"\end{table}")
    assert re.search(r"\\label\{tab:attn-bench-sweep-[0-9a-f]{6}\}", tex)  # the sweep's own label
    # compact: block, params, GMACs, top-1, delta (* = beyond seed noise after Holm), adjusted p
    assert r"se & 0.70 & 0.041 & 81.00 $\pm$ 1.41 & +10.00* & 0.0388 \\" in tex
    assert r"eca & 0.70 & 0.040 & 72.00 $\pm$ 1.41 & +1.00 & 0.553 \\" in tex


def test_baseline_missing_still_gives_absolute_numbers(tmp_path, capsys):
    for seed, top1 in enumerate((80.0, 82.0)):
        completed(tmp_path / f"se{seed}", "se", seed, top1)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "81.00 ± 1.41" in md and "Δ" not in md and "no 'none' (baseline) runs" in md
    assert main(["report", str(tmp_path), "--baseline", "eca"]) == 2
    assert "--baseline eca has no completed runs; blocks found: se" in capsys.readouterr().err


def test_backbone_and_dataset_columns_appear_only_when_they_vary(tmp_path, capsys):
    for backbone, offset in (("resnet18", 0.0), ("mobilenetv2_100", 5.0)):
        for block, gain in (("none", 0.0), ("se", 1.0)):
            for seed in (0, 1):
                completed(tmp_path / f"{backbone}-{block}-{seed}", block, seed, 70 + offset + gain + seed,
                          backbone=backbone)
    from matplotlib.figure import Figure

    from conftest import assert_legible_at_print_size

    drawn, original = [], Figure.savefig
    Figure.savefig = lambda self, *a, **k: (drawn.append(self), original(self, *a, **k))[1]
    try:
        assert main(["report", str(tmp_path)]) == 0
    finally:
        Figure.savefig = original
    for fig in drawn:  # labels with the backbones' timm arguments: in a legend under the plot, not over it
        assert fig.get_figwidth() == 3.5 and assert_legible_at_print_size(fig) > 4 and fig.legends
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| backbone | block | n |" in md and "dataset" not in md.split("|---")[0]
    # compared with its own backbone's none; the backbone label carries its timm arguments
    assert "| mobilenetv2_100 (channels=[16, 32, 64, 128], stem_width=16) | se | 2 | 76.50 ± 0.71 | +1.00 |" in md


def test_runs_that_differ_in_more_than_the_seed_are_refused_unless_pooled(tmp_path, capsys):
    completed(tmp_path / "a", "se", 0, 80.0, epochs=3)
    completed(tmp_path / "b", "se", 1, 82.0, epochs=5)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runs pooled as seeds differ in trainer.epochs" in err[0] and "--pool" in err[0]
    assert not (tmp_path / "report" / "report.md").exists()
    assert main(["report", str(tmp_path), "--pool"]) == 0
    assert "runs pooled as seeds differ in trainer.epochs" in capsys.readouterr().err


def test_exclude_busy_leaves_busy_timings_out(tmp_path):
    for seed in (0, 1):
        completed(tmp_path / f"none{seed}", "none", seed, 70.0 + seed, latency_ms=2.0, busy=True)
        completed(tmp_path / f"se{seed}", "se", seed, 71.0 + seed, latency_ms=3.0)
    assert main(["report", str(tmp_path), "--exclude-busy"]) == 0
    records = {r["block"]: r for r in csv.DictReader((tmp_path / "report" / "report.csv").open())}
    assert records["none"]["latency_ms"] == "" and float(records["se"]["latency_ms"]) == pytest.approx(3.0)


def test_without_matplotlib_the_plots_are_skipped_with_one_warning(sweep, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["report", str(sweep), "--out", str(sweep / "plain")]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "warning" in line] == [
        "warning: matplotlib is not installed, so no plots (pip install 'attn-bench[report]')"]
    assert (sweep / "plain" / "report.md").exists() and not list((sweep / "plain").glob("*.png"))


@pytest.mark.parametrize("make, args, fragment", [
    (lambda p: p.mkdir(), ["{p}"], "no runs found in '{p}'"),
    (lambda p: (p / "notes").mkdir(parents=True), ["{p}"], "no runs found in '{p}'"),
    (lambda p: None, ["{p}"], "'{p}' is not a directory"),
    (lambda p: None, [], "report: the following arguments are required: dirs"),
    (lambda p: p.mkdir(), ["{p}", "--bogus"], "report: unrecognized arguments: --bogus"),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, capsys, make, args, fragment):
    path = tmp_path / "empty"
    make(path)
    assert main(["report", *(a.format(p=path) for a in args)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment.format(p=path) in err[0], err


# ---------------------------------------------------------------- real training runs

def test_report_on_real_training_runs(compose_train, tiny_train, tmp_path, capsys):
    from attn_bench.commands.train import run_training

    small = ["data.train_size=200", "data.test_size=100", "trainer.epochs=1"]
    for block in ("none", "se"):
        for seed in (0, 1):  # cost (MACs, timings) from seed 0 only: it takes longer than the training
            overrides = [f"model.attn={block}", f"seed={seed}", f"measure_cost={seed == 0}"]
            cfg = compose_train(tiny_train + small + overrides)
            run_training(cfg, tmp_path / "runs" / f"{block}-{seed}")
    assert main(["report", str(tmp_path / "runs")]) == 0
    records = {r["block"]: r for r in csv.DictReader((tmp_path / "runs" / "report" / "report.csv").open())}
    assert list(records) == ["none", "se"] and records["none"]["n"] == records["se"]["n"] == "2"
    assert records["none"]["delta_top1"] == "" and records["se"]["delta_top1"] != ""
    assert float(records["se"]["params"]) > float(records["none"]["params"]) and float(records["se"]["gmacs"]) > 0
    assert "Δ top-1" in (tmp_path / "runs" / "report" / "report.md").read_text()


def test_unreadable_and_hidden_files_do_not_crash_the_report(tmp_path):
    completed(tmp_path / "ok", "none", 0, 70.0)
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "metrics.json").write_text('{"status": "compl')
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "metrics.json").write_text("[1, 2]")  # valid JSON, not a record
    (tmp_path / "ok" / ".hydra").mkdir()
    (tmp_path / "ok" / ".hydra" / "config.yaml").write_text("seed: 0\n")  # Hydra's own copy: not a run
    runs, problems = report.collect_runs([tmp_path])
    assert [Path(r.run_dir).name for r in runs] == ["ok"]
    assert [(p.path.name, p.status) for p in problems] == [("list", "unreadable"), ("torn", "unreadable")]
    assert main(["report", str(tmp_path)]) == 0
    assert "| unreadable | ? | ? |" in (tmp_path / "report" / "report.md").read_text()


def test_block_variants_and_narrowed_backbones_get_their_own_rows():
    from attn_bench.commands.report import backbone_label, block_label

    assert block_label({"attn": "gc", "attn_args": {}, "attn_stages": None, "attn_position": "every"}) == "gc"
    assert block_label({"attn": "gc", "attn_args": {"rd_ratio": 0.125}, "attn_stages": [2, 3, 4],
                        "attn_position": "last"}) == "gc (rd_ratio=0.125, stages=[2, 3, 4], position=last)"
    assert block_label({"attn": "none", "attn_args": {}, "attn_stages": [2]}) == "none"
    assert backbone_label({"backbone": "resnet18", "timm_kwargs": {}}) == "resnet18"
    assert backbone_label({"backbone": "resnet18", "timm_kwargs": {"channels": [16, 32, 64, 128]}}) \
        == "resnet18 (channels=[16, 32, 64, 128])"


def test_the_report_uses_the_last_epoch_not_the_best(tmp_path):
    """Picking the best epoch on the test set would flatter every block: the row is the final top-1."""
    completed(tmp_path / "a", "se", 0, 70.0)
    completed(tmp_path / "b", "se", 1, 72.0)
    for name, best in (("a", 79.0), ("b", 81.0)):
        path = tmp_path / name / "metrics.json"
        metrics = json.loads(path.read_text())
        metrics["best"] = {"top1": best, "top5": 99.5, "epoch": 2}
        metrics["history"][1]["eval_top1"] = best
        path.write_text(json.dumps(metrics))
    runs, _ = report.collect_runs([tmp_path])
    (row,) = report.build_rows(runs, "none")
    assert row["top1"] == [70.0, 72.0] and row["top1_mean"] == pytest.approx(71.0)


def test_pareto_front_keeps_only_points_nothing_beats():
    from attn_bench.commands.report.plots import pareto_front

    points = [(1.0, 70.0), (1.1, 69.0), (1.2, 72.0), (2.0, 71.0), (3.0, 75.0), (0.9, 60.0)]
    assert pareto_front(points) == [(0.9, 60.0), (1.0, 70.0), (1.2, 72.0), (3.0, 75.0)]


def test_figures_are_vector_and_300_dpi_with_plain_ticks_and_a_titled_context(tmp_path):
    from PIL import Image
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from attn_bench.commands.report.plots import _plain_axes, context

    root = tmp_path / "sweep"
    for seed, top1 in enumerate((70.0, 72.0)):
        completed(root / f"none{seed}", "none", seed, top1, gmacs=0.0445000)
        completed(root / f"se{seed}", "se", seed, top1 + 1, gmacs=0.0445012, busy=seed == 0)
    assert main(["report", str(root)]) == 0
    out = root / "report"
    for name in ("accuracy_vs_macs", "accuracy_vs_latency", "training_curves"):
        pdf = (out / f"{name}.pdf").read_bytes()
        assert pdf[:4] == b"%PDF" and b"/Type3" not in pdf and b"/FontFile2" in pdf, name  # TrueType, embedded
        assert round(Image.open(out / f"{name}.png").info["dpi"][0]) == 300
    md = (out / "report.md").read_text()
    assert "| se | 2 |" in md and "1.00 *" in md and "* = timed while the machine was busy" in md
    runs, _ = report.collect_runs([root])
    rows = report.build_rows(runs, "none")
    assert context(rows).startswith("resnet18 (") and context(rows).endswith(" on synthetic, 3 epochs, 2 seeds per block")
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([0.0445000, 0.0445012], [1, 2])
    _plain_axes(ax)
    FigureCanvasAgg(fig).draw()
    assert ax.xaxis.get_major_formatter().get_offset() == ""  # no "1e-6 + 4.45e-2" above the axis


def test_figures_mark_the_baseline_name_the_timing_device_show_mmacs_and_keep_one_column_width(tmp_path):
    """The cost axis in MMACs (44.50 vs 44.51 reads, 0.04450 vs 0.04451 did not), the baseline a black
    square labelled "(baseline)" in both plots, the device the latency was timed on in its axis label, and
    a long title wrapped rather than widening the cropped one-column (3.5-in) figure (it once made a 2,490-px PNG),
    and no text below 8 pt at that size."""
    from PIL import Image

    drawn = []
    root = tmp_path / "sweep"
    long_name = dict(backbone="resnet18_with_a_rather_long_name_for_a_backbone_" + "x" * 40)
    for seed, top1 in enumerate((70.0, 72.0)):
        completed(root / f"none{seed}", "none", seed, top1, gmacs=0.0445000, **long_name)
        completed(root / f"se{seed}", "se", seed, top1 + 1, gmacs=0.0445012, **long_name)
    from matplotlib.figure import Figure

    original_savefig = Figure.savefig

    def keep(self, *args, **kwargs):
        drawn.append(self)
        return original_savefig(self, *args, **kwargs)

    Figure.savefig = keep
    try:
        assert main(["report", str(root)]) == 0
    finally:
        Figure.savefig = original_savefig
    figures = {}
    for fig in drawn:
        (ax,) = fig.axes
        figures[ax.get_xlabel()] = ax
    macs = figures["MMACs (batch 1)"]
    points = sorted((round(float(c.lines[0].get_xdata()[0]), 4), c.lines[0].get_marker(), c.lines[0].get_color())
                    for c in macs.containers)  # each block's error bar: its point, marker and colour
    assert [(x, marker) for x, marker, _ in points] == [(44.5, "s"), (44.5012, "o")] and points[0][2] == "black"
    for ax in (macs, figures["latency (ms, batch 1, test cpu)"]):  # the device named in the latency axis
        markers = sorted((c.lines[0].get_marker(), c.lines[0].get_color()) for c in ax.containers)
        assert markers[1] == ("s", "black") and markers[0][0] == "o" and markers[0][1] != "black"
        labels = [t.get_text() for t in ax.texts]
        assert "none (baseline)" in labels and "se" in labels
    curves = figures["epoch"]
    legend = [t.get_text() for t in curves.get_legend().get_texts()]
    assert legend == ["none (baseline) (n=2)", "se (n=2)"]
    assert curves.lines[0].get_color() == "black"
    assert "\n" in curves.get_title()  # wrapped
    from conftest import assert_legible_at_print_size

    for fig in drawn:  # printed at one column: nothing below 8 pt, outside the figure, or on another text
        assert fig.get_figwidth() == 3.5 and assert_legible_at_print_size(fig) > 3
    for name in ("accuracy_vs_macs", "accuracy_vs_latency", "training_curves"):
        width, _ = Image.open(root / "report" / f"{name}.png").size
        assert width <= 3.5 * 300, (name, width)  # one 3.5-in column at 300 dpi: placed there, not scaled down


def _holm_by_hand(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out: the k-th smallest p times (m - k + 1), kept monotone."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def test_holm_adjusts_within_each_backbone_and_dataset_family(tmp_path):
    """Two backbones x (baseline + two blocks): each family's p-values are adjusted among themselves
    (m = 2), not pooled with the other backbone's (m = 4)."""
    scores = {"resnet18": {"none": (70, 71, 72), "se": (74, 75, 77), "eca": (71, 73, 72.5)},
              "resnet50": {"none": (80, 80.5, 81), "se": (81, 83, 82), "eca": (80, 82.5, 81.5)}}
    for backbone, blocks in scores.items():
        for block, top1s in blocks.items():
            for seed, top1 in enumerate(top1s):
                completed(tmp_path / f"{backbone},{block},{seed}", block, seed, float(top1), backbone=backbone)
    runs, _ = report.collect_runs([tmp_path])
    rows = report.build_rows(runs, "none")
    compared = [r for r in rows if r["comparison"] is not None]
    assert len(compared) == 4
    for backbone in scores:
        family = [r for r in compared if r["backbone"] == backbone]
        expected = _holm_by_hand([r["comparison"].p_value for r in family])
        assert [r["comparison"].p_holm for r in family] == pytest.approx(expected, rel=1e-12)
    pooled = _holm_by_hand([r["comparison"].p_value for r in compared])
    assert [r["comparison"].p_holm for r in compared] != pytest.approx(pooled, rel=1e-6)  # the test can tell


def _with_data(run_dir: Path, fingerprint: str) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["data"] = {"name": "synthetic", "fingerprint": fingerprint}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_seeds_trained_on_different_data_files_are_not_pooled(tmp_path, capsys):
    for seed, fingerprint in ((0, "aaaa"), (1, "bbbb")):
        completed(tmp_path / f"se{seed}", "se", seed, 80.0 + seed)
        _with_data(tmp_path / f"se{seed}", fingerprint)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runs pooled as seeds differ in data files" in err[0]
    _with_data(tmp_path / "se1", "aaaa")  # the same files: one row of two seeds
    assert main(["report", str(tmp_path)]) == 0


def test_a_seed_that_appears_twice_in_one_row_is_named(tmp_path, capsys):
    completed(tmp_path / "a", "se", 0, 80.0)
    completed(tmp_path / "b", "se", 0, 80.5)  # a copied directory, or a run repeated by hand
    completed(tmp_path / "c", "se", 1, 81.0)
    main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert "synthetic" in err and f"se: seed 0 appears in more than one run: a, b (in {tmp_path})" in err
    assert "seed 1" not in err


def test_report_csv_carries_the_busy_flags_report_md_stars(tmp_path):
    for seed in (0, 1):
        completed(tmp_path / f"none{seed}", "none", seed, 70.0 + seed, latency_ms=251.0)
        completed(tmp_path / f"se{seed}", "se", seed, 71.0 + seed, latency_ms=1689.0, busy=seed == 1)
    assert main(["report", str(tmp_path)]) == 0
    rows = {r["block"]: r for r in csv.DictReader((tmp_path / "report" / "report.csv").open())}
    assert (rows["se"]["latency_ms"], rows["se"]["latency_busy"]) == ("1689.0", "True")
    assert (rows["none"]["latency_ms"], rows["none"]["latency_busy"]) == ("251.0", "False")
    assert rows["se"]["throughput_busy"] == "False"


def test_latex_tables_of_two_reports_never_share_a_label_and_print_minus_signs_and_empty_cells(tmp_path):
    for sweep, top1s in (("a", (70.0, 72.0)), ("b", (70.0, 72.0))):
        for seed, top1 in enumerate(top1s):
            completed(tmp_path / sweep / f"none{seed}", "none", seed, top1)
            completed(tmp_path / sweep / f"se{seed}", "se", seed, top1 - 3.0)  # SE worse: a negative delta
        completed(tmp_path / sweep / "ca0", "ca", 0, 69.0)  # one seed: no adjusted p
        assert main(["report", str(tmp_path / sweep)]) == 0
    texts = [(tmp_path / s / "report" / "report.tex").read_text() for s in ("a", "b")]
    labels = [re.search(r"\\label\{([^}]*)\}", t).group(1) for t in texts]
    assert labels[0] != labels[1] and all(label.startswith("tab:attn-bench-") for label in labels)
    se = next(line for line in texts[0].splitlines() if line.startswith("se &"))
    assert "$-$3.00" in se and " -3.00" not in se  # a true minus sign, not a hyphen
    ca = next(line for line in texts[0].splitlines() if line.startswith("ca &"))
    assert ca.rstrip(" \\").endswith("--")  # an empty cell, not a stray hyphen


def test_report_tex_compiles_where_a_latex_is_installed(sweep, tmp_path):
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex on this machine: report.tex is checked as text above, not compiled")
    assert main(["report", str(sweep), "--out", str(tmp_path / "out")]) == 0
    doc = tmp_path / "paper.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\\input{out/report.tex}"
                   "\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
