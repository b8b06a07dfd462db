"""He et al.'s CIFAR ResNets: the published sizes, option A's parameter-free shortcut, and every site."""
import logging

import pytest
import timm
import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed
from attn_bench.models.cifar_resnets import ZeroPadShortcut
from attn_bench.models.placement import available_sites


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def by_hand(n: int, classes: int, projection: bool = False) -> int:
    """3x3 convs without bias, BN weight + bias, the classifier; B adds two 1x1 projections with BN."""
    convs = 3 * 16 * 9 + sum(9 * c_in * c_out for c_in, c_out in
                             [(16, 16)] * 2 * n + [(16, 32), (32, 32)] + [(32, 32)] * (2 * n - 2)
                             + [(32, 64), (64, 64)] + [(64, 64)] * (2 * n - 2))
    bns = 2 * (16 + 16 * 2 * n + 32 * 2 * n + 64 * 2 * n)
    shortcuts = (16 * 32 + 2 * 32 + 32 * 64 + 2 * 64) if projection else 0
    return convs + bns + shortcuts + 64 * classes + classes


# He et al. 2016, Table 6: "# params" of ResNet-20/32/44/56/110 on CIFAR-10
PUBLISHED = {20: (3, "0.27M", 269_722), 32: (5, "0.46M", 464_154), 44: (7, "0.66M", 658_586),
             56: (9, "0.85M", 853_018), 110: (18, "1.7M", 1_727_962)}


@pytest.mark.parametrize("depth", PUBLISHED)
def test_each_network_has_its_papers_size(depth):
    n, published, exact = PUBLISHED[depth]
    with torch.device("meta"):
        ten = timm.create_model(f"resnet{depth}_cifar", num_classes=10)
        hundred = timm.create_model(f"resnet{depth}_cifar", num_classes=100)
        option_b = timm.create_model(f"resnet{depth}_cifar", num_classes=10, shortcut="B")
    assert n_params(ten) == by_hand(n, 10) == exact
    assert f"{exact / 1e6:.{len(published) - 3}f}M" == published
    assert n_params(hundred) == by_hand(n, 100) == exact + 90 * 65
    assert n_params(option_b) == by_hand(n, 10, projection=True)
    layers = [m for m in ten.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == depth == 6 * n + 2  # option A adds no layer
    assert [len(getattr(ten, f"layer{i}")) for i in (1, 2, 3)] == [n] * 3
    assert all(type(b) is BasicBlock for s in (ten.layer1, ten.layer2, ten.layer3) for b in s)


def abn_by_hand(n: int, classes: int) -> int:
    """ABN's ResNet-110 trunk: bottlenecks (1x1, 3x3, 1x1 to 4x planes, BN after each), a 1x1 conv + BN
    projection on the first block of every stage, the 16-channel stem and the classifier on 256 features."""
    total, inplanes = 3 * 16 * 9 + 2 * 16, 16
    for planes in (16, 32, 64):
        for index in range(n):
            total += inplanes * planes + 9 * planes * planes + planes * 4 * planes + 2 * (planes + planes + 4 * planes)
            if index == 0:
                total += inplanes * 4 * planes + 2 * 4 * planes
            inplanes = 4 * planes
    return total + 256 * classes + classes


def test_abns_resnet110_is_its_codes_bottleneck_network():
    with torch.device("meta"):
        ten = timm.create_model("resnet110_abn_cifar", num_classes=10)
        hundred = timm.create_model("resnet110_abn_cifar", num_classes=100)
    assert n_params(ten) == abn_by_hand(18, 10) == 1_704_154  # no count is published; counted by hand
    assert n_params(hundred) == abn_by_hand(18, 100) == 1_727_284
    stages = (ten.layer1, ten.layer2, ten.layer3)
    assert [len(s) for s in stages] == [18] * 3 and all(type(b) is Bottleneck for s in stages for b in s)
    assert [[i for i, b in enumerate(s) if b.downsample is not None] for s in stages] == [[0]] * 3
    assert [s[0].conv2.stride for s in stages] == [(1, 1), (2, 2), (2, 2)]  # the stride on the 3x3 conv
    assert len([m for m in ten.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]) == 9 * 18 + 2 + 3
    model = timm.create_model("resnet110_abn_cifar", num_classes=10).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10) and model.layer1[0].bn3.weight.eq(1).all()
    with pytest.raises(ConfigError, match=r"shortcut='A': valid choices for resnet110_abn_cifar: B "):
        build_model("resnet110_abn_cifar", "none", 10, stem="small", timm_kwargs={"shortcut": "A"})


@pytest.mark.parametrize("attn, site", [("se", "residual"), ("simam", "mid"), ("psa", "mid"), ("cbam", "residual")])
def test_the_papers_placements_work_on_abns_bottleneck_network(attn, site):
    model, placement = build_placed("resnet110_abn_cifar", attn, 10, stem="small", placement="paper")
    assert placement["site"] == site and len(model.attn_bench_slots) == 54
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_abns_cifar_experiment_trains_abns_resnet110(compose_train):
    from attn_bench.models import model_from_config

    cfg = compose_train(["experiment=abn_cifar100"])
    assert (cfg.model.backbone, cfg.trainer.epochs, list(cfg.trainer.scheduler.decay_epochs)) == (
        "resnet110_abn_cifar", 300, [150, 225])
    model, placement = model_from_config(cfg.model, 100, 32)
    assert n_params(model) == 1_727_284 and not model.attn_bench_slots


def test_option_a_shortcut_subsamples_and_pads_with_zero_channels():
    x = torch.randn(2, 16, 8, 8)
    y = ZeroPadShortcut(2, 16)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()


def test_maps_are_32_16_8_and_the_stem_has_no_pooling():
    model = timm.create_model("resnet20_cifar", num_classes=10).eval()
    shapes = {}
    for name in ("conv1", "layer1", "layer2", "layer3"):
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: shapes.update({name: o.shape}))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert {k: tuple(v[1:]) for k, v in shapes.items()} == {
        "conv1": (16, 32, 32), "layer1": (16, 32, 32), "layer2": (32, 16, 16), "layer3": (64, 8, 8)}


@pytest.mark.parametrize("attn, site, placed", [
    ("se", "residual", 9), ("simam", "mid", 9),
    ("bam", "stage_end", 2),  # after the stages that are followed by downsampling (BAM's CIFAR networks)
    ("nl", "trunk", 3),  # every other block, here of every stage (its paper's stages are ImageNet ResNet's)
    ("sk", "conv", 9), ("stn", "input", 1),
])
def test_every_site_works_on_a_cifar_resnet(attn, site, placed):
    args = {"groups": 8} if attn == "sk" else None  # SK's G=32 is ResNeXt's; 16-channel convs need fewer
    model, placement = build_placed("resnet20_cifar", attn, 10, stem="small", placement="paper", attn_args=args)
    model.eval()
    assert placement["site"] == site
    assert len(model.attn_bench_slots) == placed
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_simam_sits_on_the_basic_blocks_conv2_output_as_in_the_official_cifar_code():
    model = build_model("resnet20_cifar", "simam", 10, stem="small", placement="paper").eval()
    seen = {}
    block = model.layer2[1]
    block.conv2.conv.register_forward_hook(lambda m, i, o: seen.update(conv=o))
    block.conv2.attn.register_forward_hook(lambda m, i, o: seen.update(attn_in=i[0]))
    model(torch.randn(1, 3, 32, 32))
    assert torch.equal(seen["conv"], seen["attn_in"])


def test_papers_stage_numbers_of_imagenet_resnets_become_every_stage_said_in_a_line(caplog):
    with caplog.at_level(logging.INFO, logger="attn_bench"):
        model, placement = build_placed("resnet20_cifar", "gc", 10, stem="small", placement="paper")
    assert placement["stages"] == "all"
    assert "(ImageNet) ResNet stages 2-4 only; using every stage of resnet20_cifar" in caplog.text
    assert available_sites(model) == ["residual", "mid", "stage_end", "trunk", "conv", "input", "convs"]


def test_an_imagenet_stem_or_an_unknown_shortcut_is_one_line():
    with pytest.raises(ConfigError, match="resnet56_cifar is a CIFAR network whose stem is its own 3x3 conv"):
        build_model("resnet56_cifar", "none", 10, stem="imagenet")
    with pytest.raises(ConfigError, match=r"shortcut='C': valid choices for resnet56_cifar: A, B"):
        build_model("resnet56_cifar", "none", 10, stem="small", timm_kwargs={"shortcut": "C"})


def test_the_cli_config_trains_it_and_auto_keeps_its_own_stem_at_any_size(compose_train, tmp_path):
    from attn_bench.commands.train import run_training
    from attn_bench.models import model_from_config

    cfg = compose_train(["model=resnet20_cifar", "model.attn=eca", "data.train_size=200", "data.test_size=100",
                         "trainer.epochs=1", "measure_cost=false"])
    model = model_from_config(cfg.model, 10, 224).model
    assert model.conv1.kernel_size == (3, 3) and n_params(model) == 269_722 + 3 * 9  # ECA: 9 blocks, k=3
    metrics = run_training(cfg, tmp_path)
    assert metrics["status"] == "completed" and metrics["params"] == 269_722 + 27


def test_simams_cifar_experiment_trains_simams_own_cifar_network(compose_train):
    from attn_bench.models import model_from_config

    cfg = compose_train(["experiment=simam_cifar100", "model.attn=simam"])
    assert (cfg.model.backbone, dict(cfg.model.timm_kwargs)) == ("resnet56_cifar", {"shortcut": "B"})
    model, placement = model_from_config(cfg.model, 100, 32)
    assert n_params(model) == by_hand(9, 100, projection=True)  # SimAM adds no parameter
    assert placement["site"] == "mid" and len(model.attn_bench_slots) == 27
