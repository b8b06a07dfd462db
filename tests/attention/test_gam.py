"""GAM (Liu, Shao, Hoffmann 2021, arXiv:2112.05561) against the paper's definition."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attn_bench.attention.gam as gam_module
from attn_bench.attention.gam import GAM, channel_shuffle
from attn_bench.errors import ConfigError
from attn_bench.models.build import build_model


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def gam_params(c: int, r: int, g: int = 1) -> int:
    cr = c // r
    mlp = (c * cr + cr) + (cr * c + c)  # two Linear layers with bias
    convs = 2 * 49 * c * cr // g  # two 7x7 convs, no bias (followed by BN)
    bns = 2 * cr + 2 * c
    return mlp + convs + bns


@pytest.mark.parametrize("channels", [16, 64, 256])
def test_param_count_default(channels):
    assert n_params(GAM(channels)) == gam_params(channels, 4)


@pytest.mark.parametrize("channels, groups", [(64, 4), (256, 4), (64, 2), (32, 8)])
def test_param_count_grouped(channels, groups):
    assert n_params(GAM(channels, group=True, groups=groups)) == gam_params(channels, 4, groups)


RESNET50_SLOTS = [(3, 256), (4, 512), (6, 1024), (3, 2048)]  # bottlenecks per stage, output width
RESNET50_100_CLASSES = 25_557_032 - 2048 * 900 - 900  # torchvision/timm count with a 100-way head


@pytest.mark.parametrize("r, g, extra, total_100", [
    (4, 1, 503_045_440, 526_758_372),
    (4, 4, 133_348_672, 157_061_604),
    (16, 1, 125_795_344, 149_508_276),
    (16, 4, 33_371_152, 57_084_084),
])
def test_resnet50_with_gam_in_every_bottleneck(r, g, extra, total_100):
    """The built network has the count of the formula (and of the module docstring).

    Built on the meta device: the count is exact without allocating the 2 GB of weights.
    """
    assert sum(n * gam_params(c, r, g) for n, c in RESNET50_SLOTS) == extra
    with torch.device("meta"):
        model = build_model("resnet50", "gam", 100, placement="uniform",
                            attn_args={"rd_ratio": 1 / r, "group": g > 1, "groups": g})
    assert n_params(model) == RESNET50_100_CLASSES + extra == total_100
    assert f"{extra / 1e6:.1f}M" in gam_module.__doc__ and f"{total_100 / 1e6:.1f}M" in gam_module.__doc__


def test_rd_channels_overrides_ratio():
    m = GAM(64, rd_channels=5)
    assert m.fc1.out_features == 5 and m.conv1.out_channels == 5
    assert GAM(64, rd_ratio=1 / 16).fc1.out_features == 4


def bn_eval(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    s = lambda t: t[None, :, None, None]  # noqa: E731
    return (x - s(bn.running_mean)) / torch.sqrt(s(bn.running_var) + bn.eps) * s(bn.weight) + s(bn.bias)


def hand_computed(m: GAM, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 and Eq. 2 with plain ops (eval-mode BN, zero padding); returns (Mc, out)."""
    # MLP applied to the channel vector of every pixel
    y = torch.einsum("kc,nchw->nkhw", m.fc1.weight, x) + m.fc1.bias[None, :, None, None]
    y = torch.einsum("ck,nkhw->nchw", m.fc2.weight, y.relu()) + m.fc2.bias[None, :, None, None]
    mc = torch.sigmoid(y)
    x1 = x * mc
    s = F.conv2d(F.pad(x1, (3, 3, 3, 3)), m.conv1.weight, groups=m.groups)
    s = bn_eval(s, m.bn1).relu()
    if m.groups > 1:
        s = channel_shuffle(s, m.groups)
    s = F.conv2d(F.pad(s, (3, 3, 3, 3)), m.conv2.weight, groups=m.groups)
    ms = torch.sigmoid(bn_eval(s, m.bn2))
    return mc, x1 * ms


def randomise_bns(m: GAM, gen: torch.Generator) -> None:
    for bn in (m.bn1, m.bn2):
        c = bn.num_features
        bn.weight.data = torch.rand(c, generator=gen) + 0.5
        bn.bias.data = torch.randn(c, generator=gen) * 0.3
        bn.running_mean = torch.randn(c, generator=gen) * 0.1
        bn.running_var = torch.rand(c, generator=gen) + 0.5


@pytest.mark.parametrize("group", [False, True])
@pytest.mark.parametrize("hw", [(6, 6), (4, 9), (1, 5), (1, 1)])
def test_output_matches_definition(group, hw):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = GAM(16, group=group, groups=2)
    randomise_bns(m, gen)
    m.eval()
    x = torch.randn(2, 16, *hw, generator=gen)
    _, expected = hand_computed(m, x)
    torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-6)


def test_channel_gate_is_a_sigmoid():
    torch.manual_seed(0)
    m = GAM(8).eval()
    x = torch.randn(2, 8, 3, 5) * 5
    mc = m.channel_attention(x)
    assert torch.all(mc > 0) and torch.all(mc < 1)
    expected_mc, _ = hand_computed(m, x)
    torch.testing.assert_close(mc, expected_mc)
    # the gate is per pixel (no pooling): different pixels get different channel weights
    assert (mc[:, :, 0, 0] - mc[:, :, 1, 1]).abs().max() > 1e-3


def test_channel_gate_by_hand_weights():
    m = GAM(4, rd_channels=1).eval()
    with torch.no_grad():
        m.fc1.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
        m.fc1.bias.zero_()
        m.fc2.weight.copy_(torch.tensor([[1.0], [-1.0], [2.0], [0.0]]))
        m.fc2.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.5]))
    x = torch.zeros(1, 4, 1, 2)
    x[0, :, 0, 0] = torch.tensor([1.0, 2.0, 0.0, 0.0])  # hidden = relu(3) = 3
    x[0, :, 0, 1] = torch.tensor([-1.0, -2.0, 0.0, 0.0])  # hidden = relu(-3) = 0
    mc = m.channel_attention(x)
    torch.testing.assert_close(mc[0, :, 0, 0], torch.sigmoid(torch.tensor([3.0, -3.0, 6.0, 0.5])))
    torch.testing.assert_close(mc[0, :, 0, 1], torch.sigmoid(torch.tensor([0.0, 0.0, 0.0, 0.5])))


def test_spatial_convs_zero_pad():
    """All-ones kernels on a constant map: replicate padding would give a constant output."""
    m = GAM(4, rd_channels=1, act_layer="relu").eval()
    with torch.no_grad():
        for fc in (m.fc1, m.fc2):
            fc.weight.zero_()
            fc.bias.zero_()  # Mc = sigmoid(0) = 1/2 everywhere
        m.conv1.weight.fill_(0.01)
        m.conv2.weight.fill_(0.01)
    x = torch.ones(1, 4, 5, 5)
    k = 1 / (1 + m.bn1.eps) ** 0.5  # eval BN with running stats (0, 1)
    # conv1 on x1 = 0.5: value = 0.01 * 4 channels * 0.5 * (#rows in window) * (#cols in window)
    counts = torch.tensor([4.0, 5.0, 5.0, 5.0, 4.0])  # in-bounds offsets of a 7-window on 5 pixels
    s1 = 0.01 * 4 * 0.5 * counts[:, None] * counts[None, :] * k
    # conv2 sums s1 over the in-bounds part of each 7x7 window (zeros outside the map)
    s2 = torch.zeros(5, 5)
    for i in range(5):
        for j in range(5):
            window = s1[max(0, i - 3) : i + 4, max(0, j - 3) : j + 4]
            s2[i, j] = 0.01 * window.sum() * k
    expected = 0.5 * torch.sigmoid(s2)
    torch.testing.assert_close(m(x)[0, 0], expected)
    # and conv1's map itself is non-uniform at the border (replicate padding would make it flat)
    y1 = m.bn1(m.conv1(0.5 * x))[0, 0]
    torch.testing.assert_close(y1, s1)
    assert y1[0, 0] < y1[2, 2]
    replicate = F.conv2d(F.pad(0.5 * x, (3, 3, 3, 3), mode="replicate"), m.conv1.weight) * k
    assert not torch.allclose(y1, replicate[0, 0])


def test_channel_shuffle_permutation():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    torch.testing.assert_close(channel_shuffle(x, 2).flatten(), torch.tensor([0.0, 3, 1, 4, 2, 5]))
    torch.testing.assert_close(channel_shuffle(x, 3).flatten(), torch.tensor([0.0, 2, 4, 1, 3, 5]))
    x = torch.arange(8.0).view(1, 8, 1, 1).expand(2, 8, 2, 3)
    out = channel_shuffle(x, 4)
    torch.testing.assert_close(out[1, :, 1, 2], torch.tensor([0.0, 2, 4, 6, 1, 3, 5, 7]))


def test_grouped_shuffle_mixes_groups():
    """With the shuffle between the convs, every output channel depends on every input group.

    (Needs hidden / groups >= groups: 64 channels, r=4, 4 groups -> 4 hidden channels per group.)
    """
    torch.manual_seed(0)
    m = GAM(64, group=True, groups=4).eval()
    x = torch.randn(1, 64, 5, 5, requires_grad=True)
    ms = m.spatial_attention(x)
    for out_channel in (0, 7, 15):
        (grad,) = torch.autograd.grad(ms[0, out_channel, 2, 2], x, retain_graph=True)
        per_group = grad.abs().view(4, 16, 5, 5).sum(dim=(1, 2, 3))
        assert torch.all(per_group > 0)
    # without the shuffle, an output channel would only see its own input group
    m.groups = 1
    ms = m.spatial_attention(x)
    (grad,) = torch.autograd.grad(ms[0, 0, 2, 2], x)
    per_group = grad.abs().view(4, 16, 5, 5).sum(dim=(1, 2, 3))
    assert per_group[0] > 0 and torch.all(per_group[1:] == 0)


def test_grouped_conv_shapes():
    m = GAM(64, group=True)
    assert m.conv1.groups == m.conv2.groups == 4
    assert GAM(64).conv1.groups == 1


def test_batch_one_eval():
    m = GAM(32).eval()
    assert m(torch.randn(1, 32, 3, 7)).shape == (1, 32, 3, 7)


@pytest.mark.parametrize(
    "channels, kwargs, arg",
    [
        (3, {}, "rd_ratio"),  # 3 // 4 = 0 hidden channels
        (64, {"rd_ratio": 0.0}, "rd_ratio"),
        (64, {"rd_ratio": 2.0}, "rd_ratio"),
        (64, {"rd_channels": 0}, "rd_channels"),
        (64, {"group": True, "groups": 0}, "groups"),
        (64, {"group": True, "groups": 3}, "groups"),  # does not divide 64
        (24, {"group": True, "groups": 4}, "groups"),  # divides 24 but not 24 // 4 = 6
        (64, {"group": True, "groups": 2.5}, "groups"),  # used to be truncated silently to 2
        (64, {"group": 1}, "group"),
        (64, {"rd_ratio": "x"}, "rd_ratio"),
        (64, {"rd_channels": 2.5}, "rd_channels"),
        (64, {"act_layer": "bogus"}, "act_layer"),  # used to escape as KeyError
        (64, {"gate_layer": "bogus"}, "gate_layer"),
        (True, {}, "channels"),
        (0, {}, "channels"),
    ],
)
def test_invalid_arguments(channels, kwargs, arg):
    with pytest.raises(ConfigError, match=rf"gam: {arg}="):
        GAM(channels, **kwargs)
