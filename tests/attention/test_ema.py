"""EMA ('ema') against YOLOonMe/EMA-attention-module's EmaModule and its timm MobileNetV2, by hand."""
import pytest
import torch
from torch import nn

from attn_bench.attention import block_defaults
from attn_bench.attention.efficient_multiscale import EfficientMultiScaleAttention
from attn_bench.errors import ConfigError
from attn_bench.models import build_placed
from attn_bench.models.labels import block_label


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def _official(ema, x):
    """EmaModule.forward as released (its pooling modules, permutes and matmuls), with ema's weights."""
    b, c, h, w = x.size()
    g = ema.groups
    group_x = x.reshape(b * g, -1, h, w)
    x_h = nn.AdaptiveAvgPool2d((None, 1))(group_x)
    x_w = nn.AdaptiveAvgPool2d((1, None))(group_x).permute(0, 1, 3, 2)
    hw = ema.conv1x1(torch.cat([x_h, x_w], dim=2))
    x_h, x_w = torch.split(hw, [h, w], dim=2)
    x1 = ema.gn(group_x * x_h.sigmoid() * x_w.permute(0, 1, 3, 2).sigmoid())
    x2 = ema.conv3x3(group_x)
    agp = nn.AdaptiveAvgPool2d((1, 1))
    x11 = nn.Softmax(-1)(agp(x1).reshape(b * g, -1, 1).permute(0, 2, 1))
    x12 = x2.reshape(b * g, c // g, -1)
    x21 = nn.Softmax(-1)(agp(x2).reshape(b * g, -1, 1).permute(0, 2, 1))
    x22 = x1.reshape(b * g, c // g, -1)
    weights = (torch.matmul(x11, x12) + torch.matmul(x21, x22)).reshape(b * g, 1, h, w)
    return (group_x * weights.sigmoid()).reshape(b, c, h, w)


@pytest.mark.parametrize("channels, factor", [(64, 32), (96, 8)])
def test_the_module_computes_the_official_emamodule(channels, factor):
    assert block_defaults("ema") == {"factor": 32}
    torch.manual_seed(0)
    ema = EfficientMultiScaleAttention(channels, factor)
    with torch.no_grad():
        ema.gn.weight.uniform_(0.5, 1.5), ema.gn.bias.uniform_(-0.3, 0.3)
    x = torch.randn(2, channels, 7, 5)
    torch.testing.assert_close(ema(x), _official(ema, x))
    c = channels // factor
    assert n_params(ema) == 10 * c * c + 4 * c  # 1x1 and 3x3 convs with bias, GroupNorm affine, shared by the groups


def test_bad_settings_are_one_line():
    with pytest.raises(ConfigError, match="^ema: factor=32 groups must divide the channels \\(48\\)$"):
        EfficientMultiScaleAttention(48)
    with pytest.raises(ConfigError, match="^ema: factor=0"):
        EfficientMultiScaleAttention(64, factor=0)


def test_mobilenetv2_gets_it_where_the_official_timm_puts_it_and_has_its_readmes_count():
    with torch.device("meta"):
        model, placement = build_placed("mobilenetv2_100", "ema", 1000, placement="paper", img_size=224)
    placed = {name.rpartition(".se")[0] for name, m in model.named_modules() if isinstance(m, EfficientMultiScaleAttention)}
    wide = {f"blocks.{i}.{j}" for i, stage in enumerate(model.blocks) for j, block in enumerate(stage)
            if hasattr(block, "conv_pw") and block.bn2.num_features > 144}  # official: mid_chs > 144
    assert placed == wide and len(placed) == 13
    assert n_params(model) == 3_504_872 + 44_400 == 3_549_272  # the README's MobileNetV2 + EMA: 3.55M
    assert placement["layout"] == "blocks wider than the paper's thresholds (13 of 17)" and "note" not in placement
    label = block_label({"attn": "ema"}, None, placement)
    assert "blocks wider than the paper's thresholds (13 of 17)" in label


def test_on_a_resnet_it_is_every_block_and_labelled_not_a_published_network():
    with torch.device("meta"):
        model, placement = build_placed("resnet50", "ema", 1000, placement="paper", img_size=224)
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert n_params(model) - 25_557_032 == sum(10 * (c // 32) ** 2 + 4 * (c // 32) for c in widths) == 198_368
    assert placement["note"] == "not a published network" and "layout" not in placement
    explicit, placement = build_placed("mobilenetv2_100", "ema", 10, placement="paper", attn_stages=[4, 5])
    assert "layout" not in placement  # explicit stages replace the preset's selection
