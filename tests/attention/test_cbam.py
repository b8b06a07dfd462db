"""CBAM ('cbam') against the paper / official Jongchan/attention-module code, by hand and vs timm."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers.cbam import CbamModule

from attn_bench.attention import block_defaults
from attn_bench.attention.cbam import CBAM
from attn_bench.errors import ConfigError


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def sig(v):
    return 1 / (1 + math.exp(-v))


def cbam_params(c, r=16, k=7, spatial=True):
    """Shared MLP C -> C/r -> C with biases; spatial k x k conv 2 -> 1 without bias + BN (weight, bias)."""
    h = c // r
    return 2 * c * h + h + c + ((2 * k * k + 2) if spatial else 0)


def test_defaults_are_plain_values():
    assert block_defaults("cbam") == {
        "rd_ratio": 1 / 16, "rd_channels": None, "spatial_kernel_size": 7, "no_spatial": False,
        "act_layer": "relu", "gate_layer": "sigmoid",
    }


@pytest.mark.parametrize("channels, kwargs, expected", [
    (64, {}, 680),
    (256, {}, 8564),
    (2048, {}, 526564),
    (256, {"no_spatial": True}, 8464),
    (256, {"spatial_kernel_size": 3}, 8484),
])
def test_param_count_matches_formula(channels, kwargs, expected):
    k = kwargs.get("spatial_kernel_size", 7)
    assert cbam_params(channels, k=k, spatial=not kwargs.get("no_spatial", False)) == expected
    assert n_params(CBAM(channels, **kwargs)) == expected


def test_mlp_is_shared():
    cbam = CBAM(256)
    convs = [m for m in cbam.channel.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(16, 256, 1, 1), (256, 16, 1, 1)]
    assert n_params(cbam.channel) == 2 * 256 * 16 + 16 + 256  # one MLP, not one per pooling


def _set_channel_mlp(cbam):
    with torch.no_grad():
        cbam.channel.fc1.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
        cbam.channel.fc1.bias.zero_()
        cbam.channel.fc2.weight.fill_(1.0)
        cbam.channel.fc2.bias.zero_()


def test_max_pooled_branch_is_used():
    cbam = CBAM(2, rd_channels=1, no_spatial=True)
    _set_channel_mlp(cbam)  # mlp(v) = relu(v[0]) for both outputs
    x = torch.zeros(2, 2, 2, 2)
    x[0, 0] = 1.0                                            # avg 1, max 1
    x[1, 0] = torch.tensor([[0.0, 0.0], [0.0, 4.0]])         # avg 1, max 4
    x[:, 1] = 2.0
    # same avg descriptors; gate = sigmoid(mlp(avg) + mlp(max)) = sigmoid(1 + 1) vs sigmoid(1 + 4)
    out = cbam(x)
    torch.testing.assert_close(out[0], x[0] * sig(2.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[1], x[1] * sig(5.0), rtol=0, atol=1e-6)
    # and the sum is taken before the sigmoid, not sigmoid(a) + sigmoid(b)
    assert not torch.allclose(out[1], x[1] * (sig(1.0) + sig(4.0)))


def _identity_bn(spatial):
    with torch.no_grad():
        spatial.bn.weight.fill_(1.0)
        spatial.bn.bias.zero_()
    spatial.bn.eps = 0.0
    spatial.eval()  # running_mean 0, running_var 1 -> BN is the identity


@pytest.mark.parametrize("tap, expected_map", [(0, [3.0, 0.0]), (1, [2.0, -1.0])])
def test_spatial_input_order_is_max_then_mean(tap, expected_map):
    cbam = CBAM(16)
    spatial = cbam.spatial
    _identity_bn(spatial)
    with torch.no_grad():
        spatial.conv.weight.zero_()
        spatial.conv.weight[0, tap, 3, 3] = 1.0  # centre tap on input map `tap` only
    x = torch.zeros(1, 16, 1, 2)
    x[0, 0] = torch.tensor([1.0, -2.0])
    x[0, 1] = torch.tensor([3.0, 0.0])
    x[0, 2:] = torch.tensor([2.0, -1.0]) * 16 / 14 - (x[0, 0] + x[0, 1]) / 14  # so the mean is [2, -1]
    assert x.amax(1).flatten().tolist() == [3.0, 0.0]
    torch.testing.assert_close(x.mean(1).flatten(), torch.tensor([2.0, -1.0]))
    gate = torch.tensor([sig(v) for v in expected_map]).view(1, 1, 1, 2)
    torch.testing.assert_close(spatial(x), x * gate, rtol=0, atol=1e-6)


def test_full_block_matches_definition():
    torch.manual_seed(0)
    cbam = CBAM(32, rd_ratio=1 / 8)
    with torch.no_grad():
        for p in cbam.parameters():
            p.normal_()
        cbam.spatial.bn.running_mean.fill_(0.3)
        cbam.spatial.bn.running_var.fill_(2.0)
    cbam.eval()
    x = torch.randn(2, 32, 5, 6)

    ch = cbam.channel
    mlp = lambda v: F.linear(F.relu(F.linear(v, ch.fc1.weight.flatten(1), ch.fc1.bias)),  # noqa: E731
                             ch.fc2.weight.flatten(1), ch.fc2.bias)
    x1 = x * torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    sp = cbam.spatial
    s = F.conv2d(torch.stack([x1.amax(1), x1.mean(1)], dim=1), sp.conv.weight, padding=3)
    s = (s - 0.3) / math.sqrt(2.0 + 1e-5) * sp.bn.weight + sp.bn.bias
    expected = x1 * torch.sigmoid(s)
    torch.testing.assert_close(cbam(x), expected)


def test_official_init_spatial_gate_starts_at_half():
    torch.manual_seed(0)
    cbam = CBAM(64).eval()
    assert torch.equal(cbam.spatial.bn.weight, torch.zeros(1))
    assert torch.equal(cbam.channel.fc1.bias, torch.zeros(4))
    assert torch.equal(cbam.channel.fc2.bias, torch.zeros(64))
    assert cbam.spatial.conv.bias is None
    x = torch.randn(2, 64, 4, 3)
    torch.testing.assert_close(cbam(x), cbam.channel(x) * 0.5, rtol=0, atol=0)


def test_equivalent_to_timm_with_swapped_spatial_inputs():
    torch.manual_seed(0)
    ours, ref = CBAM(64), CbamModule(64, mlp_bias=True)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_()
    state = {
        "channel." + k: v for k, v in ours.channel.state_dict().items()
    }
    state["spatial.conv.conv.weight"] = ours.spatial.conv.weight.flip(1)  # timm feeds [mean, max]
    state.update({"spatial.conv.bn." + k: v for k, v in ours.spatial.bn.state_dict().items()})
    ref.load_state_dict(state)
    ours.eval(), ref.eval()
    x = torch.randn(2, 64, 7, 5)
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("kwargs, arg", [
    ({"channels": 8}, "rd_ratio"),                        # 8 // 16 = 0 hidden channels
    ({"channels": 64, "rd_channels": -2}, "rd_channels"),
    ({"channels": 64, "spatial_kernel_size": 6}, "spatial_kernel_size"),
    ({"channels": 64, "no_spatial": "yes"}, "no_spatial"),
    ({"channels": 64, "act_layer": "bogus"}, "act_layer"),
    ({"channels": 64, "gate_layer": "bogus"}, "gate_layer"),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ConfigError, match=rf"^cbam: {arg}="):
        CBAM(**kwargs)
