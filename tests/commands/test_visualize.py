"""attn-bench visualize: heatmaps that can be checked against the synthetic shapes, and the command."""
import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf
from conftest import LEARN, TINY_TRAIN, assert_legible_at_print_size
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attn_bench.cli import main
from attn_bench.commands.train import run_training
from attn_bench.commands.visualize import cams, grid
from attn_bench.models import model_from_config

pytest.importorskip("pytorch_grad_cam")

# Grad-CAM energy inside the shape mask over the mask's share of the image, mean over 60 test images.
# The issue asked for 1.5; on this data an untrained network already reaches 0.96-1.53 (seeds 0-3:
# the bright shapes dominate any random feature map), so 1.5 would not separate trained from
# untrained. Trained (4 epochs) measured 2.25 (none) and 2.09 (cbam); on the shared recipe (the session's
# learned_synthetic run, 500 test images) 2.31 and 2.11, untrained 1.53 (2026-12-03).
ENERGY_THRESHOLD = 1.8


@pytest.fixture(scope="module")
def learned(tmp_path_factory, learned_synthetic):
    """The session's learned baseline run (copied) and CBAM on the same recipe: networks that found the shapes."""
    from conftest import _compose_train

    root = tmp_path_factory.mktemp("visualize_learned")
    shutil.copytree(learned_synthetic[0], root / "none")
    run_training(_compose_train(TINY_TRAIN + LEARN + ["model.attn=cbam", "measure_cost=false"]), root / "cbam")
    return root


SHORT = TINY_TRAIN + ["data.train_size=200", "data.test_size=100", "trainer.epochs=1", "measure_cost=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The baseline and CBAM after one short epoch: what the command does with runs (the command tests write
    into them), not what the maps show (``learned``)."""
    from conftest import _compose_train

    root = tmp_path_factory.mktemp("visualize")
    for attn in ("none", "cbam"):
        run_training(_compose_train(SHORT + [f"model.attn={attn}"]), root / attn)
    return root


def _energy(model, config) -> float:
    images = cams.eval_images(config["data"], 60)
    maps, _ = cams.class_activation_maps(model, images.inputs)
    return cams.energy_inside(maps, images.masks).mean().item()


@pytest.mark.slow  # 33 s here, 4 min on the 3.4x slower VM of #31 (two learned networks); the energy measure is
# checked by hand below and the command's drawing by the tests after it, on short runs
@pytest.mark.parametrize("attn", ["none", "cbam"])
def test_gradcam_energy_sits_on_the_shape_after_training_and_not_before(learned, attn):
    run = learned / attn
    config = json.loads((run / "metrics.json").read_text())["config"]
    assert _energy(cams.load_model(run, config), config) >= ENERGY_THRESHOLD
    torch.manual_seed(0)
    cfg = OmegaConf.create(config)
    untrained = model_from_config(cfg.model, 10, 32).model.eval()
    assert _energy(untrained, config) < ENERGY_THRESHOLD


def test_energy_is_one_for_a_uniform_map_and_exact_by_hand():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # a quarter of the image
    assert cams.energy_inside(torch.ones(1, 4, 4), masks).item() == pytest.approx(1.0)
    peaked = torch.zeros(1, 4, 4)
    peaked[0, 0, 0] = 1.0
    assert cams.energy_inside(peaked, masks).item() == pytest.approx(4.0)  # all energy in 1/4 of the area


def test_images_are_the_same_class_balanced_set_for_every_run():
    labels = torch.tensor([3, 1, 1, 0, 3, 0, 2, 2, 1])
    assert cams.balanced_indices(labels, 6) == [3, 1, 6, 0, 5, 2]  # classes 0, 1, 2, 3, then 0, 1 again


def test_the_command_draws_the_grid_writes_tensorboard_and_skips_bad_runs_in_one_line(trained, tmp_path, capsys,
                                                                                      monkeypatch):
    shutil.copytree(trained / "cbam", tmp_path / "cbam_no_ckpt")
    (tmp_path / "cbam_no_ckpt" / "last.pt").unlink()
    out = tmp_path / "figures"
    drawn, draw = [], grid.draw
    monkeypatch.setattr(grid, "draw", lambda raw, labels, names, rows, *a, **k: drawn.append(rows) or
                        draw(raw, labels, names, rows, *a, **k))
    assert main(["visualize", str(trained / "none"), str(tmp_path), "--images", "4", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert [row.label for row in drawn[0]] == ["none (baseline)\nseed 0"]  # named as in the report's figures
    assert (out / "heatmaps.png").stat().st_size > 10_000 and (out / "heatmaps.pdf").read_bytes()[:4] == b"%PDF"
    for pdf in out.glob("*.pdf"):  # TrueType fonts embedded, never Type 3 (journals' PDF checks)
        assert b"/Type3" not in pdf.read_bytes() and b"/FontFile2" in pdf.read_bytes(), pdf.name
    skipped = [line for line in captured.err.splitlines() if "no checkpoint" in line]
    assert len(skipped) == 1 and "cbam_no_ckpt" in skipped[0]
    assert f"wrote {out / 'heatmaps.png'}" in captured.out
    events = EventAccumulator(str(trained / "none"), size_guidance={"images": 0}).Reload()
    assert "visualize/heatmaps" in events.Tags()["images"]


def test_a_checkpoint_that_does_not_match_its_config_is_one_line_and_the_rest_is_drawn(trained, tmp_path, capsys):
    shutil.copytree(trained / "none", tmp_path / "none_with_cbam_weights")
    shutil.copy(trained / "cbam" / "last.pt", tmp_path / "none_with_cbam_weights" / "last.pt")
    out = tmp_path / "figures"
    assert main(["visualize", str(trained / "cbam"), str(tmp_path), "--images", "2", "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "does not match" in line]
    assert len(lines) == 1 and "none_with_cbam_weights" in lines[0] and "Traceback" not in lines[0]
    assert (out / "heatmaps.png").exists()  # the matching run is still drawn

    # a run whose config this attn-bench now builds otherwise (a changed preset) is drawn as it was built
    older = tmp_path / "cbam_older_preset"
    shutil.copytree(trained / "cbam", older)
    config = OmegaConf.load(older / "config.yaml")
    config.model.attn_stages = [4]
    OmegaConf.save(config, older / "config.yaml")
    shutil.rmtree(tmp_path / "none_with_cbam_weights")
    assert main(["visualize", str(trained / "cbam"), str(tmp_path), "--images", "2", "--out", str(out)]) == 0
    assert "skipped" not in capsys.readouterr().err
    rebuilt = cams.load_model(older, OmegaConf.to_container(config))
    assert {slot.stage for slot in rebuilt.attn_bench_slots} == {1, 2, 3, 4}  # as recorded, not stage 4 only


def test_a_block_without_maps_gets_grad_cam_and_one_line_saying_so(trained, tmp_path, capsys):
    from conftest import TINY_TRAIN, _compose_train

    run_training(_compose_train(SHORT + ["model.attn=simam"]), tmp_path / "simam")
    out = tmp_path / "figures"
    assert main(["visualize", str(trained / "cbam"), str(tmp_path / "simam"), "--images", "2", "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "neither spatial_map nor channel_weights" in line]
    assert len(lines) == 1 and "simam" in lines[0]
    events = EventAccumulator(str(tmp_path / "simam"), size_guidance={"images": 0}).Reload()
    assert "visualize/heatmaps" in events.Tags()["images"]  # still in the Grad-CAM grid


def test_a_flat_gate_is_drawn_flat_not_stretched_into_a_pattern():
    from attn_bench.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", "cbam", 10, stem="small", timm_kwargs={"channels": [16, 32, 64, 128]}).eval()
    gates = [m.spatial.bn.weight for m in model.modules() if getattr(m, "spatial", None) is not None]
    for module in model.modules():  # timm zero-inits each block's last BN: give the gates real input
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    inputs = torch.randn(3, 3, 32, 32)
    maps, label = cams.block_maps(model, inputs)  # a gate that varies is stretched to [0, 1]
    assert "span" in label and maps.flatten(1).amin(1).max() == 0 and maps.flatten(1).amax(1).min() == 1
    for weight in gates:  # CBAM's own init: sigmoid(0) = 0.5 everywhere, up to float rounding
        torch.nn.init.zeros_(weight)
    maps, label = cams.block_maps(model, inputs)
    assert "flat map (0.5) in 3/3" in label
    torch.testing.assert_close(maps, torch.full_like(maps, 0.5))


def test_the_blocks_own_maps_are_the_maps_they_apply():
    from attn_bench.attention import create_block

    torch.manual_seed(0)
    x = torch.randn(2, 32, 6, 5)
    cbam = create_block("cbam", 32).eval()
    with torch.no_grad():
        cbam.spatial.bn.weight.fill_(1.0)  # not the zero-init constant gate
        gate = cbam.spatial_map(x)
        torch.testing.assert_close(cbam(x), cbam.channel(x) * gate.unsqueeze(1))
        for name in ("gc", "nl"):  # softmax weights over positions: they sum to 1 per image
            maps = create_block(name, 32).eval().spatial_map(x)
            torch.testing.assert_close(maps.flatten(1).sum(1), torch.ones(2))
        psa = create_block("psa", 32).eval()
        torch.testing.assert_close(psa.spatial_map(x), psa.spatial_gate(x)[:, 0])
        triplet = create_block("triplet", 32).eval()
        triplet.hw.bn.weight.fill_(1.0)  # not the zero-init constant gate
        positive = x.abs() + 0.1  # the output is x times the gate: divide it back out
        torch.testing.assert_close(triplet.spatial_map(positive), (triplet(positive) / positive).mean(1))


def test_the_command_draws_the_blocks_own_maps_beside_grad_cam(trained, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["visualize", str(trained), "--images", "2", "--out", str(out)]) == 0
    assert (out / "attention_maps.png").stat().st_size > 10_000 and (out / "attention_maps.pdf").exists()
    events = EventAccumulator(str(trained / "cbam"), size_guidance={"images": 0}).Reload()
    assert {"visualize/heatmaps", "visualize/attention_maps"} <= set(events.Tags()["images"])


def test_channel_weights_are_the_gates_and_are_pooled_per_stage():
    from attn_bench.attention import create_block
    from attn_bench.models import build_model

    x = torch.randn(2, 32, 6, 5)
    for name in ("se", "eca"):
        block = create_block(name, 32).eval()
        with torch.no_grad():
            torch.testing.assert_close(block(x), x * block.channel_weights(x)[:, :, None, None])
    model = build_model("resnet18", "se", num_classes=10, timm_kwargs={"channels": (16, 32, 64, 128)}).eval()
    stages = cams.channel_weights_by_stage(model, torch.randn(3, 3, 32, 32))
    # two SE blocks per stage, 3 images, C channels each
    assert {k: v.numel() for k, v in stages.items()} == {"layer1": 96, "layer2": 192, "layer3": 384, "layer4": 768}
    assert all(((v > 0) & (v < 1)).all() for v in stages.values())


def test_bad_method_is_one_line(trained, capsys):
    assert main(["visualize", str(trained), "--method", "gradcam3"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'gradcam3'" in err and len(err.strip().splitlines()) == 1


def test_without_the_viz_extra_it_is_one_line_saying_how_to_install_it(trained, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytorch_grad_cam" else real(name, *a))
    assert main(["visualize", str(trained / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "grad-cam" in err and "attn-bench[viz]" in err


CIFAR100_LIKE = ["apple", "aquarium_fish", "automobile", "sweet_pepper", "pickup_truck", "willow_tree", "dog", "lawn_mower"]
LONG_LABELS = ["none (baseline)\nseed 0", "eca (kernel_size by stage 3/5/5/7)\nseed 0",
               "my_gate.py:MyGate@1a2b3c4d (rd_ratio=0.0625, site=pre)\nseed 1"]


def _grid(images: int):
    from attn_bench.commands.visualize import grid

    torch.manual_seed(0)
    names = CIFAR100_LIKE
    rows = []
    for label in LONG_LABELS:  # confident and wrong everywhere: bold titles, the widest
        probs = torch.full((images, len(names)), 0.01)
        probs[torch.arange(images), (torch.arange(images) + 2) % len(names)] = 0.93
        rows.append(grid.Row(label, torch.rand(images, 4, 4), probs))
    raw = (torch.rand(images, 3, 32, 32) * 255).to(torch.uint8)
    return grid.draw(raw, torch.arange(images) % len(names), names, rows,
                     "gradcam on the last stage of resnet18 (num_classes=100), cifar100 test images, 4 epochs "
                     "(red: wrong prediction)", "GradCAM of the predicted class, scaled to [0, 1] per image")


@pytest.mark.parametrize("images, printed_in", [(2, 3.5), (8, 7.0)])
def test_heatmap_grids_print_at_a_column_or_the_page_width_with_8_pt_text_apart_and_a_colour_scale(
        images, printed_in, tmp_path):
    """CIFAR-100's long class names and long block labels, every prediction wrong (bold): at the width the grid
    is printed at, no text below 8 pt, none overlapping another or outside the figure, the cropped files no
    wider than that, and the maps' colour scale (0 to 1) named under them."""
    from PIL import Image

    from attn_bench.commands.visualize import grid

    fig = _grid(images)
    assert fig.get_figwidth() == printed_in
    assert assert_legible_at_print_size(fig) == 1 + images * 4 + 4 + 1 + 3  # title, titles, row labels, scale
    (bar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert bar.get_xlim() == (0, 1) and "scaled to [0, 1] per image" in bar.get_xlabel().replace("\n", " ")
    png, pdf = grid.save(fig, tmp_path / "heatmaps")
    assert Image.open(png).size[0] <= printed_in * 300  # placed at that width, the text is not scaled down
    assert b"/Type3" not in pdf.read_bytes()


@pytest.mark.parametrize("runs, printed_in", [(1, 3.5), (4, 7.0)])
def test_channel_weight_figures_print_at_a_column_or_the_page_width_with_8_pt_text_apart(runs, printed_in, tmp_path):
    from PIL import Image

    from attn_bench.commands.visualize import grid

    weights = {f"layer{i}": torch.rand(200) for i in range(1, 5)}
    fig = grid.channel_weight_figure([(f"se (rd_ratio=0.0625), seed {s}", weights) for s in range(runs)],
                                     "channel weights per stage over the 8 drawn cifar100 test images")
    assert fig.get_figwidth() == printed_in
    assert_legible_at_print_size(fig)
    png, _ = grid.save(fig, tmp_path / "channel_weights")
    assert Image.open(png).size[0] <= printed_in * 300


def test_more_images_than_a_page_holds_are_drawn_and_say_how_small_their_text_prints(capsys):
    from attn_bench.commands import visualize
    from attn_bench.commands.visualize import grid

    assert grid.grid_width(8) == 7.0 and grid.grid_width(12) > 7.0
    visualize._warn_if_wider_than_a_page(8)
    assert capsys.readouterr().err == ""
    visualize._warn_if_wider_than_a_page(12)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "12 images" in err and "9.7 in wide" in err and "prints at 5.7 pt" in err, err  # 8 pt x 7 / 9.74


def test_labels_wrap_at_spaces_and_long_names_after_their_separators():
    from attn_bench.commands.figures import text_width_in, wrap

    assert wrap("eca (kernel_size by stage 3/5/5/7)", 1.0) == "eca (kernel_size\nby stage 3/5/5/7)"
    assert wrap("my_gate.py:MyGate@1a2b3c4d", 1.0) == "my_gate.py:\nMyGate@\n1a2b3c4d"
    assert wrap("dog 97%", 1.0) == "dog 97%"
    long = wrap("x" * 60, 1.0)
    assert "".join(long.split("\n")) == "x" * 60 and all(text_width_in(line) <= 1.0 for line in long.split("\n"))
