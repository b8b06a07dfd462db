"""eSE ('ese') against youngwanLEE/vovnet-detectron2's eSEModule, by hand."""
import pytest
import torch
import torch.nn.functional as F
from timm.layers import EffectiveSEModule

from conftest import slot_sees

from attn_bench.attention import block_defaults, create_block
from attn_bench.attention.effective_se import EffectiveSE
from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_one_full_width_fc_with_bias_and_a_hard_sigmoid_gate():
    assert block_defaults("ese") == {"gate_layer": "hard_sigmoid"}
    ese = EffectiveSE(64)
    assert isinstance(ese, EffectiveSEModule) and n_params(ese) == 64 * 64 + 64
    x = torch.randn(2, 64, 5, 7)
    z = F.conv2d(x.mean((2, 3), keepdim=True), ese.fc.weight, ese.fc.bias)
    torch.testing.assert_close(ese(x), x * F.relu6(z + 3) / 6)  # the official Hsigmoid


def test_the_fc_starts_as_the_official_kaiming_normal_fan_in():
    torch.manual_seed(0)
    weight = EffectiveSE(1024).fc.weight
    assert weight.std().item() == pytest.approx((2 / 1024) ** 0.5, rel=0.02)  # gain sqrt(2), fan-in 1024
    assert abs(weight.mean().item()) < 1e-3


def test_arguments_timm_would_swallow_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="add_maxpool"):
        create_block("ese", 64, add_maxpool=True)  # timm's experimental path, not the paper's
    with pytest.raises(ConfigError, match="rd_ratio"):
        create_block("ese", 64, rd_ratio=0.25)  # eSE has no reduction
    with pytest.raises(ConfigError, match="^ese: gate_layer='nope' is not a known activation"):
        EffectiveSE(64, gate_layer="nope")


def test_in_every_bottleneck_of_resnet50_after_bn3():
    with torch.device("meta"):
        model = build_model("resnet50", "ese", 1000, placement="paper")
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert n_params(model) == 25_557_032 + sum(c * c + c for c in widths) == 45_691_688
    model, placement = build_placed("resnet18", "ese", 10, placement="paper")
    assert (placement["site"], placement["stages"]) == ("residual", "all")
    assert slot_sees(model, "layer2.1", "bn2") == (EffectiveSE, True)
