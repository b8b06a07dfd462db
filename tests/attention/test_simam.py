"""SimAM ('simam') against the paper / official simam_module.py formula, by hand."""
import math

import pytest
import torch

from attn_bench.attention import block_defaults, create_block
from attn_bench.attention.simam import SimAM
from attn_bench.errors import ConfigError


def sig(v):
    return 1 / (1 + math.exp(-v))


def simam_by_hand(values, e_lambda):
    """One channel as a flat list: n = len - 1, y = d / (4 (sum d / n + lambda)) + 0.5, out = x sigmoid(y)."""
    mu = sum(values) / len(values)
    d = [(v - mu) ** 2 for v in values]
    var = sum(d) / (len(values) - 1)
    return [v * sig(di / (4 * (var + e_lambda)) + 0.5) for v, di in zip(values, d)]


def test_defaults_and_no_parameters():
    assert block_defaults("simam") == {"e_lambda": 1e-4}
    block = create_block("simam", 256)
    assert isinstance(block, SimAM)
    assert sum(p.numel() for p in block.parameters()) == 0
    assert list(block.buffers()) == []


def test_hand_computed_values():
    # channel 0: mu 2.5, d = [2.25, 0.25, 0.25, 2.25], var = 5 / 3 (n = 3, not 4)
    ch0 = [1.0, 2.0, 3.0, 4.0]
    ch1 = [0.0, 0.0, 0.0, 8.0]
    expected0 = simam_by_hand(ch0, 1e-4)
    denom = 4 * (5 / 3 + 1e-4)
    assert expected0 == pytest.approx([1 * sig(2.25 / denom + 0.5), 2 * sig(0.25 / denom + 0.5),
                                       3 * sig(0.25 / denom + 0.5), 4 * sig(2.25 / denom + 0.5)])
    assert expected0[0] == pytest.approx(0.69793, abs=1e-5)  # sigmoid(0.5 + 2.25 / 6.6671)
    x = torch.tensor([ch0, ch1]).view(1, 2, 2, 2)
    expected = torch.tensor([expected0, simam_by_hand(ch1, 1e-4)]).view(1, 2, 2, 2)
    torch.testing.assert_close(SimAM(2)(x), expected, rtol=0, atol=1e-6)


def test_lambda_is_used():
    vals = [0.5, -1.0, 2.0, 0.0, 1.5, -0.5]
    x = torch.tensor(vals).view(1, 1, 2, 3)
    for lam in (1e-4, 0.1, 10.0):
        expected = torch.tensor(simam_by_hand(vals, lam)).view(1, 1, 2, 3)
        torch.testing.assert_close(SimAM(1, e_lambda=lam)(x), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(SimAM(1, e_lambda=0.1)(x), SimAM(1)(x))


def test_statistics_are_per_sample_and_channel():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 2)
    out = SimAM(4)(x)
    for n in range(3):
        for c in range(4):
            expected = torch.tensor(simam_by_hand(x[n, c].flatten().tolist(), 1e-4)).view(5, 2)
            torch.testing.assert_close(out[n, c], expected)


def test_single_position_gives_constant_scale_not_nan():
    # H*W == 1: official code divides by n = 0 -> 0/0 = NaN. We clamp n to 1: y = 0.5.
    x = torch.tensor([[1.0, -2.0, 3.0]]).view(1, 3, 1, 1)
    d = (x - x.mean((2, 3), keepdim=True)) ** 2
    official = x * torch.sigmoid(d / (4 * (d.sum((2, 3), keepdim=True) / 0 + 1e-4)) + 0.5)
    assert torch.isnan(official).all()
    out = SimAM(3)(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, x * sig(0.5), rtol=0, atol=0)


def test_constant_map_and_two_positions():
    x = torch.full((1, 2, 3, 3), 7.0)
    torch.testing.assert_close(SimAM(2)(x), x * sig(0.5))
    x = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)  # n = 1: var = 2, d = [1, 1]
    expected = torch.tensor([v * sig(1 / (4 * (2 + 1e-4)) + 0.5) for v in (1.0, 3.0)]).view(1, 1, 1, 2)
    torch.testing.assert_close(SimAM(1)(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs, arg", [
    ({"channels": 8, "e_lambda": 0.0}, "e_lambda"),
    ({"channels": 8, "e_lambda": -1e-4}, "e_lambda"),
    ({"channels": 8, "e_lambda": "small"}, "e_lambda"),
    ({"channels": 0}, "channels"),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ConfigError, match=rf"^simam: {arg}="):
        SimAM(**kwargs)
