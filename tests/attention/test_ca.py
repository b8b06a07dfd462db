"""Coordinate Attention (Hou et al., CVPR 2021) against its definition and the official code."""
import pytest
import torch
import torch.nn.functional as F
from timm.layers.coord_attn import CoordAttn
from torch import nn

from attn_bench.attention.coord_attn import CoordAttention
from attn_bench.errors import ConfigError


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def randomise_bn(bn: nn.BatchNorm2d, gen: torch.Generator) -> None:
    c = bn.num_features
    bn.weight.data = torch.rand(c, generator=gen) + 0.5
    bn.bias.data = torch.randn(c, generator=gen)
    bn.running_mean = torch.randn(c, generator=gen)
    bn.running_var = torch.rand(c, generator=gen) + 0.5


@pytest.mark.parametrize("channels, mip", [(4, 8), (64, 8), (256, 8), (300, 9), (512, 16), (1024, 32)])
def test_hidden_width_is_max_8_c_div_32(channels, mip):
    ca = CoordAttention(channels)
    assert ca.conv1.out_channels == mip
    assert ca.conv_h.in_channels == ca.conv_w.in_channels == mip


@pytest.mark.parametrize("channels", [16, 64, 512, 1024])
def test_param_count(channels):
    # conv1 C->mip (+bias), BN(mip) weight+bias, conv_h and conv_w mip->C (+bias)
    mip = max(8, channels // 32)
    expected = (channels * mip + mip) + 2 * mip + 2 * (mip * channels + channels)
    assert n_params(CoordAttention(channels)) == expected


def test_rd_channels_overrides_ratio_and_minimum():
    assert CoordAttention(64, rd_channels=3).conv1.out_channels == 3
    assert CoordAttention(64, rd_ratio=1 / 4).conv1.out_channels == 16
    assert CoordAttention(64, rd_ratio=1 / 16, min_rd_channels=0).conv1.out_channels == 4


def hand_computed(ca: CoordAttention, x: torch.Tensor) -> torch.Tensor:
    """Paper Eqs. 4-9 written out with functional ops (eval-mode BN)."""
    n, c, h, w = x.shape
    z_h = x.mean(dim=3)  # (N, C, H)
    z_w = x.mean(dim=2)  # (N, C, W)
    z = torch.cat([z_h, z_w], dim=2)  # (N, C, H+W)
    f = torch.einsum("mc,ncl->nml", ca.conv1.weight[:, :, 0, 0], z) + ca.conv1.bias[None, :, None]
    bn = ca.bn1
    f = (f - bn.running_mean[None, :, None]) / torch.sqrt(bn.running_var[None, :, None] + bn.eps)
    f = f * bn.weight[None, :, None] + bn.bias[None, :, None]
    f = f * F.relu6(f + 3) / 6  # official h_swish
    f_h, f_w = f[:, :, :h], f[:, :, h:]
    a_h = torch.sigmoid(torch.einsum("cm,nml->ncl", ca.conv_h.weight[:, :, 0, 0], f_h) + ca.conv_h.bias[None, :, None])
    a_w = torch.sigmoid(torch.einsum("cm,nml->ncl", ca.conv_w.weight[:, :, 0, 0], f_w) + ca.conv_w.bias[None, :, None])
    return x * a_h[:, :, :, None] * a_w[:, :, None, :]


@pytest.mark.parametrize("hw", [(5, 5), (3, 7), (6, 2), (1, 4), (4, 1), (1, 1)])
def test_output_matches_definition_including_non_square(hw):
    gen = torch.Generator().manual_seed(0)
    ca = CoordAttention(16, rd_channels=6)
    randomise_bn(ca.bn1, gen)
    for conv in (ca.conv1, ca.conv_h, ca.conv_w):
        conv.bias.data = torch.randn(conv.bias.shape, generator=gen)
    ca.eval()
    x = torch.randn(2, 16, *hw, generator=gen)
    torch.testing.assert_close(ca(x), hand_computed(ca, x), rtol=1e-5, atol=1e-6)


def test_a_h_depends_only_on_row_and_a_w_only_on_column():
    torch.manual_seed(0)
    ca = CoordAttention(8, rd_channels=4).eval()
    h, w = 3, 5
    # every row has a different mean, every column has a different mean
    x = torch.arange(h)[:, None] * 10.0 + torch.arange(w)[None, :] * torch.tensor([1.0, -2.0, 3.0, 0.5, 4.0])[None, :]
    x = x.expand(1, 8, h, w) * torch.linspace(0.5, 2.0, 8)[None, :, None, None]
    a_h, a_w = ca.attention_maps(x)
    assert a_h.shape == (1, 8, h, 1) and a_w.shape == (1, 8, 1, w)
    # a_h(row) is a function of the row mean only: permuting columns leaves it unchanged
    # while a_w follows the permutation of the columns.
    perm = torch.tensor([4, 2, 0, 3, 1])
    a_h_p, a_w_p = ca.attention_maps(x[..., perm])
    torch.testing.assert_close(a_h_p, a_h)
    torch.testing.assert_close(a_w_p, a_w[..., perm])
    # and symmetrically for rows
    rperm = torch.tensor([2, 0, 1])
    a_h_r, a_w_r = ca.attention_maps(x[:, :, rperm])
    torch.testing.assert_close(a_h_r, a_h[:, :, rperm])
    torch.testing.assert_close(a_w_r, a_w)
    # rows with different means do get different weights (the test can fail)
    assert (a_h[0, :, 0] - a_h[0, :, 2]).abs().max() > 1e-3


def test_non_square_transposes_width_branch():
    """H != W: a_h must come from conv_h on row means, a_w from conv_w on column means."""
    ca = CoordAttention(1, rd_channels=1, act_layer="relu").eval()
    nn.init.ones_(ca.conv1.weight)
    nn.init.zeros_(ca.conv1.bias)
    ca.conv_h.weight.data.fill_(1.0)
    ca.conv_h.bias.data.fill_(0.0)
    ca.conv_w.weight.data.fill_(-1.0)
    ca.conv_w.bias.data.fill_(0.0)
    bn = ca.bn1
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[None, None]  # H=2, W=3
    scale = 1 / (1 + bn.eps) ** 0.5
    row_means = torch.tensor([2.0, 5.0]) * scale
    col_means = torch.tensor([2.5, 3.5, 4.5]) * scale
    expected = x * torch.sigmoid(row_means)[:, None] * torch.sigmoid(-col_means)[None, :]
    torch.testing.assert_close(ca(x), expected)


def test_default_activation_is_official_h_swish():
    ca = CoordAttention(8)
    t = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(ca.act(t), t * F.relu6(t + 3) / 6)
    torch.testing.assert_close(ca.gate(t), torch.sigmoid(t))


def test_init_follows_official_mbv2_ca():
    torch.manual_seed(0)
    ca = CoordAttention(1024)
    for conv in (ca.conv1, ca.conv_h, ca.conv_w):
        assert torch.all(conv.bias == 0)
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)
    assert torch.all(ca.bn1.weight == 1) and torch.all(ca.bn1.bias == 0)


def test_equals_timm_coordattn_with_official_settings():
    gen = torch.Generator().manual_seed(1)
    ours = CoordAttention(64)
    randomise_bn(ours.bn1, gen)
    for conv in (ours.conv1, ours.conv_h, ours.conv_w):
        conv.bias.data = torch.randn(conv.bias.shape, generator=gen)
    timm_ca = CoordAttn(64, rd_channels=8, bias=True, act_layer=nn.Hardswish)
    timm_ca.load_state_dict(ours.state_dict())
    ours.eval(), timm_ca.eval()
    x = torch.randn(2, 64, 5, 7, generator=gen)
    torch.testing.assert_close(ours(x), timm_ca(x))
    # timm's own defaults are a different block: no biases and a different width
    assert CoordAttn(512).conv1.out_channels != CoordAttention(512).conv1.out_channels


def test_batch_one_eval():
    ca = CoordAttention(32).eval()
    assert ca(torch.randn(1, 32, 3, 4)).shape == (1, 32, 3, 4)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"rd_ratio": 0.0}, "rd_ratio"),
        ({"rd_ratio": 1.5}, "rd_ratio"),
        ({"rd_channels": 0}, "rd_channels"),
        ({"min_rd_channels": -1}, "min_rd_channels"),
        ({"rd_ratio": 1 / 32, "min_rd_channels": 0}, "rd_ratio"),  # 16 // 32 == 0 hidden channels
        ({"rd_ratio": None}, "rd_ratio"),
        ({"rd_channels": 2.5}, "rd_channels"),
        ({"min_rd_channels": 2.5}, "min_rd_channels"),
        ({"act_layer": "bogus"}, "act_layer"),  # used to escape as KeyError
        ({"gate_layer": "bogus"}, "gate_layer"),
    ],
)
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ConfigError, match=rf"ca: .*{arg}="):
        CoordAttention(16, **kwargs)


def test_invalid_channels():
    with pytest.raises(ConfigError, match="channels=0"):
        CoordAttention(0)
