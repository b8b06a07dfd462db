"""PolarizedSelfAttention ('psa') against the official DeLightCMU/PSA code (PSA_p, PSA_s)."""
import pytest
import torch
import torch.nn.functional as F

from attn_bench.attention import block_defaults
from attn_bench.attention.polarized import PolarizedSelfAttention
from attn_bench.errors import ConfigError
from attn_bench.metrics.complexity import count_params
from attn_bench.models import build_model, build_placed


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_defaults():
    assert block_defaults("psa") == {"layout": "parallel"}


@pytest.mark.parametrize("c", [64, 256])
def test_param_counts_match_the_official_formulas(c):
    assert n_params(PolarizedSelfAttention(c)) == 2 * c * c + c
    assert n_params(PolarizedSelfAttention(c, layout="sequential")) == 27 * c * c // 16 + 19 * c // 8


def _conv(x, conv):
    return F.conv2d(x, conv.weight, conv.bias)


def _official(block: PolarizedSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """PSA.py's spatial_pool / channel_pool / forward, written out with the same shapes."""
    n, c, h, w = x.shape

    def spatial_pool(x):  # the official name of the channel-only branch
        input_x = _conv(x, block.ch_v).view(n, c // 2, h * w)
        mask = F.softmax(_conv(x, block.ch_q).view(n, 1, h * w), dim=2)
        context = torch.matmul(input_x, mask.transpose(1, 2)).unsqueeze(-1)
        return x * torch.sigmoid(block.ch_up(context))

    def channel_pool(x):  # ... and of the spatial-only branch
        avg = F.adaptive_avg_pool2d(_conv(x, block.sp_q), 1).view(n, c // 2, 1).permute(0, 2, 1)
        theta = _conv(x, block.sp_v).view(n, c // 2, h * w)
        if block.layout == "sequential":
            context = torch.matmul(avg, F.softmax(theta, dim=2))
        else:
            context = F.softmax(torch.matmul(avg, theta), dim=2)
        return x * torch.sigmoid(context.view(n, 1, h, w))

    if block.layout == "sequential":
        return channel_pool(spatial_pool(x))
    return spatial_pool(x) + channel_pool(x)


@pytest.mark.parametrize("layout", ["parallel", "sequential"])
def test_matches_the_official_code_by_hand(layout):
    torch.manual_seed(0)
    block = PolarizedSelfAttention(32, layout=layout).eval()
    x = torch.randn(2, 32, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _official(block, x))


def test_channel_gate_is_constant_over_space_and_spatial_gate_over_channels():
    torch.manual_seed(0)
    block = PolarizedSelfAttention(32).eval()
    x = torch.randn(2, 32, 6, 7)
    perm = torch.randperm(42)
    shuffled = x.flatten(2)[..., perm].view_as(x)
    with torch.no_grad():
        channel, spatial = block.channel_gate(x), block.spatial_gate(x)
        assert channel.shape == (2, 32, 1, 1) and spatial.shape == (2, 1, 6, 7)
        # the channel branch pools over positions: shuffling the positions leaves it unchanged
        torch.testing.assert_close(block.channel_gate(shuffled), channel)
        # the spatial gate moves with the positions
        torch.testing.assert_close(block.spatial_gate(shuffled).flatten(2), spatial.flatten(2)[..., perm])
        assert channel.std() > 0.01 and spatial.std() > 0


def test_paper_placement_is_after_each_bottlenecks_3x3_conv():
    model, placement = build_placed("resnet50", "psa", placement="paper")
    # 16 bottlenecks at middle widths 64/128/256/512: sum of 2w^2 + w
    extra = sum(k * (2 * w * w + w) for k, w in ((3, 64), (4, 128), (6, 256), (3, 512)))
    assert count_params(model)["params"] == 25_557_032 + extra == 28_075_752
    assert placement["site"] == "mid"
    assert isinstance(model.layer3[2].conv2.attn, PolarizedSelfAttention)


def test_bad_layout_is_one_line():
    with pytest.raises(ConfigError, match=r"^psa: layout='serial' must be one of parallel, sequential$"):
        PolarizedSelfAttention(64, layout="serial")
