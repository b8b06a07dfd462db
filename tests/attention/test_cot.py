"""Contextual Transformer ('cot') against JDAI-CV/CoTNet's CotLayer and its CUDA aggregation, by hand."""
import pytest
import torch
import torch.nn.functional as F

from attn_bench.attention import block_defaults
from attn_bench.attention.contextual_transformer import ContextualTransformer, local_aggregation
from attn_bench.errors import ConfigError
from attn_bench.models import build_placed

RESNET50_WIDTHS = [64] * 3 + [128] * 4 + [256] * 6 + [512] * 3  # the conv2 widths CoT units replace


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def _kernel_by_loops(values, weights, k):
    """aggregation_zeropad_forward_kernel's index arithmetic, one output value at a time."""
    b, c, h, w = values.shape
    shared, pad = weights.shape[1], k // 2
    out = torch.zeros_like(values)
    for n in range(b):
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    for kh in range(k):
                        for kw in range(k):
                            yi, xi = y - pad + kh, x - pad + kw
                            if 0 <= yi < h and 0 <= xi < w:
                                out[n, ch, y, x] += weights[n, ch % shared, kh * k + kw, y, x] * values[n, ch, yi, xi]
    return out


@pytest.mark.parametrize("k", [3, 5])
def test_the_local_aggregation_is_the_official_cuda_kernels_arithmetic(k):
    torch.manual_seed(0)
    values, weights = torch.randn(2, 8, 5, 4, dtype=torch.float64), torch.randn(2, 2, k * k, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(local_aggregation(values, weights, k), _kernel_by_loops(values, weights, k))


def test_a_unit_computes_cotlayer_step_by_step():
    assert block_defaults("cot") == {"out_channels": None, "stride": 1, "dilation": 1, "kernel_size": 3}
    torch.manual_seed(0)
    c = 64
    cot = ContextualTransformer(c).eval()
    for m in cot.modules():  # running statistics and affine values that are not the identity
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, c, 6, 5)
    k = cot.key_embed(x)
    assert cot.key_embed[0].groups == 4 and cot.key_embed[0].bias is None
    w = cot.embed(torch.cat([x, k], 1)).view(2, 1, c // 8, 9, 6, 5)  # the official view, one head
    assert cot.embed[4].num_groups == c // 8 and cot.embed[3].out_channels == 9 * c // 8
    unfolded = F.unfold(cot.conv1x1(x), 3, padding=1).view(2, 8, c // 8, 9, 6, 5)  # the official file's check
    y = F.silu(cot.bn((w.unsqueeze(2) * unfolded.unsqueeze(1)).sum(-3).view(2, c, 6, 5)))
    attn = cot.se((y + k).mean((2, 3), keepdim=True)).view(2, c, 2)  # channel c's pair: rows 2c, 2c + 1
    a = attn.softmax(2)
    expected = y * a[..., 0, None, None] + k * a[..., 1, None, None]
    torch.testing.assert_close(cot(x), expected)
    assert cot.se[0].out_channels == max(c * 2 // 4, 32) and cot.se[3].out_channels == 2 * c


def _unit_params(d):
    attn = max(d // 2, 32)
    key = d * (d // 4) * 9 + 2 * d
    embed = 2 * d * (d // 2) + 2 * (d // 2) + (d // 2) * (9 * d // 8) + 9 * d // 8 + 2 * (9 * d // 8)
    value, bn = d * d + 2 * d, 2 * d
    fuse = d * attn + attn + 2 * attn + attn * 2 * d + 2 * d
    return key + embed + value + bn + fuse


def test_cotnet50_is_resnet50_with_a_unit_for_every_conv2():
    with torch.device("meta"):
        model, placement = build_placed("resnet50", "cot", 1000, placement="paper", img_size=224)
    replaced = sum(d * d * 9 + 2 * d for d in RESNET50_WIDTHS)  # conv2 and bn2
    assert n_params(model) == 25_557_032 - replaced + sum(_unit_params(d) for d in RESNET50_WIDTHS) == 22_222_416
    assert (placement["site"], placement["stages"]) == ("conv", "all") and "note" not in placement
    strided = model.layer2[0].conv2
    assert isinstance(strided.avd, torch.nn.AvgPool2d) and strided.avd.stride == 2  # the official avd, then stride 1
    assert isinstance(model.layer2[0].bn2, torch.nn.Identity) and isinstance(model.layer2[0].act2, torch.nn.Identity)


def test_on_the_default_model_a_width_changing_conv_takes_the_unit_and_it_learns():
    model, placement = build_placed("resnet18", "cot", 10, stem="small", placement="paper", img_size=32)
    assert placement["note"] == "not a published network"
    unit = model.layer2[0].conv1  # 64 -> 128, stride 2
    assert (unit.key_embed[0].in_channels, unit.key_embed[0].out_channels, unit.embed[0].in_channels) == (64, 128, 192)
    x = torch.randn(4, 3, 32, 32)
    assert model.layer2[0](model.layer1(model.act1(model.bn1(model.conv1(x))))).shape == (4, 128, 16, 16)
    torch.nn.init.ones_(model.layer2[0].bn2.weight)  # timm zero-initialises the branch's last BN
    model(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unit.embed.parameters())


def test_bad_settings_are_one_line():
    with pytest.raises(ConfigError, match="^cot: dilation=2"):
        ContextualTransformer(64, dilation=2)
    with pytest.raises(ConfigError, match="^cot: widths 64 -> 20: the key conv's 4 groups must divide the input"):
        ContextualTransformer(64, out_channels=20)
    with pytest.raises(ConfigError, match="^cot: kernel_size=4"):
        ContextualTransformer(64, kernel_size=4)
    with pytest.raises(ConfigError, match="site 'conv' does not exist"):
        build_placed("mobilenetv2_100", "cot", 10, placement="paper")
