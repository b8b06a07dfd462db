"""BAM (Park et al., BMVC 2018) against its definition and the official Jongchan/attention-module code."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_bench.attention.bam import BAM
from attn_bench.errors import ConfigError


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def bam_params(c: int, r: int = 16) -> int:
    cr = c // r
    channel = (c * cr + cr) + 2 * cr + (cr * c + c)  # Linear, BatchNorm1d, Linear
    reduce = (c * cr + cr) + 2 * cr  # 1x1 conv + BN
    dilated = 2 * ((9 * cr * cr + cr) + 2 * cr)  # two 3x3 convs + BN
    final = cr + 1  # 1x1 conv C/r -> 1
    return channel + reduce + dilated + final


@pytest.mark.parametrize("channels", [16, 64, 256, 2048])
def test_param_count(channels):
    assert n_params(BAM(channels)) == bam_params(channels)


def test_rd_channels_overrides_ratio():
    m = BAM(64, rd_channels=3)
    assert m.channel_att.fc1.out_features == 3 and m.spatial_att.final.in_channels == 3
    assert BAM(64, rd_ratio=1 / 4).channel_att.fc1.out_features == 16


def bn_eval(x, bn):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    v = lambda t: t.view(shape)  # noqa: E731
    return (x - v(bn.running_mean)) / torch.sqrt(v(bn.running_var) + bn.eps) * v(bn.weight) + v(bn.bias)


def hand_computed(m: BAM, x: torch.Tensor, combine: str = "sum") -> torch.Tensor:
    """Eqs. 1-4 with plain ops, eval-mode BN."""
    cg, sg = m.channel_att, m.spatial_att
    z = x.mean(dim=(2, 3))
    mc = F.linear(bn_eval(F.linear(z, cg.fc1.weight, cg.fc1.bias), cg.bn).relu(), cg.fc2.weight, cg.fc2.bias)
    conv, bn = sg.reduce[0], sg.reduce[1]
    s = bn_eval(F.conv2d(x, conv.weight, conv.bias), bn).relu()
    for block in sg.dilated:
        conv, bn = block[0], block[1]
        s = bn_eval(F.conv2d(s, conv.weight, conv.bias, padding=4, dilation=4), bn).relu()
    ms = F.conv2d(s, sg.final.weight, sg.final.bias)  # (N, 1, H, W)
    mc = mc[:, :, None, None]
    logits = mc + ms if combine == "sum" else mc * ms
    return x * (1 + torch.sigmoid(logits))


def randomise(m: BAM, gen: torch.Generator) -> None:
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = mod.num_features
            mod.weight.data = torch.rand(c, generator=gen) + 0.5
            mod.bias.data = torch.randn(c, generator=gen) * 0.3
            mod.running_mean = torch.randn(c, generator=gen) * 0.1
            mod.running_var = torch.rand(c, generator=gen) + 0.5
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            mod.bias.data = torch.randn(mod.bias.shape, generator=gen) * 0.3


@pytest.mark.parametrize("combine", ["sum", "product"])
@pytest.mark.parametrize("hw", [(6, 6), (3, 8), (9, 2), (1, 1)])
def test_output_matches_definition(combine, hw):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = BAM(32, combine=combine)
    randomise(m, gen)
    m.eval()
    x = torch.randn(2, 32, *hw, generator=gen)
    torch.testing.assert_close(m(x), hand_computed(m, x, combine), rtol=1e-5, atol=1e-6)


def test_attention_is_one_plus_sigmoid_of_sum_by_hand():
    """Hand-set weights: Mc = per-channel constant, Ms = per-pixel constant; check 1 + sigmoid(Mc + Ms)."""
    m = BAM(2, rd_channels=1).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.channel_att.fc2.bias.copy_(torch.tensor([1.0, -2.0]))  # Mc = (1, -2) whatever x is
        # spatial: reduce conv passes channel 0 through, BN weight 1 / bias 0, dilated convs are
        # identity (centre tap 1), final conv weight 1 -> Ms = relu(x[:, 0]) (up to BN eps)
        m.spatial_att.reduce[0].weight[0, 0, 0, 0] = 1.0
        for block in [m.spatial_att.reduce, *m.spatial_att.dilated]:
            block[1].weight.fill_(1.0)
        for block in m.spatial_att.dilated:
            block[0].weight[0, 0, 1, 1] = 1.0
        m.spatial_att.final.weight.fill_(1.0)
    x = torch.tensor([[[[0.5, 3.0], [-1.0, 0.0]], [[7.0, 7.0], [7.0, 7.0]]]])
    k = (1 + 1e-5) ** -1.5  # three eval-mode BNs with running var 1
    ms = x[:, 0:1].relu() * k
    mc = torch.tensor([1.0, -2.0])[None, :, None, None]
    torch.testing.assert_close(m(x), x * (1 + torch.sigmoid(mc + ms)))
    # the product variant of the official code gives a different answer
    m.combine = "product"
    assert not torch.allclose(m(x), x * (1 + torch.sigmoid(mc + ms)))


def test_attention_range_is_one_to_two():
    torch.manual_seed(0)
    m = BAM(64).eval()
    att = m.attention(torch.randn(2, 64, 5, 7) * 3)
    assert att.shape == (2, 64, 5, 7)
    assert torch.all(att >= 1) and torch.all(att <= 2)
    assert att.min() < 1.5 < att.max()  # not constant


def test_global_pool_on_non_square_input():
    """The channel branch must average over all of H x W (the official avg_pool2d(H) does not for W != H)."""
    torch.manual_seed(0)
    m = BAM(16).eval()
    x = torch.randn(1, 16, 2, 6)
    mc = m.channel_att(x)
    assert mc.shape == (1, 16, 1, 1)
    perm = torch.randperm(12)
    x_shuffled = x.flatten(2)[:, :, perm].view(1, 16, 2, 6)  # same per-channel mean
    torch.testing.assert_close(m.channel_att(x_shuffled), mc)


def test_dilated_convs_keep_size_and_dilation():
    m = BAM(64)
    for block in m.spatial_att.dilated:
        assert block[0].dilation == (4, 4) and block[0].padding == (4, 4) and block[0].kernel_size == (3, 3)
    assert BAM(64, dilation=2).spatial_att.dilated[0][0].dilation == (2, 2)


def test_init_follows_official():
    torch.manual_seed(0)
    m = BAM(1024)
    for mod in m.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.all(mod.bias == 0)
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.all(mod.weight == 1)
    conv = m.spatial_att.reduce[0]  # fan_out = 64 * 1 * 1, std = sqrt(2 / fan_out)
    assert conv.weight.std().item() == pytest.approx((2 / 64) ** 0.5, rel=0.1)


def test_batch_one_eval_works_and_train_needs_more_than_one():
    m = BAM(32).eval()
    x = torch.randn(1, 32, 4, 3)
    assert m(x).shape == (1, 32, 4, 3)
    m.train()
    assert m(torch.randn(2, 32, 4, 3)).shape == (2, 32, 4, 3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        m(x)  # BatchNorm1d of the official channel MLP, documented


@pytest.mark.parametrize(
    "channels, kwargs, arg",
    [
        (8, {}, "rd_ratio"),  # 8 // 16 = 0 hidden channels
        (64, {"rd_ratio": 0.0}, "rd_ratio"),
        (64, {"rd_channels": 0}, "rd_channels"),
        (64, {"dilation": 0}, "dilation"),
        (64, {"combine": "max"}, "combine"),
        (64, {"dilation": 1.5}, "dilation"),  # used to build a layer with a float padding
        (64, {"rd_ratio": "x"}, "rd_ratio"),
        (64, {"act_layer": "bogus"}, "act_layer"),  # used to escape as KeyError
        (64, {"gate_layer": "bogus"}, "gate_layer"),
        (0, {}, "channels"),
    ],
)
def test_invalid_arguments(channels, kwargs, arg):
    with pytest.raises(ConfigError, match=rf"bam: {arg}="):
        BAM(channels, **kwargs)
