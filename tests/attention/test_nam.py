"""NAM ('nam') against Christian-lyc/NAM's Channel_Att, by hand."""
import pytest
import torch

from conftest import slot_sees

from attn_bench.attention import block_defaults
from attn_bench.attention.nam import NormalizationAttention
from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_a_bn_and_nothing_else():
    assert block_defaults("nam") == {}
    nam = NormalizationAttention(64)
    assert n_params(nam) == 2 * 64 and nam.bn.weight.eq(1).all() and not nam.bn.bias.any()
    with pytest.raises(ConfigError, match="^nam: channels="):
        NormalizationAttention(0)


def test_the_gate_is_sigmoid_of_the_bn_output_scaled_by_each_gammas_share():
    torch.manual_seed(0)
    nam = NormalizationAttention(4).eval()
    with torch.no_grad():
        nam.bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 0.5]))  # |gamma| sums to 4
        nam.bn.bias.copy_(torch.tensor([0.1, 0.0, -0.3, 0.2]))
        nam.bn.running_mean.copy_(torch.tensor([0.2, -0.1, 0.0, 0.3]))
        nam.bn.running_var.copy_(torch.tensor([1.0, 2.0, 0.5, 4.0]))
    x = torch.randn(2, 4, 3, 5)
    bn = ((x - nam.bn.running_mean[:, None, None]) / torch.sqrt(nam.bn.running_var[:, None, None] + 1e-5)
          * nam.bn.weight[:, None, None] + nam.bn.bias[:, None, None])
    share = torch.tensor([0.25, 0.5, 0.125, 0.125])[:, None, None]
    torch.testing.assert_close(nam(x), x * torch.sigmoid(share * bn))


def test_no_gradient_flows_through_the_share_as_in_the_official_data_read():
    torch.manual_seed(0)
    nam = NormalizationAttention(3).train()
    with torch.no_grad():
        nam.bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x, upstream = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    (nam(x) * upstream).sum().backward()
    ours = nam.bn.weight.grad.clone()
    grads = {}
    for detached in (True, False):
        nam.zero_grad()
        gamma = nam.bn.weight.abs()
        gamma = gamma.detach() if detached else gamma
        (x * torch.sigmoid(nam.bn(x) * (gamma / gamma.sum())[:, None, None]) * upstream).sum().backward()
        grads[detached] = nam.bn.weight.grad.clone()
    torch.testing.assert_close(ours, grads[True])
    assert not torch.allclose(ours, grads[False])  # a gradient through the share would be another block


def test_on_resnet50_after_bn3_it_adds_two_parameters_per_channel():
    with torch.device("meta"):
        model = build_model("resnet50", "nam", 1000, placement="paper")
    assert n_params(model) == 25_557_032 + 2 * (3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048) == 25_587_240
    model, placement = build_placed("resnet50", "nam", 10, placement="paper")
    assert placement["site"] == "residual"
    assert slot_sees(model, "layer1.0", "bn3") == (NormalizationAttention, True)
