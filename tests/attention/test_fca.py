"""FcaNet's multi-spectral attention ('fca') against cfzd/FcaNet model/layer.py, by the DCT's own properties."""
import math

import pytest
import torch
from conftest import slot_sees

from attn_bench.attention import block_defaults
from attn_bench.attention.fca import TOP_U, TOP_V, FrequencyChannelAttention, dct_filters
from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_the_official_defaults_and_two_bias_free_fcs():
    assert block_defaults("fca") == {"rd_ratio": 1 / 16, "freq_sel": "top16"}
    fca = FrequencyChannelAttention(256)
    assert n_params(fca) == 2 * 256 * 16 and fca.fc1.bias is None and fca.fc2.bias is None
    assert list(zip(TOP_U, TOP_V))[:4] == [(0, 0), (0, 1), (6, 0), (0, 5)]  # the paper's best four


def test_the_basis_is_the_orthonormal_dct_and_frequencies_scale_with_the_map():
    filters = dct_filters(32, 14, 14, 32).flatten(1)  # one channel per frequency, a 14x14 map
    torch.testing.assert_close(filters @ filters.T, torch.eye(32), atol=1e-5, rtol=0)
    # (2, 0) in a 14x14 DCT is the 7x7 space's (1, 0): index 5 of the top list is (1, 0)
    h = torch.arange(14)
    expected = torch.cos(math.pi * 2 * (h + 0.5) / 14) * math.sqrt(2 / 14) / math.sqrt(14)
    torch.testing.assert_close(dct_filters(32, 14, 14, 32)[5], expected[:, None].expand(14, 14), atol=1e-6, rtol=0)


def test_with_the_dc_frequency_alone_it_is_se_without_biases_on_a_scaled_mean():
    torch.manual_seed(0)
    fca = FrequencyChannelAttention(32, freq_sel="top1")
    x = torch.randn(2, 32, 14, 14)
    gate = torch.sigmoid(fca.fc2(torch.relu(fca.fc1(x.mean(dim=(2, 3)) * 14))))  # DC = sum / sqrt(14 * 14)
    torch.testing.assert_close(fca(x), x * gate[:, :, None, None])


def test_the_dct_is_the_maps_size_at_224_px_and_a_cifar_map_is_pooled_to_it():
    fca = FrequencyChannelAttention(64)
    assert [fca.dct_size(s, s) for s in (56, 28, 14, 7)] == [(56, 56), (28, 28), (14, 14), (7, 7)]  # official c2wh
    assert [fca.dct_size(s, s) for s in (32, 16, 8, 4)] == [(28, 28), (14, 14), (7, 7), (7, 7)]
    x = torch.randn(2, 64, 32, 32)
    pooled = torch.nn.functional.adaptive_avg_pool2d(x, (28, 28))
    torch.testing.assert_close(fca.squeeze(x), (pooled * dct_filters(64, 28, 28, 16)).sum(dim=(2, 3)))


def test_fcanet50_has_its_papers_size_and_the_block_sits_after_bn3():
    with torch.device("meta"):
        model = build_model("resnet50", "fca", 1000, placement="paper")
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    assert n_params(model) == 25_557_032 + sum(2 * c * (c // 16) for c in widths) == 28_071_976  # "28.07M"
    model, placement = build_placed("resnet50", "fca", 10, placement="paper")
    assert placement["site"] == "residual"
    assert slot_sees(model, "layer2.3", "bn3") == (FrequencyChannelAttention, True)


def test_bad_arguments_are_one_line():
    with pytest.raises(ConfigError, match=r"^fca: freq_sel='low16'; valid choices: top1, top2"):
        FrequencyChannelAttention(64, freq_sel="low16")
    with pytest.raises(ConfigError, match=r"^fca: channels=24 must be a multiple of the 16 frequencies of top16$"):
        FrequencyChannelAttention(24)


def test_the_basis_for_a_probe_on_the_meta_device_is_made_there_not_in_memory():
    """The build-time probe runs a 1,024-px image on the meta device: the 1022 x 1022 DCT is a shape there
    (it was 16.7 million Python cosines, 20 s of every FcaNet run, before the basis was built with tensors)."""
    fca = FrequencyChannelAttention(64)
    with torch.device("meta"):
        x = torch.empty(1, 64, 1024, 1024)
    filters = fca.filters(x, fca.dct_size(1024, 1024))
    assert filters.device.type == "meta" and filters.shape == (64, 1022, 1022)
