"""attn-bench eval: a trained run re-evaluated from its checkpoint reproduces its recorded numbers."""
import json
import shutil

import pytest
import torch

from attn_bench.cli import main
from attn_bench.commands.train import run_training
from conftest import TINY_TRAIN, _compose_train, make_imagefolder

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    for attn in ("none", "se"):
        run_training(_compose_train(TINY_TRAIN + [f"model.attn={attn}"]), root / attn)
    return root


def test_eval_reproduces_the_recorded_final_top1_exactly(runs, capsys):
    recorded = json.loads((runs / "none" / "metrics.json").read_text())["final"]
    assert main(["eval", str(runs / "none")]) == 0
    written = json.loads((runs / "none" / "eval_synthetic_test.json").read_text())
    assert written["top1"] == recorded["top1"] and written["loss"] == pytest.approx(recorded["loss"], rel=1e-12)
    assert written["images"] == 250 and written["epoch"] == 2
    assert f"{recorded['top1']:.2f} %" in capsys.readouterr().out


def test_best_checkpoint_and_other_data_settings_get_their_own_file(runs):
    assert main(["eval", str(runs / "none"), "--ckpt", "best", "data.test_size=200"]) == 0
    written = json.loads((runs / "none" / "eval_synthetic_test_best.json").read_text())
    assert written["images"] == 200 and written["checkpoint"].endswith("best.pt")
    assert written["data"]["test_size"] == 200
    # a key whose value in the run's config is null is a key all the same
    assert main(["eval", str(runs / "none"), "data.eval_subset_per_class=5"]) == 0
    assert json.loads((runs / "none" / "eval_synthetic_test.json").read_text())["images"] == 50


@pytest.mark.parametrize("make_args, fragment", [
    (lambda runs, tmp: [str(tmp / "swapped")], "does not match the run's config"),
    (lambda runs, tmp: [str(runs / "none"), "data=imagefolder", f"data.root={make_imagefolder(tmp / 'two')}",
                        "data.num_classes=2", "data.img_size=32"], "the data has 2 classes, the run's network 10"),
    (lambda runs, tmp: [str(runs / "none"), "model.attn=se"], "is not a data override"),
    (lambda runs, tmp: [str(runs / "none"), "data.colour=1"], "unknown key 'data.colour'"),
    (lambda runs, tmp: [str(tmp / "nowhere")], "does not exist"),
    (lambda runs, tmp: [str(runs / "none"), "--ckpt", "newest"], "invalid choice"),
])
def test_bad_input_is_one_line(runs, tmp_path, capsys, make_args, fragment):
    shutil.copytree(runs / "none", tmp_path / "swapped")
    shutil.copy(runs / "se" / "last.pt", tmp_path / "swapped" / "last.pt")  # SE weights, a baseline config
    assert main(["eval", *make_args(runs, tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_a_run_whose_preset_changed_since_is_evaluated_as_it_was_built(runs, tmp_path, capsys):
    """The run's config now builds another network (as a changed paper preset would): eval rebuilds
    the network the run recorded and reproduces its numbers; a record that cannot be the checkpoint's
    network is one line, never a traceback."""
    import yaml

    run = tmp_path / "preset_changed"
    shutil.copytree(runs / "se", run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["attn_args"] = {"rd_ratio": 0.25}  # what "the same config" builds now: wider SE
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["eval", str(run)]) == 0
    recorded = json.loads((run / "metrics.json").read_text())["final"]
    assert json.loads((run / "eval_synthetic_test.json").read_text())["top1"] == recorded["top1"]

    metrics = json.loads((run / "metrics.json").read_text())
    metrics["placement"]["stages"] = [4]  # a record the checkpoint's weights do not fit
    (run / "metrics.json").write_text(json.dumps(metrics))
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match" in err[0] and "Traceback" not in err[0]

    metrics["placement"] = dict(metrics["placement"], stages="all", layout="stock SE blocks (1 of 2)")
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert main(["eval", str(run)]) == 2  # a record no explicit setting rebuilds: refused, naming the difference
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "built otherwise than this attn-bench builds the same config" in err[0]


def test_eval_ema_scores_the_ema_weights_exactly_as_training_did(runs, tmp_path, capsys):
    """--ema: the checkpoint's EMA weights, the run's own final_ema top-1 to the last digit, in a file of its
    own; a run without EMA weights is one line."""
    overrides = TINY_TRAIN + ["trainer.epochs=1", "data.train_size=200", "data.test_size=100",
                              "trainer.ema.enabled=true", "trainer.ema.decay=0.9", "measure_cost=false"]
    metrics = run_training(_compose_train(overrides), tmp_path / "ema")
    assert main(["eval", str(tmp_path / "ema"), "--ema"]) == 0
    (written,) = (tmp_path / "ema").glob("eval_*_ema.json")
    record = json.loads(written.read_text())
    assert record["weights"] == "ema" and record["top1"] == metrics["final_ema"]["top1"]
    assert record["loss"] == pytest.approx(metrics["final_ema"]["loss"], rel=1e-9)
    assert metrics["final_ema"]["loss"] != metrics["final"]["loss"]  # and not the raw weights' score
    capsys.readouterr()
    assert main(["eval", str(runs / "none"), "--ema"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no EMA weights" in err[0]


class _ReadsItsAnswer(torch.nn.Module):
    """Logits = the image's first column of pixels (C = classes channels): the test decides every prediction,
    and a mirrored image reads the last column instead."""

    def forward(self, x):
        return x[:, :, 0, 0]


def test_the_confusion_matrix_and_per_class_top1_count_each_prediction_and_flip_averages_the_mirror():
    from attn_bench.training.trainer import evaluate

    k = 3
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 0, 2])  # class 0: one of two right; class 1: both; class 2: one
    x = torch.zeros(6, k, 1, 2)
    x[torch.arange(6), predicted, 0, 0] = 1.0
    mirrored = torch.tensor([0, 0, 1, 1, 2, 2])  # the last column says the true class, more loudly
    x[torch.arange(6), mirrored, 0, 1] = 3.0
    loader = [(x[:4], labels[:4]), (x[4:], labels[4:])]
    stats = evaluate(_ReadsItsAnswer(), loader, torch.device("cpu"), num_classes=k)
    assert stats["eval_confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows: true class, columns: predicted
    assert stats["eval_per_class_top1"] == [50.0, 100.0, 50.0] and stats["eval_top1"] == pytest.approx(400 / 6)
    flipped = evaluate(_ReadsItsAnswer(), loader, torch.device("cpu"), num_classes=k, flip=True)
    assert flipped["eval_confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]] and flipped["eval_top1"] == 100.0
    assert "eval_confusion" not in evaluate(_ReadsItsAnswer(), loader, torch.device("cpu"))  # the trainer's call


def test_eval_writes_per_class_top1_the_confusion_matrix_and_its_figure_and_tta_gets_its_own_file(runs, capsys):
    pytest.importorskip("matplotlib")
    assert main(["eval", str(runs / "se")]) == 0
    plain = json.loads((runs / "se" / "eval_synthetic_test.json").read_text())
    confusion = plain["confusion"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == plain["images"] == 250
    assert sum(confusion[c][c] for c in range(10)) == pytest.approx(plain["top1"] * 250 / 100)
    assert plain["per_class_top1"] == [pytest.approx(100 * confusion[c][c] / sum(confusion[c])) for c in range(10)]
    assert plain["tta"] == "off"
    for suffix in (".png", ".pdf"):
        assert (runs / "se" / f"confusion_synthetic_test{suffix}").stat().st_size > 1000
    pdf = (runs / "se" / "confusion_synthetic_test.pdf").read_bytes()
    assert b"/Type3" not in pdf and b"/FontFile2" in pdf  # TrueType embedded, as journals' PDF checks want
    assert "confusion_synthetic_test.png" in capsys.readouterr().out
    assert main(["eval", str(runs / "se"), "--tta", "flip"]) == 0
    flipped = json.loads((runs / "se" / "eval_synthetic_test_flip.json").read_text())
    assert flipped["tta"] == "flip" and flipped["images"] == 250 and flipped["confusion"] != confusion
    assert (runs / "se" / "confusion_synthetic_test_flip.png").exists()


@pytest.mark.parametrize("classes", [10, 100])
def test_the_confusion_figure_prints_at_one_column_with_8_pt_text_and_its_colour_scale(classes, tmp_path):
    """Ten classes get a tick per class, a hundred none (they would overlap); either way one 3.5-in column,
    no text below 8 pt, none overlapping or outside, and the scale from 0 to 1 named."""
    pytest.importorskip("matplotlib")
    from PIL import Image
    from matplotlib.figure import Figure

    from conftest import assert_legible_at_print_size
    from attn_bench.commands.figures import confusion_figure

    drawn = []
    original = Figure.savefig
    Figure.savefig = lambda self, *a, **k: (drawn.append(self), original(self, *a, **k))[1]
    try:
        counts = [[(7 if i == j else 1) for j in range(classes)] for i in range(classes)]
        png, _ = confusion_figure(counts, "resnet18 + se, synthetic test images (eval of a long run name)", tmp_path / "c")
    finally:
        Figure.savefig = original
    fig = drawn[0]
    assert fig.get_figwidth() == 3.5 and Image.open(png).size[0] <= 3.5 * 300
    assert assert_legible_at_print_size(fig) >= (2 * classes if classes <= 20 else 4)
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bar.get_ylim() == (0, 1) and bar.get_ylabel() == "share of the true class"
