"""Gated Channel Transformation ('gct') against z-x-yang/GCT's PyTorch GCT, resnet.py and main.py, by hand."""
import pytest
import torch
from omegaconf import OmegaConf

from attn_bench.attention import block_defaults
from attn_bench.attention.gated_channel import GatedChannelTransformation
from attn_bench.errors import ConfigError
from attn_bench.models import build_placed
from attn_bench.models.placement import find_slots
from attn_bench.training.optim import build_optimizer

SGD = OmegaConf.create(dict(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))


def _randomised(gct):
    with torch.no_grad():
        gct.alpha.uniform_(0.5, 1.5), gct.gamma.uniform_(-1, 1), gct.beta.uniform_(-0.5, 0.5)
    return gct


def test_l2_gate_is_the_official_formula_and_starts_as_the_identity():
    assert block_defaults("gct") == {"epsilon": 1e-5, "mode": "l2", "after_relu": False}
    x = torch.randn(2, 16, 5, 7)
    gct = GatedChannelTransformation(16)
    assert sum(p.numel() for p in gct.parameters()) == 3 * 16 and gct.alpha.shape == (1, 16, 1, 1)
    assert torch.equal(gct(x), x)  # alpha 1, gamma 0, beta 0: tanh(0) = 0, the gate is exactly 1
    _randomised(gct)
    a, g, b = gct.alpha.flatten()[:, None, None], gct.gamma.flatten()[:, None, None], gct.beta.flatten()[:, None, None]
    s = ((x ** 2).sum((2, 3), keepdim=True) + 1e-5).sqrt() * a  # ||x_c|| per image and channel, scaled
    n = g * s / ((s ** 2).mean(1, keepdim=True) + 1e-5).sqrt()  # over the channels of each image
    torch.testing.assert_close(gct(x), x * (1 + torch.tanh(n + b)))


@pytest.mark.parametrize("after_relu", [False, True])
def test_l1_mode_is_the_official_option(after_relu):
    x = torch.randn(2, 8, 4, 4)
    gct = _randomised(GatedChannelTransformation(8, mode="l1", after_relu=after_relu))
    s = (x if after_relu else x.abs()).sum((2, 3), keepdim=True) * gct.alpha
    n = gct.gamma / (s.abs().mean(1, keepdim=True) + 1e-5)
    torch.testing.assert_close(gct(x), x * (1 + torch.tanh(s * n + gct.beta)))
    with pytest.raises(ConfigError, match="^gct: after_relu=true is an option of mode='l1'"):
        GatedChannelTransformation(8, after_relu=True)
    with pytest.raises(ConfigError, match="^gct: mode='l3'; valid choices: l2, l1$"):
        GatedChannelTransformation(8, mode="l3")


def test_before_every_conv_of_resnet50_as_the_official_resnet():
    with torch.device("meta"):
        model, placement = build_placed("resnet50", "gct", 1000, placement="paper", img_size=224)
    assert (placement["site"], placement["stages"]) == ("convs", "all")
    convs = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    gcts = [m for m in model.modules() if isinstance(m, GatedChannelTransformation)]
    assert len(convs) == len(gcts) == 1 + 16 * 3 + 4  # the stem, three per bottleneck, four projections
    widths = sum(c.in_channels for c in convs)
    assert widths == 22_531 and sum(p.numel() for g in gcts for p in g.parameters()) == 3 * widths == 67_593
    assert sum(p.numel() for p in model.parameters()) == 25_557_032 + 67_593
    for path in ("conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer2.0.downsample.0"):
        wrapped = model.get_submodule(path)
        assert isinstance(wrapped.attn, GatedChannelTransformation) and isinstance(wrapped.conv, torch.nn.Conv2d)
        assert wrapped.attn.alpha.shape[1] == wrapped.conv.in_channels
    assert model.conv1.attn.alpha.shape[1] == 3  # on the RGB image


def test_each_gct_sees_its_convs_input_and_the_stages_select_them():
    model, _ = build_placed("resnet18", "gct", 10, stem="small", placement="paper", img_size=32)
    seen = {}
    for name, m in model.named_modules():
        if isinstance(m, GatedChannelTransformation):
            m.register_forward_hook(lambda mod, args, out, name=name: seen.update({name: args[0]}))
    captured = {}
    model.layer2[0].downsample[0].conv.register_forward_hook(lambda m, args, out: captured.update(x=args[0]))
    x = torch.randn(2, 3, 32, 32)
    model.eval()(x)
    assert torch.equal(seen["conv1.attn"], x)
    assert torch.equal(seen["layer2.0.downsample.0.attn"], captured["x"])  # identity at init: the conv sees its input
    slots = find_slots(build_placed("resnet18", "none", 10, stem="small").model, "convs")
    assert sorted({s.stage for s in slots}) == [0, 1, 2, 3, 4] and sum(s.stage == 0 for s in slots) == 1
    only_four, _ = build_placed("resnet18", "gct", 10, stem="small", placement="paper", attn_stages=[4], img_size=32)
    placed = [n for n, m in only_four.named_modules() if isinstance(m, GatedChannelTransformation)]
    assert placed and all(n.startswith("layer4.") for n in placed) and len(placed) == 2 * 2 + 1


def test_the_gating_bias_is_kept_out_of_weight_decay_as_the_official_optimiser():
    model, _ = build_placed("resnet18", "gct", 10, stem="small", placement="paper", img_size=32)
    gcts = [m for m in model.modules() if isinstance(m, GatedChannelTransformation)]
    decay = {id(p): g["weight_decay"] for g in build_optimizer(model, SGD).param_groups for p in g["params"]}
    assert all(decay[id(m.beta)] == 0 for m in gcts)
    assert all(decay[id(m.alpha)] == decay[id(m.gamma)] == 1e-4 for m in gcts)
    everything = OmegaConf.merge(SGD, {"decay_norm_and_bias": True})
    assert all(g["weight_decay"] == 1e-4 for g in build_optimizer(model, everything).param_groups)
