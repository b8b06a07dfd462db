"""EfficientChannelAttn ('eca') against the ECA-Net paper, hand computations and timm."""
import math

import pytest
import torch
from timm.layers import EcaModule

from attn_bench.attention import block_defaults
from attn_bench.attention.eca import EfficientChannelAttn, adaptive_kernel_size
from attn_bench.errors import ConfigError


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_defaults_are_plain_values():
    assert block_defaults("eca") == {"kernel_size": None, "gamma": 2.0, "beta": 1.0, "gate_layer": "sigmoid"}


# psi(C): t = int(|(log2 C + 1) / 2|), next odd.  C=64: 3.5 -> 3;  C=256: 4.5 -> 4 -> 5;
# C=2048: 6.0 -> 6 -> 7;  C=4: 1.5 -> 1;  C=16: 2.5 -> 2 -> 3.
@pytest.mark.parametrize("channels, k", [
    (4, 1), (16, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7),
])
def test_adaptive_kernel_size(channels, k):
    assert adaptive_kernel_size(channels) == k
    eca = EfficientChannelAttn(channels)
    assert eca.kernel_size == k
    assert eca.conv.kernel_size == (k,)
    assert eca.conv.padding == ((k - 1) // 2,)


@pytest.mark.parametrize("channels, kwargs, k", [(2048, {}, 7), (256, {}, 5), (256, {"kernel_size": 9}, 9)])
def test_param_count_is_k_and_no_bias(channels, kwargs, k):
    eca = EfficientChannelAttn(channels, **kwargs)
    assert eca.conv.bias is None
    assert n_params(eca) == k


def test_gamma_beta_change_kernel():
    # gamma=1, beta=1, C=256: t = 9 -> odd -> 9
    assert EfficientChannelAttn(256, gamma=1.0).kernel_size == 9


def test_hand_computed_1d_conv():
    eca = EfficientChannelAttn(4, kernel_size=3)
    with torch.no_grad():
        eca.conv.weight.copy_(torch.tensor([1.0, 2.0, -1.0]).view(1, 1, 3))
    x = torch.tensor([[0.5, 1.5], [1.0, -1.0], [-2.0, 0.0], [2.0, 2.0]]).view(1, 4, 1, 2)
    # pooled p = [1, 0, -1, 2]; zero padding; y_i = 1*p[i-1] + 2*p[i] - 1*p[i+1]
    # y0 = 0 + 2 - 0 = 2; y1 = 1 + 0 + 1 = 2; y2 = 0 - 2 - 2 = -4; y3 = -1 + 4 - 0 = 3
    gates = torch.tensor([1 / (1 + math.exp(-v)) for v in (2.0, 2.0, -4.0, 3.0)]).view(1, 4, 1, 1)
    torch.testing.assert_close(eca(x), x * gates, rtol=0, atol=1e-6)


def test_kernel_one_is_per_channel_scale():
    eca = EfficientChannelAttn(4)  # psi(4) = 1
    with torch.no_grad():
        eca.conv.weight.fill_(2.0)
    x = torch.randn(3, 4, 2, 5)
    torch.testing.assert_close(eca(x), x * torch.sigmoid(2 * x.mean((2, 3), keepdim=True)))


def test_equivalent_to_timm():
    torch.manual_seed(0)
    ours, ref = EfficientChannelAttn(256), EcaModule(256)
    assert ref.conv.kernel_size == ours.conv.kernel_size == (5,)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 256, 3, 4)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_timm_clamps_small_channel_kernels():
    # Documented difference: timm never goes below k=3; the paper's formula gives 1 for C=4.
    assert EcaModule(4).conv.kernel_size == (3,)
    assert EfficientChannelAttn(4).kernel_size == 1


@pytest.mark.parametrize("kwargs, arg", [
    ({"channels": 64, "kernel_size": 4}, "kernel_size"),
    ({"channels": 64, "kernel_size": 0}, "kernel_size"),
    ({"channels": 64, "kernel_size": 3.0}, "kernel_size"),
    ({"channels": 64, "gamma": 0}, "gamma"),
    ({"channels": 64, "beta": float("nan")}, "beta"),
    ({"channels": 64, "gate_layer": "bogus"}, "gate_layer"),
    ({"channels": -1}, "channels"),
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ConfigError, match=rf"^eca: {arg}="):
        EfficientChannelAttn(**kwargs)


def test_even_kernel_message_says_why():
    with pytest.raises(ConfigError, match="kernel_size=4 must be odd"):
        EfficientChannelAttn(64, kernel_size=4)
