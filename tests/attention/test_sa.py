"""Shuffle attention ('sa') against wofmanaf/SA-Net's sa_layer, written out as the official forward."""
import pytest
import torch

from conftest import slot_sees

from attn_bench.attention import block_defaults
from attn_bench.attention.shuffle_attention import ShuffleAttention
from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def reference(sa, x):
    """The official forward, step by step (a view into groups, chunk, two gates, cat, shuffle of 2)."""
    b, c, h, w = x.shape
    x = x.reshape(b * sa.groups, -1, h, w)
    x_0, x_1 = x.chunk(2, dim=1)
    xn = x_0 * torch.sigmoid(sa.cweight * torch.nn.functional.adaptive_avg_pool2d(x_0, 1) + sa.cbias)
    xs = x_1 * torch.sigmoid(sa.sweight * sa.gn(x_1) + sa.sbias)
    out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
    out = out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4)
    return out.reshape(b, -1, h, w)


def test_six_tensors_of_c_over_2g_starting_at_weight_0_bias_1():
    assert block_defaults("sa") == {"groups": 64}
    sa = ShuffleAttention(256)
    assert n_params(sa) == 3 * 256 // 64 and sa.cweight.shape == (1, 2, 1, 1)
    assert not sa.cweight.any() and not sa.sweight.any() and sa.cbias.eq(1).all() and sa.sbias.eq(1).all()
    assert sa.gn.num_groups == sa.gn.num_channels == 2


def test_it_computes_the_official_forward():
    torch.manual_seed(0)
    sa = ShuffleAttention(32, groups=4)
    with torch.no_grad():
        for p in sa.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(3, 32, 5, 6)
    torch.testing.assert_close(sa(x), reference(sa, x))
    # the shuffle interleaves the halves: output channel 1 comes from input channel c/2 = 16's group
    assert not torch.allclose(sa(x)[:, 1], sa(x)[:, 16])


def test_on_resnet50_it_adds_708_parameters_after_bn3():
    with torch.device("meta"):
        model = build_model("resnet50", "sa", 1000, placement="paper")
    assert n_params(model) == 25_557_032 + 3 * (3 * 256 + 4 * 512 + 6 * 1024 + 3 * 2048) // 64 == 25_557_740
    model, placement = build_placed("resnet50", "sa", 10, placement="paper")
    assert placement["site"] == "residual" and "stage_args" not in placement
    assert slot_sees(model, "layer4.1", "bn3") == (ShuffleAttention, True)


def test_groups_whose_halves_do_not_divide_the_width_are_one_line_or_fitted_under_the_paper_placement(caplog):
    with pytest.raises(ConfigError, match=r"^sa: 2 x groups=64 must divide channels=64 "):
        ShuffleAttention(64)
    with caplog.at_level("INFO", logger="attn_bench"):
        _, placement = build_placed("resnet18", "sa", 10, placement="paper", timm_kwargs={"channels": [16, 32, 64, 128]})
    assert placement["stage_args"] == {"groups": {"1": 8, "2": 16, "3": 32, "4": 64}}
    assert "its paper's groups=64 cannot be built in every stage of resnet18" in caplog.text
