"""``build_model`` and the placement code: parameter counts, placement semantics, stems, errors."""
from __future__ import annotations

import math
import re

import pytest
import timm
import torch
from timm.models._efficientnet_blocks import SqueezeExcite as TimmSqueezeExcite
from torch import nn

from attn_bench.attention import block_defaults, list_blocks
from attn_bench.attention.cbam import CBAM
from attn_bench.attention.eca import EfficientChannelAttn, adaptive_kernel_size
from attn_bench.attention.squeeze_excite import SqueezeExcite
from attn_bench.errors import ConfigError
from attn_bench.models import SUPPORTED_BACKBONES, attention_modules, build_model, find_slots

# ResNet-50 bottleneck output channels and block counts per stage (He et al. 2016, Table 1).
RESNET50_STAGES = [(256, 3), (512, 4), (1024, 6), (2048, 3)]
RESNET50_PARAMS = 25_557_032  # timm resnet50, 1000 classes


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def attn_params(model: nn.Module) -> int:
    return sum(n_params(m) for m in attention_modules(model))


def se_params(c: int, r: int = 16) -> int:
    """Two FCs with bias, C -> C/r -> C (SE paper / official SE-ResNet-50 prototxt)."""
    cr = c // r
    return 2 * c * cr + cr + c


@pytest.fixture(scope="module")
def resnet50_counts() -> dict[str, int]:
    """Total parameter counts of 1000-class ResNet-50 with no / SE / CBAM / ECA attention."""
    return {attn: n_params(build_model("resnet50", attn)) for attn in ("none", "se", "cbam", "eca")}


# -- exact parameter counts ---------------------------------------------------------------------

def test_resnet50_baseline_is_timm_resnet50(resnet50_counts):
    assert resnet50_counts["none"] == RESNET50_PARAMS
    assert n_params(timm.create_model("resnet50", pretrained=False)) == RESNET50_PARAMS
    assert round(RESNET50_PARAMS / 1e6, 2) == 25.56  # SE paper Table 2 / CBAM paper Table 4


def test_se_resnet50_matches_papers(resnet50_counts):
    # SE-ResNet-50: 28,088,024 = 25,557,032 + 2,530,992 (SE, r = 16, FC biases); both the SE
    # paper (Table 2) and the CBAM paper (Table 4) report 28.09M.
    added = sum(n * se_params(c) for c, n in RESNET50_STAGES)
    assert added == 2_530_992
    assert resnet50_counts["se"] == 28_088_024 == RESNET50_PARAMS + added
    assert round(resnet50_counts["se"] / 1e6, 2) == 28.09


def test_cbam_resnet50_matches_paper(resnet50_counts):
    # CBAM-ResNet-50: 28,089,624 = SE-ResNet-50 + 16 blocks x 100 (7x7 conv 2 -> 1 without bias
    # = 98, spatial BN weight + bias = 2); CBAM paper Table 4 reports 28.09M.
    added = sum(n * (se_params(c) + 2 * 7 * 7 + 2) for c, n in RESNET50_STAGES)
    assert added == 2_532_592
    assert resnet50_counts["cbam"] == 28_089_624 == RESNET50_PARAMS + added
    assert round(resnet50_counts["cbam"] / 1e6, 2) == 28.09


def test_eca_resnet50_adds_under_100_params(resnet50_counts):
    # psi(C) = odd number at/above |(log2 C + 1) / 2|: 5, 5, 5, 7 for 256, 512, 1024, 2048
    # channels; 3*5 + 4*5 + 6*5 + 3*7 = 86 parameters for the whole network.
    kernels = [adaptive_kernel_size(c) for c, _ in RESNET50_STAGES]
    assert kernels == [5, 5, 5, 7]
    assert [int(abs((math.log2(c) + 1) / 2)) for c, _ in RESNET50_STAGES] == [4, 5, 5, 6]  # t before "make odd"
    added = sum(n * k for (_, n), k in zip(RESNET50_STAGES, kernels))
    assert added == 86
    assert resnet50_counts["eca"] == RESNET50_PARAMS + 86 == 25_557_118
    model = build_model("resnet50", "eca")
    for stage, (channels, blocks) in enumerate(RESNET50_STAGES, start=1):
        for block in getattr(model, f"layer{stage}"):
            assert isinstance(block.se, EfficientChannelAttn)
            assert block.se.kernel_size == adaptive_kernel_size(channels)
            assert n_params(block.se) == block.se.kernel_size


def test_attention_modules_counts_only_attention():
    model = build_model("resnet18", "se")
    assert attn_params(model) == n_params(model) - n_params(build_model("resnet18", "none"))
    assert attn_params(model) == 2 * (se_params(64) + se_params(128) + se_params(256) + se_params(512))
    assert attention_modules(build_model("resnet18", "none")) == []


# -- placement semantics -------------------------------------------------------------------------

def test_attn_stages_places_only_in_chosen_stages():
    model = build_model("resnet50", "se", attn_stages=[2, 3, 4])
    for stage, (_, blocks) in enumerate(RESNET50_STAGES, start=1):
        layer = getattr(model, f"layer{stage}")
        assert len(layer) == blocks
        for block in layer:
            assert isinstance(block.se, SqueezeExcite if stage >= 2 else nn.Identity)
    placed = attention_modules(model)
    assert len(placed) == 4 + 6 + 3
    assert {s.stage for s in model.attn_bench_slots} == {2, 3, 4}


def test_attn_position_last_places_only_in_last_blocks():
    model = build_model("resnet50", "cbam", attn_position="last")
    for stage in range(1, 5):
        layer = getattr(model, f"layer{stage}")
        assert isinstance(layer[-1].se, CBAM)
        assert all(isinstance(block.se, nn.Identity) for block in layer[:-1])
    assert len(attention_modules(model)) == 4
    model = build_model("resnet50", "cbam", attn_stages=[3], attn_position="last")
    assert [s.path for s in model.attn_bench_slots] == ["layer3.5"]
    assert isinstance(model.layer3[5].se, CBAM)


def test_mobilenet_stages_follow_blocks():
    model = build_model("mobilenetv2_100", "eca", attn_stages=[1, 7])
    assert [s.path for s in model.attn_bench_slots] == ["blocks.0.0", "blocks.6.0"]
    assert isinstance(model.blocks[0][0].se, EfficientChannelAttn)
    assert isinstance(model.blocks[6][0].se, EfficientChannelAttn)
    assert sum(isinstance(m, EfficientChannelAttn) for m in model.modules()) == 2


def _timm_se_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, TimmSqueezeExcite)]


def test_none_removes_mobilenetv3_builtin_se():
    reference = timm.create_model("mobilenetv3_large_100", pretrained=False)
    n_with_se = n_params(reference)
    assert len(_timm_se_modules(reference)) == 8  # MobileNetV3-Large has SE in 8 of its 15 blocks
    for module in list(reference.modules()):
        if isinstance(getattr(module, "se", None), TimmSqueezeExcite):
            module.se = nn.Identity()
    assert _timm_se_modules(reference) == []
    assert n_params(reference) < n_with_se

    model = build_model("mobilenetv3_large_100", "none")
    assert _timm_se_modules(model) == []
    assert n_params(model) == n_params(reference)
    assert all(isinstance(model.get_submodule(s.path).se, nn.Identity) for s in find_slots(model))


def test_eca_on_mobilenetv3_replaces_every_se():
    model = build_model("mobilenetv3_large_100", "eca")
    slots = find_slots(model)
    assert len(slots) == 15
    assert _timm_se_modules(model) == []
    for slot in slots:
        se = model.get_submodule(slot.path).se
        assert isinstance(se, EfficientChannelAttn)
        assert se.kernel_size == adaptive_kernel_size(slot.channels)
    assert len(attention_modules(model)) == len(slots)


# -- small stem ----------------------------------------------------------------------------------

def _output_hw(model: nn.Module, module: nn.Module, hw: tuple[int, int]) -> tuple[int, int]:
    shapes = []
    handle = module.register_forward_hook(lambda m, args, out: shapes.append(out.shape[-2:]))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, *hw))
    handle.remove()
    return tuple(shapes[0])


def test_small_stem_resnet():
    model = build_model("resnet18", "se", 10, stem="small")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and model.conv1.padding == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert _output_hw(model, model.layer1, (32, 32)) == (32, 32)
    assert _output_hw(model, model.layer4, (32, 32)) == (4, 4)
    imagenet = build_model("resnet18", "se", 10)
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert _output_hw(imagenet, imagenet.layer1, (32, 32)) == (8, 8)


@pytest.mark.parametrize("backbone", ["mobilenetv2_100", "mobilenetv3_large_100"])
def test_small_stem_mobilenet(backbone):
    model = build_model(backbone, "none", 10, stem="small")
    assert model.conv_stem.stride == (1, 1)
    assert _output_hw(model, model.conv_stem, (32, 32)) == (32, 32)
    assert _output_hw(model, model.blocks[-1], (32, 32)) == (2, 2)
    imagenet = build_model(backbone, "none", 10)
    assert imagenet.conv_stem.stride == (2, 2)
    assert _output_hw(imagenet, imagenet.conv_stem, (32, 32)) == (16, 16)


# -- bad input: one-line ConfigErrors that say what would be valid -------------------------------

def _config_error(**kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        build_model(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_backbone_lists_choices():
    message = _config_error(backbone="resnet9")
    assert "resnet9" in message
    assert all(name in message for name in SUPPORTED_BACKBONES)


def test_unknown_block_lists_choices():
    message = _config_error(backbone="resnet18", attn="skn")
    assert "'skn'" in message
    assert all(name in message for name in list_blocks())


def test_unknown_stem_and_position_list_choices():
    assert "imagenet, small" in _config_error(backbone="resnet18", stem="cifar")
    assert "every, last" in _config_error(backbone="resnet18", attn="se", attn_position="first")


def test_missing_stage_names_stages_and_slots():
    message = _config_error(backbone="resnet18", attn="se", attn_stages=[9])
    assert "[9]" in message and "[1, 2, 3, 4]" in message
    for path in ("layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"):
        assert path in message


@pytest.mark.parametrize("attn, attn_args", [
    ("se", {}), ("cbam", {}), ("gc", {}), ("bam", {}), ("gam", {}),
    ("ca", {"min_rd_channels": 0}),  # CA's floor of 8 hidden channels would hide the bad ratio
])
def test_reduction_larger_than_channels(attn, attn_args):
    # resnet18 slots have 64..512 channels, so 1/1024 leaves 0 hidden channels everywhere
    message = _config_error(backbone="resnet18", attn=attn, attn_args={"rd_ratio": 1 / 1024, **attn_args})
    assert message.startswith(f"{attn}: ")
    assert "rd_ratio" in message and "hidden channels" in message


def test_ca_keeps_its_minimum_width_with_tiny_ratio():
    model = build_model("resnet18", "ca", attn_args={"rd_ratio": 1 / 1024})
    assert all(m.conv1.out_channels == 8 for m in attention_modules(model))


@pytest.mark.parametrize("kernel_size", [4, 0, -3])
def test_bad_eca_kernel(kernel_size):
    message = _config_error(backbone="resnet18", attn="eca", attn_args={"kernel_size": kernel_size})
    assert message.startswith("eca: kernel_size=")


def test_even_eca_kernel_says_odd():
    assert "odd" in _config_error(backbone="resnet18", attn="eca", attn_args={"kernel_size": 4})


@pytest.mark.parametrize("attn", list_blocks(include_baseline=False))
def test_unknown_block_argument_lists_valid_ones(attn):
    message = _config_error(backbone="resnet18", attn=attn, attn_args={"reduction": 16})
    assert "reduction" in message
    assert all(name in message for name in block_defaults(attn))


def test_none_takes_no_arguments():
    assert "none" in _config_error(backbone="resnet18", attn="none", attn_args={"rd_ratio": 0.25})


def test_bad_timm_kwargs():
    assert "timm_kwargs" in _config_error(backbone="resnet18", timm_kwargs={"not_an_arg": 1})


def test_small_stem_needs_single_conv_stem():
    assert "stem_type" in _config_error(backbone="resnet18", stem="small", timm_kwargs={"stem_type": "deep"})


@pytest.mark.parametrize("stages", [[], [2.5], ["2"], [True], 2, "234"])
def test_malformed_stages_are_config_errors(stages):
    # before the fix: [] silently placed no attention at all, [2.5] became stage 2, ["a"] / 2
    # raised a bare ValueError / TypeError
    message = _config_error(backbone="resnet18", attn="se", attn_stages=stages)
    assert "non-empty list of 1-based stage numbers" in message


def test_stages_and_position_are_checked_for_none_too():
    # the baseline of a sweep must fail on the same typo as its attention runs
    assert "[1, 2, 3, 4]" in _config_error(backbone="resnet18", attn="none", attn_stages=[9])
    assert "every, last" in _config_error(backbone="resnet18", attn="none", attn_position="first")
    model = build_model("resnet18", "none", attn_stages=[2, 3], attn_position="last")
    assert attention_modules(model) == []
    assert all(isinstance(model.get_submodule(s.path).se, nn.Identity) for s in find_slots(model))


def test_a_timm_argument_that_changes_nothing_is_an_error():
    import pytest

    from attn_bench.errors import ConfigError
    from attn_bench.metrics.complexity import count_params

    with pytest.raises(ConfigError, match="stem_width does nothing in timm's resnet18 unless stem_type is 'deep'"):
        build_model("resnet18", timm_kwargs={"channels": [16, 32, 64, 128], "stem_width": 16})
    plain = build_model("resnet18", timm_kwargs={"channels": [16, 32, 64, 128]})
    deep = build_model("resnet18", timm_kwargs={"channels": [16, 32, 64, 128], "stem_width": 16, "stem_type": "deep"})
    assert count_params(deep)["params"] != count_params(plain)["params"]  # with a deep stem it takes effect


def test_drop_path_rate_is_timms_stochastic_depth_and_a_named_key(compose_train):
    """model.drop_path_rate reaches timm: ResNet-18's DropPath rates rise linearly to it in the last block
    (the first block has none); in train mode two passes differ, in eval mode they are equal; bad values
    and a second spelling are one line."""
    import torch

    from attn_bench.errors import ConfigError
    from attn_bench.models import check, model_from_config

    cfg = compose_train(["model.drop_path_rate=0.1"])
    torch.manual_seed(0)
    model = model_from_config(cfg.model, 10, 32).model
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert len(rates) == 7 and rates == sorted(rates) and abs(rates[-1] - 0.1) < 1e-12
    rough = model_from_config(compose_train(["model.drop_path_rate=0.5"]).model, 10, 32).model
    for bn in (m for m in rough.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        torch.nn.init.ones_(bn.weight)  # timm zero-initialises each branch's last BN: nothing to drop at init
    x = torch.randn(16, 3, 32, 32)
    assert not torch.equal(rough.train()(x), rough(x)) and torch.equal(rough.eval()(x), rough(x))
    plain = model_from_config(compose_train([]).model, 10, 32).model
    assert not [m for m in plain.modules() if type(m).__name__ == "DropPath"]
    for bad, words in (("model.drop_path_rate=1.0", "must be a number in [0, 1)"),
                       ("+model.timm_kwargs.drop_path_rate=0.1", "not both")):
        overrides = [bad] + (["model.drop_path_rate=0.1"] if "timm_kwargs" in bad else [])
        with pytest.raises(ConfigError, match=re.escape(words)):
            check(compose_train(overrides).model, 10, 32)
