"""SqueezeExcite ('se') against the SE-Net paper, hand computations and timm."""
import math

import pytest
import torch
from timm.layers import SEModule

from attn_bench.attention import block_defaults, create_block
from attn_bench.attention.squeeze_excite import SqueezeExcite
from attn_bench.errors import ConfigError


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def se_params(c, r=16):
    """Paper: two FC layers C -> C/r -> C, each with a bias."""
    h = c // r
    return 2 * c * h + h + c


def test_defaults_are_plain_values():
    assert block_defaults("se") == {
        "rd_ratio": 1 / 16, "rd_channels": None, "rd_divisor": 1, "act_layer": "relu", "gate_layer": "sigmoid",
    }
    assert isinstance(create_block("se", 64), SqueezeExcite)


@pytest.mark.parametrize("channels, expected", [(64, 580), (256, 8464), (512, 33312), (1024, 132160), (2048, 526464)])
def test_param_count_matches_formula(channels, expected):
    assert se_params(channels) == expected
    assert n_params(SqueezeExcite(channels)) == expected


def test_se_resnet50_total_matches_paper():
    # SE-ResNet-50: (blocks per stage, output channels of the bottleneck).
    stages = [(3, 256), (4, 512), (6, 1024), (3, 2048)]
    total = sum(n * n_params(SqueezeExcite(c)) for n, c in stages)
    weights_only = sum(n * (n_params(SqueezeExcite(c)) - c // 16 - c) for n, c in stages)
    # Paper Eq. (5): (2 / r) * sum_s N_s * C_s^2 ~ 2.5M extra weights (biases ignored there).
    assert weights_only == 2 * sum(n * c * c for n, c in stages) // 16 == 2_514_944
    assert total == 2_530_992


@pytest.mark.parametrize("kwargs, hidden", [
    ({}, 4),                                 # floor(64 / 16)
    ({"rd_ratio": 0.25}, 16),
    ({"rd_ratio": 1 / 3}, 21),               # floor(21.33)
    ({"rd_divisor": 8}, 8),                  # timm / MobileNetV3 rounding, never below the divisor
    ({"rd_channels": 5}, 5),
])
def test_hidden_width(kwargs, hidden):
    assert SqueezeExcite(64, **kwargs).fc1.out_channels == hidden


def _hand_weights(se, fc2_w):
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([0.5, -1.0]).view(1, 2, 1, 1))
        se.fc1.bias.fill_(0.25)
        se.fc2.weight.copy_(torch.tensor(fc2_w).view(2, 1, 1, 1))
        se.fc2.bias.copy_(torch.tensor([0.0, 0.5]))


def _input():
    x = torch.zeros(2, 2, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])   # mean 2.5
    x[0, 1] = torch.tensor([[0.0, 0.0], [0.0, -2.0]])  # mean -0.5
    x[1, 0] = -1.0
    x[1, 1] = 1.0
    return x


def test_sigmoid_gate_hand_computed():
    se = SqueezeExcite(2, rd_channels=1)
    _hand_weights(se, [1.0, -0.5])
    x = _input()
    # sample 0: fc1 = 0.5*2.5 - 1*(-0.5) + 0.25 = 2.0 -> relu 2.0 -> fc2 = [2.0, -0.5]
    # sample 1: fc1 = -0.5 - 1 + 0.25 = -1.25 -> relu 0 -> fc2 = biases [0, 0.5]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    gates = torch.tensor([[sig(2.0), sig(-0.5)], [0.5, sig(0.5)]])
    assert gates[0, 0].item() == pytest.approx(0.8807970779778823)
    expected = x * gates.view(2, 2, 1, 1)
    torch.testing.assert_close(se(x), expected, rtol=0, atol=1e-6)


def test_hard_sigmoid_gate_hand_computed():
    se = SqueezeExcite(2, rd_channels=1, gate_layer="hard_sigmoid")
    _hand_weights(se, [2.0, -0.5])
    x = _input()
    # logits: sample 0 -> [4.0, -0.5], sample 1 -> [0.0, 0.5]; gate = relu6(v + 3) / 6
    hard = lambda v: min(max(v + 3, 0.0), 6.0) / 6  # noqa: E731
    gate_values = [[hard(4.0), hard(-0.5)], [hard(0.0), hard(0.5)]]
    assert gate_values == [[1.0, 2.5 / 6], [0.5, 3.5 / 6]]  # 4.0 saturates at 1
    gates = torch.tensor(gate_values)
    torch.testing.assert_close(se(x), x * gates.view(2, 2, 1, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("ours_kwargs, timm_kwargs", [
    ({"rd_divisor": 8}, {}),                       # timm's default rounding
    ({}, {"rd_divisor": 1}),                       # paper width 64 // 16 = 4
    ({"gate_layer": "hard_sigmoid", "rd_ratio": 0.25, "rd_divisor": 8},
     {"gate_layer": "hard_sigmoid", "rd_ratio": 0.25}),
])
def test_equivalent_to_timm(ours_kwargs, timm_kwargs):
    torch.manual_seed(0)
    ours, ref = SqueezeExcite(64, **ours_kwargs), SEModule(64, **timm_kwargs)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 64, 5, 3)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, arg", [
    ({"channels": 8}, "rd_ratio"),                 # 8 / 16 -> 0 hidden channels
    ({"channels": 64, "rd_ratio": 0.0}, "rd_ratio"),
    ({"channels": 64, "rd_ratio": -0.5}, "rd_ratio"),
    ({"channels": 64, "rd_channels": 0}, "rd_channels"),
    ({"channels": 64, "rd_divisor": 0}, "rd_divisor"),
    ({"channels": 64, "act_layer": "bogus"}, "act_layer"),
    ({"channels": 64, "gate_layer": "nope"}, "gate_layer"),
    ({"channels": 0}, "channels"),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ConfigError, match=rf"^se: {arg}="):
        SqueezeExcite(**kwargs)
