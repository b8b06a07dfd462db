"""Triplet Attention (Misra et al., WACV 2021) against its definition and the official code."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_bench.attention.triplet import TripletAttention, z_pool
from attn_bench.errors import ConfigError


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("channels", [1, 64, 2048])
def test_param_count_is_independent_of_channels(channels):
    # per branch: conv 2 -> 1, k x k, no bias (2 * k * k) + BN weight and bias (2)
    assert n_params(TripletAttention(channels)) == 3 * (2 * 7 * 7 + 2) == 300
    assert n_params(TripletAttention(channels, no_spatial=True)) == 2 * (2 * 49 + 2) == 200
    assert n_params(TripletAttention(channels, kernel_size=3)) == 3 * (2 * 9 + 2)


def test_z_pool_is_max_then_mean():
    x = torch.tensor([1.0, 5.0, 3.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(z_pool(x).flatten(), torch.tensor([5.0, 3.0]))


def bn_eval(t, bn):
    return (t - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def branch_by_hand(gate, x, pool_dim):
    """Pool over ``pool_dim`` of (N, C, H, W) and convolve the remaining 2-D plane, no rotation."""
    zp = torch.stack([x.amax(dim=pool_dim), x.mean(dim=pool_dim)], dim=1)  # (N, 2, A, B)
    k = gate.conv.kernel_size[0]
    s = torch.sigmoid(bn_eval(F.conv2d(zp, gate.conv.weight, padding=k // 2), gate.bn))  # (N, 1, A, B)
    return x * s[:, 0].unsqueeze(pool_dim)  # (N, A, B) -> put the pooled axis back as size 1


def randomise(m, gen):
    for gate in (m.cw, m.hc, m.hw):
        if gate is None:
            continue
        gate.conv.weight.data = torch.randn(gate.conv.weight.shape, generator=gen)
        gate.bn.weight.data = torch.rand(1, generator=gen) + 0.5
        gate.bn.bias.data = torch.randn(1, generator=gen)
        gate.bn.running_mean = torch.randn(1, generator=gen)
        gate.bn.running_var = torch.rand(1, generator=gen) + 0.5


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 5, 5), (2, 3, 4, 6), (1, 8, 7, 2), (2, 4, 1, 3), (1, 1, 1, 1)])
def test_output_matches_definition(no_spatial, shape):
    gen = torch.Generator().manual_seed(0)
    m = TripletAttention(shape[1], no_spatial=no_spatial)
    randomise(m, gen)
    m.eval()
    x = torch.randn(*shape, generator=gen)
    # cw: pool over H, attention map over (C, W); hc: pool over W, map over (C, H) -- the official
    # conv sees that plane as (H, C), i.e. transposed, so transpose its kernel for the (C, H) layout
    cw = branch_by_hand(m.cw, x, pool_dim=2)
    hc_gate = nn.Module()
    hc_gate.conv = nn.Conv2d(2, 1, 7, bias=False)
    hc_gate.conv.weight.data = m.hc.conv.weight.transpose(2, 3)
    hc_gate.bn = m.hc.bn
    hc = branch_by_hand(hc_gate, x, pool_dim=3)
    if no_spatial:
        expected = (cw + hc) / 2
    else:
        expected = (cw + hc + branch_by_hand(m.hw, x, pool_dim=1)) / 3
    out = m(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_cw_branch_rotation_by_hand():
    """One branch, every number by hand: 1x1-centre kernel so the map is a*max_h + b*mean_h."""
    m = TripletAttention(2, kernel_size=3).eval()
    a, b = 0.5, -1.0
    with torch.no_grad():
        m.cw.conv.weight.zero_()
        m.cw.conv.weight[0, 0, 1, 1] = a  # acts on max over H
        m.cw.conv.weight[0, 1, 1, 1] = b  # acts on mean over H
        m.cw.bn.weight.fill_(1.0)
    x = torch.tensor(
        [
            [[1.0, 2.0, 0.0], [3.0, -1.0, 4.0]],  # channel 0, H=2, W=3
            [[0.0, 0.0, 6.0], [2.0, 2.0, -2.0]],  # channel 1
        ]
    )[None]
    # cw branch: for each channel c and column w, s = a * max_h x[c, :, w] + b * mean_h x[c, :, w]
    mx = torch.tensor([[3.0, 2.0, 4.0], [2.0, 2.0, 6.0]])
    mean = torch.tensor([[2.0, 0.5, 2.0], [1.0, 1.0, 2.0]])
    scale = torch.sigmoid((a * mx + b * mean) / (1 + m.cw.bn.eps) ** 0.5)  # (C, W)
    expected = x * scale[None, :, None, :]
    out = m.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
    torch.testing.assert_close(out, expected)


def test_non_square_shapes():
    m = TripletAttention(6).eval()
    for shape in [(2, 6, 3, 11), (1, 6, 9, 2), (1, 6, 1, 5), (1, 6, 4, 1)]:
        assert m(torch.randn(*shape)).shape == shape


def test_init_follows_official_resnet():
    torch.manual_seed(0)
    m = TripletAttention(64)
    assert torch.all(m.cw.bn.weight == 1) and torch.all(m.hc.bn.weight == 1)
    assert torch.all(m.hw.bn.weight == 0)
    for gate in (m.cw, m.hc, m.hw):
        assert torch.all(gate.bn.bias == 0)
        assert gate.bn.momentum == 0.01 and gate.bn.eps == 1e-5
        assert gate.conv.bias is None
    # the spatial branch starts as the constant gate 1/2
    m.eval()
    x = torch.randn(2, 64, 4, 5)
    torch.testing.assert_close(m.hw(x), x / 2)


def test_batch_one_eval():
    m = TripletAttention(16).eval()
    assert m(torch.randn(1, 16, 3, 3)).shape == (1, 16, 3, 3)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"kernel_size": 4}, "kernel_size"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": -3}, "kernel_size"),
        ({"kernel_size": 3.0}, "kernel_size"),  # used to escape as TypeError
        ({"no_spatial": "yes"}, "no_spatial"),
        ({"gate_layer": "bogus"}, "gate_layer"),  # used to escape as KeyError
    ],
)
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ConfigError, match=rf"triplet: {arg}="):
        TripletAttention(16, **kwargs)


def test_invalid_channels():
    with pytest.raises(ConfigError, match="triplet: channels=0"):
        TripletAttention(0)
