"""GlobalContext ('gc') against the GCNet paper / official context_block.py, by hand and vs timm."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import GlobalContext as TimmGlobalContext

from attn_bench.attention import block_defaults
from attn_bench.attention.global_context import GlobalContext
from attn_bench.errors import ConfigError


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def gc_params(c, r=16, att=True, n_fusions=1):
    """att conv C -> 1 (+bias); per fusion: conv C -> P (+bias), LayerNorm(P) affine, conv P -> C (+bias)."""
    p = c // r
    return (c + 1 if att else 0) + n_fusions * (2 * c * p + 3 * p + c)


def test_defaults_are_plain_values():
    assert block_defaults("gc") == {
        "rd_ratio": 1 / 16, "rd_channels": None, "pooling": "att", "fusion": "channel_add",
        "act_layer": "relu", "gate_layer": "sigmoid",
    }


@pytest.mark.parametrize("kwargs, att, n_fusions, expected", [
    ({}, True, 1, 8753),
    ({"pooling": "avg"}, False, 1, 8496),
    ({"fusion": "channel_mul"}, True, 1, 8753),
    ({"fusion": "channel_add+channel_mul"}, True, 2, 17249),
])
def test_param_count_matches_formula(kwargs, att, n_fusions, expected):
    assert gc_params(256, att=att, n_fusions=n_fusions) == expected
    assert n_params(GlobalContext(256, **kwargs)) == expected


@pytest.mark.parametrize("shape", [(2, 64, 7, 5), (1, 64, 1, 1)])
def test_identity_at_init_with_channel_add(shape):
    torch.manual_seed(0)
    gc = GlobalContext(64)
    x = torch.randn(shape)
    assert torch.equal(gc.train()(x), x)
    assert torch.equal(gc.eval()(x), x)


def test_channel_mul_starts_at_half():
    gc = GlobalContext(64, fusion="channel_mul")
    x = torch.randn(2, 64, 3, 4)
    assert torch.equal(gc(x), x * 0.5)


def test_official_init():
    torch.manual_seed(0)
    gc = GlobalContext(1024, fusion="channel_mul,channel_add")
    assert torch.equal(gc.conv_attn.bias, torch.zeros(1))
    # kaiming_normal_(mode='fan_in', nonlinearity='relu'): std = sqrt(2 / C)
    assert gc.conv_attn.weight.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.1)
    for mlp in (gc.mlp_add, gc.mlp_mul):
        assert not mlp.fc2.weight.any() and not mlp.fc2.bias.any()
        assert mlp.fc1.weight.any()


def test_softmax_attention_pooling_hand_computed():
    gc = GlobalContext(2, rd_channels=1)
    with torch.no_grad():
        gc.conv_attn.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
        gc.conv_attn.bias.fill_(5.0)  # softmax is shift invariant: must not matter
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]).view(1, 2, 1, 3)
    # logits = channel 0 = [1, 2, 3] (+5); weights = softmax over the 3 positions
    e = [math.exp(v) for v in (1.0, 2.0, 3.0)]
    w = [v / sum(e) for v in e]
    assert w == pytest.approx([0.09003057, 0.24472847, 0.66524096])
    expected = torch.tensor([w[0] * 1 + w[1] * 2 + w[2] * 3, w[1]]).view(1, 2, 1, 1)
    assert expected.flatten().tolist() == pytest.approx([2.57521039, 0.24472847])
    torch.testing.assert_close(gc.context(x), expected, rtol=0, atol=1e-6)


def test_avg_pooling_context():
    gc = GlobalContext(32, pooling="avg")
    x = torch.randn(2, 32, 3, 5)
    torch.testing.assert_close(gc.context(x), x.mean((2, 3), keepdim=True))


def test_full_block_matches_definition():
    torch.manual_seed(0)
    gc = GlobalContext(32, rd_ratio=1 / 8, fusion=["channel_add", "channel_mul"])
    with torch.no_grad():
        for p in gc.parameters():
            p.normal_()
    x = torch.randn(2, 32, 4, 3)

    a = torch.einsum("c,nchw->nhw", gc.conv_attn.weight.flatten(), x) + gc.conv_attn.bias
    a = torch.softmax(a.flatten(1), dim=1)
    ctx = torch.einsum("ncp,np->nc", x.flatten(2), a)

    def transform(mlp):
        h = F.linear(ctx, mlp.fc1.weight.flatten(1), mlp.fc1.bias)
        h = F.layer_norm(h, (4,), mlp.norm.weight.flatten(), mlp.norm.bias.flatten(), eps=1e-5)
        return F.linear(F.relu(h), mlp.fc2.weight.flatten(1), mlp.fc2.bias)[:, :, None, None]

    expected = x * torch.sigmoid(transform(gc.mlp_mul)) + transform(gc.mlp_add)
    torch.testing.assert_close(gc(x), expected)


@pytest.mark.parametrize("fusion", [
    "channel_add+channel_mul", "channel_mul+channel_add", "channel_mul, channel_add",
    ["channel_mul", "channel_add"], ("channel_add", "channel_mul"),
])
def test_fusion_spellings(fusion):
    assert GlobalContext(64, fusion=fusion).fusions == ("channel_add", "channel_mul")


@pytest.mark.parametrize("pooling, fusion", [
    ("att", "channel_add"), ("att", "channel_mul"), ("avg", "channel_add"), ("att", "channel_add+channel_mul"),
])
def test_equivalent_to_timm(pooling, fusion):
    torch.manual_seed(0)
    ours = GlobalContext(64, pooling=pooling, fusion=fusion)
    # timm's defaults differ (rd_ratio 1/8, channel_mul only, LayerNorm eps 1e-6): match them here.
    ref = TimmGlobalContext(64, use_attn=pooling == "att", fuse_add="channel_add" in ours.fusions,
                            fuse_scale="channel_mul" in ours.fusions, rd_ratio=1 / 16)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_()
    state = {k: v for k, v in ours.state_dict().items() if k.startswith("conv_attn")}
    for name, timm_name in (("mlp_add", "mlp_add"), ("mlp_mul", "mlp_scale")):
        mlp = getattr(ours, name)
        if mlp is None:
            continue
        getattr(ref, timm_name).norm.eps = 1e-5
        for k, v in mlp.state_dict().items():
            state[f"{timm_name}.{k}"] = v.flatten() if k.startswith("norm") else v
    ref.load_state_dict(state)
    x = torch.randn(2, 64, 5, 3)
    torch.testing.assert_close(ours(x), ref(x))


def test_timm_defaults_differ():
    ref = TimmGlobalContext(64)
    assert ref.mlp_add is None and ref.mlp_scale is not None  # channel_mul by default
    assert ref.mlp_scale.fc1.out_channels == 8                 # rd_ratio 1/8
    assert GlobalContext(64).mlp_add.fc1.out_channels == 4


@pytest.mark.parametrize("kwargs, arg", [
    ({"channels": 8}, "rd_ratio"),                 # int(8 / 16) = 0
    ({"channels": 64, "rd_channels": 0}, "rd_channels"),
    ({"channels": 64, "pooling": "max"}, "pooling"),
    ({"channels": 64, "fusion": "channel_sum"}, "fusion"),
    ({"channels": 64, "fusion": ""}, "fusion"),
    ({"channels": 64, "fusion": []}, "fusion"),
    ({"channels": 64, "fusion": "channel_add+channel_add"}, "fusion"),
    ({"channels": 64, "act_layer": "bogus"}, "act_layer"),
    ({"channels": 64, "gate_layer": "bogus"}, "gate_layer"),  # checked even if only channel_add
])
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ConfigError, match=rf"^gc: {arg}="):
        GlobalContext(**kwargs)
