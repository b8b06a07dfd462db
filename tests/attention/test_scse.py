"""scSE ('scse') against ai-med/squeeze_and_excitation's ChannelSpatialSELayer, by hand."""
import pytest
import torch

from attn_bench.attention import block_defaults
from attn_bench.attention.scse import ChannelSpatialSE
from attn_bench.errors import ConfigError
from attn_bench.models import build_model


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def reference(block, x):
    """The official layers' forward: cSE over the channel means, sSE from a 1x1 conv, then torch.max."""
    n, c, h, w = x.shape
    squeeze = x.view(n, c, -1).mean(dim=2)
    channel = x * torch.sigmoid(block.fc2(torch.relu(block.fc1(squeeze)))).view(n, c, 1, 1)
    spatial = x * torch.sigmoid(block.spatial(x)).view(n, 1, h, w)
    return torch.max(channel, spatial), channel + spatial


def test_the_official_defaults_and_size():
    assert block_defaults("scse") == {"rd_ratio": 0.5, "aggregation": "max"}
    scse = ChannelSpatialSE(64)
    assert (scse.fc1.out_features, scse.spatial.out_channels) == (32, 1)
    assert n_params(scse) == 64 * 64 + int(2.5 * 64) + 1 == (64 * 32 + 32) + (32 * 64 + 64) + (64 + 1)


@pytest.mark.parametrize("aggregation, index", [("max", 0), ("add", 1)])
def test_it_computes_the_official_forward(aggregation, index):
    torch.manual_seed(0)
    scse = ChannelSpatialSE(16, aggregation=aggregation)
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(scse(x), reference(scse, x)[index])


def test_on_resnet50_it_adds_c2_plus_2_5c_plus_1_per_block():
    with torch.device("meta"):
        model = build_model("resnet50", "scse", 1000, placement="paper")
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert n_params(model) == 25_557_032 + sum(c * c + c * 5 // 2 + 1 for c in widths)


def test_bad_arguments_are_one_line():
    with pytest.raises(ConfigError, match=r"^scse: aggregation='mean'; valid choices: max, add$"):
        ChannelSpatialSE(16, aggregation="mean")
    with pytest.raises(ConfigError, match="^scse: rd_ratio=2"):
        ChannelSpatialSE(16, rd_ratio=2)
