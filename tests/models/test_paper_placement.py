"""model.placement=paper: each block at its paper's site and stages, with exact parameter counts;
the sites put modules where the official code does; uniform keeps today's models."""
from __future__ import annotations

import pytest
import torch

from attn_bench.errors import ConfigError
from attn_bench.metrics.complexity import count_params
from attn_bench.models import build_model, build_placed
from attn_bench.models.labels import block_label

# ResNet-50, 1000 classes; paper figures: BAM 25.92 M (BAM Table 6), GC c3-c5 r16 add 28.08 M (GCNet Table 2)
PAPER_RESNET50 = {"none": 25_557_032, "se": 28_088_024, "cbam": 28_089_624, "eca": 25_557_112, "gam": 151_352_376,
                  "bam": 25_915_099, "gc": 28_078_773, "simam": 25_557_032, "triplet": 25_561_832}


@pytest.mark.parametrize("block, params", PAPER_RESNET50.items())
def test_paper_placement_parameter_counts_on_resnet50(block, params):
    assert count_params(build_model("resnet50", block, placement="paper"))["params"] == params


def test_eca_paper_preset_is_the_released_eca_net50_with_the_80_parameters_its_paper_counts():
    model, placement = build_placed("resnet50", "eca", placement="paper")
    assert count_params(model)["attn_params"] == 80  # ECA abstract: "80 vs. 24.37M"
    kernels = {name: m.conv.kernel_size[0] for name, m in model.named_modules() if type(m).__name__ == "EfficientChannelAttn"}
    assert {k: v for k, v in kernels.items() if k.endswith(".0.se")} == \
        {"layer1.0.se": 3, "layer2.0.se": 5, "layer3.0.se": 5, "layer4.0.se": 7}
    assert placement["stage_args"] == {"kernel_size": {"1": 3, "2": 5, "3": 5, "4": 7}}
    assert block_label({"attn": "eca"}, None, placement) == "eca (kernel_size by stage 3/5/5/7)"
    assert count_params(build_model("resnet101", "eca", placement="paper"))["attn_params"] == 3 * 3 + 4 * 3 + 23 * 5 + 3 * 7
    # the adaptive formula elsewhere, and under uniform; an explicit kernel size replaces the preset
    assert count_params(build_model("resnet50", "eca"))["attn_params"] == 86
    assert "stage_args" not in build_placed("resnet18", "eca", placement="paper").placement
    explicit, explicit_placement = build_placed("resnet50", "eca", placement="paper", attn_args={"kernel_size": 3})
    assert count_params(explicit)["attn_params"] == 48 and "stage_args" not in explicit_placement
    for own in ({"gamma": 3}, {"beta": 2}):  # what decides the kernel size: the run's formula, not the preset
        built, built_placement = build_placed("resnet50", "eca", placement="paper", attn_args=own)
        assert count_params(built)["attn_params"] == count_params(build_model("resnet50", "eca", attn_args=own))["attn_params"]
        assert "stage_args" not in built_placement
    only4, only4_placement = build_placed("resnet50", "eca", placement="paper", attn_stages=[4])
    assert count_params(only4)["attn_params"] == 21 and only4_placement["stage_args"] == {"kernel_size": {"4": 7}}


def test_gam_paper_preset_uses_the_papers_ratio_and_says_what_it_leaves_out(caplog):
    torch.set_default_device("meta")  # shapes and counts only: GAM-ResNet-50 at r=4 has 528 M parameters
    try:
        _check_gam_preset(caplog)
    finally:
        torch.set_default_device(None)


def _check_gam_preset(caplog):
    with caplog.at_level("INFO", logger="attn_bench"):
        model, placement = build_placed("resnet50", "gam", placement="paper")
    assert placement["args"] == {"rd_ratio": 1 / 16}
    gams = [m for m in model.modules() if type(m).__name__ == "GAM"]
    widths = {(m.fc1.in_features, m.fc1.out_features, m.conv1.out_channels, m.conv1.groups) for m in gams}
    assert len(gams) == 16 and widths == {(c, c // 16, c // 16, 1) for c in (256, 512, 1024, 2048)}  # C/16, ungrouped
    assert "group count the paper does not give" in caplog.text
    assert block_label({"attn": "gam"}, None, placement) == "gam (rd_ratio=0.0625)"
    assert count_params(build_model("resnet50", "gam", placement="uniform"))["params"] == 528_602_472  # the copies' r=4
    mine, mine_placement = build_placed("resnet18", "gam", placement="paper", attn_args={"rd_ratio": 0.25})
    assert mine_placement["args"] == {"rd_ratio": 0.25}
    mine, mine_placement = build_placed("resnet18", "gam", placement="paper", attn_args={"rd_channels": 8})
    assert mine_placement["args"] == {"rd_channels": 8}  # no idle rd_ratio in the record or label
    caplog.clear()
    with caplog.at_level("INFO", logger="attn_bench"):
        grouped, grouped_placement = build_placed("resnet50", "gam", placement="paper", attn_args={"group": True})
    assert grouped_placement["args"] == {"rd_ratio": 1 / 16, "group": True} and "not applied" not in caplog.text


def test_uniform_placement_is_the_residual_site_of_every_block():
    model, placement = build_placed("resnet50", "bam", placement="uniform")
    assert count_params(model)["params"] == 30_771_496
    assert placement == {"placement": "uniform", "site": "residual", "stages": "all",
                                          "position": "every", "args": {}}


def _widths_seen(model, suffix: str) -> dict[str, int]:
    seen = {}
    for name, module in model.named_modules():
        if name.endswith(suffix):
            module.register_forward_hook(lambda m, i, o, name=name: seen.update({name: (i[0].shape[1], o.shape)}))
    model.eval()(torch.randn(1, 3, 64, 64))
    return seen


def test_bam_sits_on_the_trunk_after_stages_1_to_3():
    """Official code: bam1..bam3 after layer1..layer3, on the trunk's width (256, 512, 1024)."""
    model, placement = build_placed("resnet50", "bam", placement="paper")
    seen = _widths_seen(model, ".attn")
    assert {k: v[0] for k, v in seen.items()} == {"layer1.attn": 256, "layer2.attn": 512, "layer3.attn": 1024}
    assert all(type(model.get_submodule(f"layer{i}.{j}").se).__name__ == "Identity" for i in (1, 2) for j in (0, 1))
    assert placement["site"] == "stage_end" and placement["stages"] == [1, 2, 3]


def test_simam_sits_after_each_bottlenecks_3x3_conv():
    model = build_model("resnet50", "simam", placement="paper")
    seen = _widths_seen(model, "conv2.attn")
    assert len(seen) == 16  # 3 + 4 + 6 + 3 bottlenecks
    assert seen["layer1.0.conv2.attn"][0] == 64 and seen["layer4.2.conv2.attn"][0] == 512  # the middle width
    assert type(model.layer1[0].conv2.conv).__name__ == "Conv2d" and model.layer1[0].conv2.conv.kernel_size == (3, 3)


@pytest.mark.parametrize("backbone, conv, blocks", [("resnet18", "conv2", 8), ("resnet50", "conv2", 16),
                                                    ("mobilenetv2_100", "conv_dw", 17)])
def test_simam_takes_exactly_the_3x3_convs_output_before_its_bn_as_the_official_code(backbone, conv, blocks):
    """ZjjConan/SimAM: Sequential(conv2, simam) in BasicBlock and Bottleneck (networks/cifar/block.py,
    networks/imagenet/resnet.py), Sequential(depthwise conv, simam) in MobileNetV2's blocks. Forward hooks:
    each SimAM's input is the conv's output tensor itself, and what follows it is the block's BN."""
    model, placement = build_placed(backbone, "simam", placement="paper")
    model.eval()
    assert placement["site"] == "mid"
    seen = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "SimAM":
            host = model.get_submodule(name.rpartition(".")[0])  # the Sequential(conv, attn)
            host.conv.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, {}).update(conv=o))
            module.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, {}).update(attn=i[0]))
    model(torch.randn(1, 3, 64, 64))
    assert len(seen) == blocks and all(v["attn"] is v["conv"] for v in seen.values())
    for name in seen:
        block_path, _, host = name.rpartition(".")[0].rpartition(".")
        block = model.get_submodule(block_path)
        assert host == conv and getattr(block, conv).conv.kernel_size == (3, 3)
        children = [n for n, _ in block.named_children()]
        assert children[children.index(conv) + 1].startswith("bn")  # the BN comes after SimAM


def test_psa_keeps_the_mid_site_for_bottlenecks_only_and_says_why_elsewhere(caplog):
    assert build_placed("resnet50", "psa", placement="paper").placement["site"] == "mid"
    with caplog.at_level("INFO", logger="attn_bench"):
        model, placement = build_placed("resnet18", "psa", placement="paper")
    assert placement["site"] == "residual"
    assert "defined for bottleneck blocks, which resnet18 does not have" in caplog.text


def test_gc_paper_stages_are_c3_to_c5():
    model, placement = build_placed("resnet50", "gc", placement="paper")
    assert placement["stages"] == [2, 3, 4]
    assert type(model.layer1[0].se).__name__ == "Identity" and type(model.layer2[0].se).__name__ == "GlobalContext"


def test_explicit_settings_override_the_paper_preset():
    model = build_model("resnet50", "bam", placement="paper", attn_stages=[2], attn_site="stage_end")
    assert [n for n, _ in model.named_modules() if n.endswith(".attn")] == ["layer2.attn"]
    model = build_model("resnet50", "gc", placement="paper", attn_stages=[1, 2, 3, 4])
    assert count_params(model)["params"] == 28_105_032


def test_labels_show_the_resolved_placement():
    record = build_placed("resnet50", "bam", placement="paper").placement
    assert block_label({"attn": "bam"}, None, record) == "bam (site=stage_end, stages=[1, 2, 3])"
    uniform = build_placed("resnet50", "bam", placement="uniform").placement
    assert block_label({"attn": "bam"}, None, uniform) == "bam"


@pytest.mark.parametrize("kwargs, message", [
    ({"placement": "papers"}, "unknown model.placement 'papers'; valid choices: paper, uniform"),
    ({"attn_site": "conv", "backbone": "mobilenetv2_100"},
     "model.attn_site 'conv' does not exist in mobilenetv2_100; its sites: residual, mid, stage_end, input"),
    ({"attn_site": "middle"},
     "model.attn_site 'middle' does not exist in resnet50; its sites: residual, mid, stage_end, trunk, conv, input"),
    ({"attn_site": "trunk", "backbone": "mobilenetv2_100"},
     "model.attn_site 'trunk' does not exist in mobilenetv2_100; its sites: residual, mid, stage_end, input"),
    ({"attn_position": "second"}, "unknown attention position 'second'; valid choices: every, last, alternate"),
    ({"attn_stages": [5]}, "stage(s) [5] have no attention slot; this backbone has stages [1, 2, 3, 4]"),
])
def test_bad_placements_are_one_line_errors(kwargs, message):
    backbone = kwargs.pop("backbone", "resnet50")
    with pytest.raises(ConfigError) as err:
        build_model(backbone, "bam", **{"placement": "paper", **kwargs})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_run_records_and_labels_its_resolved_placement(compose_train, tiny_train, tmp_path):
    from attn_bench.commands.train import run_training

    metrics = run_training(compose_train(tiny_train + ["model.attn=bam", "trainer.epochs=1", "measure_cost=false"]),
                           tmp_path / "paper")
    assert metrics["placement"] == {"placement": "paper", "site": "stage_end", "stages": [1, 2, 3],
                                    "position": "every", "args": {}}
    uniform = run_training(compose_train(tiny_train + ["model.attn=bam", "model.placement=uniform", "trainer.epochs=1",
                                                       "measure_cost=false"]), tmp_path / "uniform")
    assert uniform["placement"]["site"] == "residual" and uniform["params"] > metrics["params"]


    # the finished run, re-run by an attn-bench whose paper preset puts BAM elsewhere: refused, not reused
    import json

    path = tmp_path / "paper" / "metrics.json"
    older = json.loads(path.read_text())
    older["placement"]["stages"] = [1, 2]
    path.write_text(json.dumps(older))
    with pytest.raises(ConfigError, match=r"built otherwise than this attn-bench builds the same config "
                                          r"\(stages: \[1, 2\] -> \[1, 2, 3\]\)"):
        run_training(compose_train(tiny_train + ["model.attn=bam", "trainer.epochs=1", "measure_cost=false"]),
                     tmp_path / "paper")
    # an interrupted run (a checkpoint, no final record) is checked against what its start recorded
    path.unlink()
    spec = json.loads((tmp_path / "paper" / "run.json").read_text())
    assert spec["placement"]["stages"] == [1, 2, 3] and (tmp_path / "paper" / "last.pt").exists()
    spec["placement"]["site"] = "residual"
    (tmp_path / "paper" / "run.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=r"\(site: 'residual' -> 'stage_end'\)"):
        run_training(compose_train(tiny_train + ["model.attn=bam", "trainer.epochs=1", "measure_cost=false"]),
                     tmp_path / "paper")


def test_the_readme_parity_table_matches_every_published_figure():
    """scripts/param_table.py --parity: ours (placement=paper) rounds to each paper's published count."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "param_table.py"
    spec = importlib.util.spec_from_file_location("param_table", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rows = script.parity_rows()
    assert {r["attn"] for r in rows} >= {"se", "cbam", "eca", "bam", "gc", "triplet", "simam", "ca", "sk"}
    assert {r["backbone"] for r in rows} >= {"resnet50", "resnet18", "mobilenetv2_100", "mobilenetv3_large_100"}
    assert {r["backbone"] for r in rows} >= {"resnet20_cifar", "resnet110_cifar", "preact_resnet164_cifar", "wrn28_10"}
    assert {(r["attn"], r["backbone"]) for r in rows if r["paper_m"] is None} == {
        ("nl", "resnet50"), ("psa", "resnet50"), ("stn", "resnet50"), ("gam", "resnet50"), ("ese", "resnet50"), ("scse", "resnet50"), ("nam", "resnet50"), ("cc", "resnet50"),
        ("splat", "resnet50"), ("ge", "resnet50"), ("gct", "resnet50"), ("ema", "resnet50"),
        ("simam", "resnet56_cifar"), ("none", "resnet110_abn_cifar")}  # CIFAR papers that print accuracy only
    for row in rows:  # every published total is matched, or the row says in one line why not
        matches = row["paper_m"] is not None and script.published_matches(row["params"], row["paper_m"])
        assert matches != bool(row["gap"]) or row["paper_m"] is None, row
        assert row["paper_added"] is None or row["paper_added"] == row["attn_params"], row
        assert "\n" not in (row["gap"] or "")
    assert not script.published_matches(27_579_784, "27.5")  # 100k parameters off would show
    readme = (path.parents[1] / "README.md").read_text()
    assert script.parity_markdown(rows) in readme, "README's parity table is stale: run scripts/param_table.py --parity"


def test_se_on_mobilenetv3_is_the_stock_network_parameter_for_parameter():
    """placement=paper for se on MobileNetV3-Large: SE in the 8 blocks timm's model has it in, same
    widths and gate; with timm's weights copied in, the outputs are identical."""
    import timm

    model, placement = build_placed("mobilenetv3_large_100", "se", placement="paper")
    stock = timm.create_model("mobilenetv3_large_100")
    assert count_params(model)["params"] == sum(p.numel() for p in stock.parameters()) == 5_483_032
    renamed = {k.replace("se.conv_reduce", "se.fc1").replace("se.conv_expand", "se.fc2"): v
               for k, v in stock.state_dict().items()}
    assert model.load_state_dict(renamed, strict=True)  # every tensor name and shape matches
    # Compared with a stated tolerance, not bit for bit: our SE and timm's compute the same function with
    # different modules, whose kernels may round differently on another machine (1e-5 on logits of order 1)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), stock.eval()(x), rtol=1e-5, atol=1e-5)
    assert placement["layout"] == "stock SE blocks (8 of 15)"
    assert block_label({"attn": "se"}, None, placement) == \
        "se (stages=[3, 5, 6], stock SE blocks (8 of 15))"
    # uniform: our SE (r=16) in all 15 blocks, like for like with every other block
    assert len([m for m in build_model("mobilenetv3_large_100", "se").modules()
                if type(m).__name__ == "SqueezeExcite"]) == 15


def test_trunk_conv_and_input_sites_sit_where_their_papers_put_them():
    model, placement = build_placed("resnet18", "nl", attn_site="trunk", attn_stages=[4], attn_position="last")
    assert [n for n, m in model.named_modules() if type(m).__name__ == "NonLocal"] == ["layer4.1.act2.attn"]
    model, placement = build_placed("resnet18", "sk", attn_stages=[2], attn_position="alternate")  # BasicBlock: its first 3x3
    assert [n for n, m in model.named_modules() if type(m).__name__ == "SelectiveKernel"] == ["layer2.1.conv1"]
    model, placement = build_placed("resnet18", "stn")
    assert [n for n, m in model.named_modules() if type(m).__name__ == "SpatialTransformer"] == ["conv1.attn"]
    assert placement["stages"] == "all"


def test_a_run_recorded_under_an_older_preset_is_rebuilt_as_it_was_trained():
    """Runs made before ECA's and GAM's paper presets recorded args {} at every block: eval and visualize
    rebuild exactly that network (the psi(C) kernels, GAM's default r=4) instead of the current preset."""
    from omegaconf import OmegaConf

    from attn_bench.models import model_as_recorded

    older = {"placement": "paper", "site": "residual", "stages": "all", "position": "every", "args": {}}
    for backbone, attn, attn_params in (("resnet50", "eca", 86), ("resnet18", "gam", 17_415_200)):
        cfg = OmegaConf.create({"backbone": backbone, "attn": attn, "attn_args": {}, "placement": "paper",
                                "attn_site": None, "attn_stages": None, "attn_position": None, "stem": "imagenet",
                                "timm_kwargs": {}})
        model, placement = model_as_recorded(cfg, 1000, 224, older)
        assert count_params(model)["attn_params"] == attn_params and placement == older
        assert count_params(model_as_recorded(cfg, 1000, 224, None).model)["attn_params"] != attn_params  # today's preset


def test_every_preset_is_valid_data_and_no_code_branches_on_a_block_name():
    """placement=paper is one table (models.presets.PRESETS): each entry names a real site, position,
    backbone and argument of its block, and `attn-bench blocks` prints its words."""
    import ast
    from pathlib import Path

    from attn_bench.attention import block_defaults, block_sites, list_blocks
    from attn_bench.models import presets
    from attn_bench.models.backbones import SUPPORTED_BACKBONES
    from attn_bench.models.placement import POSITIONS

    for name, preset in presets.PRESETS.items():
        assert name in list_blocks(), name
        assert preset.site is None or preset.site in block_sites(name), name
        assert preset.position in POSITIONS and preset.where and preset.source, name
        assert set(preset.args) | preset.decided_by <= set(block_defaults(name)), name
        assert set(preset.stage_args) <= set(SUPPORTED_BACKBONES), name
        assert all(set(args) <= set(block_defaults(name)) for by_stage in preset.stage_args.values()
                   for args in by_stage.values()), name
    branches = [node.lineno for node in ast.walk(ast.parse(Path(presets.__file__).read_text()))
                if isinstance(node, ast.Compare) and any(isinstance(o, ast.Name) and o.id in ("attn", "backbone")
                                                         for o in [node.left, *node.comparators])
                and any(isinstance(o, ast.Constant) for o in [node.left, *node.comparators])]
    assert not branches, f"presets.py compares a block or backbone name with a constant at lines {branches}"



def test_sk_off_resnext_is_labelled_not_a_published_network(caplog):
    """SKNet-50 is ResNeXt-50 (32x4d) with SK units; SK units in a ResNet-50 are no paper's network:
    the record, the row label and the HParams say so, and a line names the backbone that is."""
    from attn_bench.commands.train.records import hparams

    with caplog.at_level("INFO", logger="attn_bench"):
        model, placement = build_placed("resnet50", "sk", placement="paper")
    assert placement["note"] == "not a published network"
    assert block_label({"attn": "sk"}, None, placement) == "sk (site=conv, not a published network)"
    assert "sk on resnet50 is not a published network" in caplog.text and "model=resnext50_32x4d" in caplog.text
    sknet, sknet_placement = build_placed("resnext50_32x4d", "sk", placement="paper")
    assert "note" not in sknet_placement and count_params(sknet)["params"] == 27_479_784
    assert "note" not in build_placed("resnet50", "sk", placement="uniform").placement  # no paper claim

    from types import SimpleNamespace

    from conftest import _compose_train

    record = SimpleNamespace(placement=placement, block=None, final={"top1": 1.0, "top5": 2.0},
                             best={"top1": 1.0}, params=1, attn_params=1, train_img_per_s=1.0, peak_memory_mb=1.0,
                             final_ema=None, cost=None, images=None)
    values, _ = hparams(_compose_train(["model.attn=sk"]), record)
    assert values["attn_note"] == "not a published network"
    record.cost = {"gmacs": 1.0, "latency_ms": 1689.0, "throughput_img_per_s": 10.0, "latency_busy": True}
    values, results = hparams(_compose_train(["model.attn=sk"]), record)  # HParams flag a busy timing too
    assert results["hparam/latency_ms"] == 1689.0 and values["latency_busy"] is True
    assert values["throughput_busy"] is False
