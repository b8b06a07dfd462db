"""SelectiveKernel ('sk') against SKNet's paper and official prototxt (implus/SKNet, sknet50.prototxt)."""
import pytest
import torch

from attn_bench.attention import block_defaults, create_block
from attn_bench.attention.selective_kernel import SelectiveKernel
from attn_bench.errors import ConfigError
from attn_bench.metrics.complexity import count_params
from attn_bench.models import build_model, build_placed


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def sk_params(c_in, c, groups=32, m=2, r=16, min_channels=32):
    d = max(c // r, min_channels)
    return m * (c_in // groups * 9 * c + 2 * c) + c * d + 2 * d + d * m * c


def test_defaults_are_the_papers():
    assert block_defaults("sk") == {"out_channels": None, "stride": 1, "dilation": 1, "branches": 2, "groups": 32,
                                    "rd_ratio": 1 / 16, "min_channels": 32, "act_layer": "relu"}


@pytest.mark.parametrize("c_in, c, expected", [(128, 128, 22_080), (1024, 1024, 790_656), (256, 512, 124_992)])
def test_param_count_matches_formula(c_in, c, expected):
    assert sk_params(c_in, c) == expected
    assert n_params(SelectiveKernel(c_in, out_channels=c)) == expected


def test_hidden_width_is_max_of_c_over_r_and_l():
    """Official B_fc1 widths: 32, 32, 32, 64 for C = 128, 256, 512, 1024."""
    assert [SelectiveKernel(c).fuse.conv.out_channels for c in (128, 256, 512, 1024)] == [32, 32, 32, 64]


def test_second_branch_is_a_dilated_3x3_not_a_5x5():
    sk = SelectiveKernel(64, stride=2)
    convs = [path.conv for path in sk.paths]
    assert [(c.kernel_size, c.dilation, c.padding, c.stride, c.groups) for c in convs] == [
        ((3, 3), (1, 1), (1, 1), (2, 2), 32), ((3, 3), (2, 2), (2, 2), (2, 2), 32)]
    assert all(c.bias is None for c in convs) and sk.select.bias is None and sk.fuse.conv.bias is None


def test_branch_weights_are_a_softmax_over_branches_per_channel():
    sk = SelectiveKernel(64, branches=3).eval()
    with torch.no_grad():
        sk.select.weight.normal_(std=1.0)
        sk.fuse.bn.bias.fill_(1.0)  # z > 0 after the ReLU, so the logits differ
        paths = torch.stack([p(torch.randn(2, 64, 6, 5)) for p in sk.paths], dim=1)
        weights = sk.attention(paths)
    assert weights.shape == (2, 3, 64, 1, 1)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2, 64, 1, 1))
    assert weights.min() > 0 and weights.std() > 0.05  # really weighting, not uniform


def test_select_layout_is_branch_major_as_the_official_reshape():
    """Channel m * C + c of the select conv is the logit of branch m for channel c: push the first C
    logits up and the unit outputs branch 0 exactly."""
    sk = SelectiveKernel(64).eval()
    with torch.no_grad():
        sk.select.weight.zero_()
        sk.fuse.bn.bias.fill_(1.0)  # z > 0 after the ReLU
        sk.select.weight[:64].fill_(100.0)  # the rows of branch 0
        x = torch.randn(2, 64, 6, 5)
        torch.testing.assert_close(sk(x), sk.paths[0](x))


def test_sknet50_is_resnext50_with_sk_units_and_has_the_papers_27_5m():
    """Paper Table 2: SKNet-50 27.5M; the official prototxt counts to 27,479,784; ResNeXt-50 32x4d 25,028,904."""
    plain = build_model("resnext50_32x4d", "none")
    model, placement = build_placed("resnext50_32x4d", "sk", placement="paper")
    assert count_params(plain)["params"] == 25_028_904
    assert count_params(model)["params"] == 27_479_784
    assert placement["site"] == "conv"
    block = model.layer2[0]
    assert isinstance(block.conv2, SelectiveKernel) and type(block.bn2).__name__ == "Identity"
    assert block.conv2.paths[0].conv.stride == (2, 2) and block.conv2.paths[0].conv.in_channels == 256
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_sk_goes_only_to_the_conv_site():
    with pytest.raises(ConfigError, match=r"^attention 'sk' cannot work at site 'residual'; its sites: conv$"):
        build_model("resnet50", "sk", attn_site="residual")
    with pytest.raises(ConfigError, match="its paper's site 'conv' does not exist in mobilenetv2_100"):
        build_model("mobilenetv2_100", "sk", placement="paper")
    assert build_placed("resnet18", "sk", placement="uniform").placement["site"] == "conv"


def test_the_conv_geometry_comes_from_the_site():
    with pytest.raises(ConfigError, match="model.attn_args stride: set by the 'conv' site"):
        build_model("resnet18", "sk", attn_args={"stride": 1})


def test_bad_groups_is_one_line():
    with pytest.raises(ConfigError) as err:
        create_block("sk", 48)
    assert str(err.value).startswith("sk: groups=32 must divide the input (48)") and "\n" not in str(err.value)


def test_on_the_default_models_16_channel_convs_the_paper_placement_fits_the_groups_and_says_so(caplog):
    """32 groups do not divide the default model's 16-channel convs: 16 there, logged and in the row label,
    so a sweep over every block runs on the default model; SKNet-50 keeps G = 32 everywhere."""
    from attn_bench.models.labels import block_label

    with caplog.at_level("INFO", logger="attn_bench"):
        model, placement = build_placed("resnet18", "sk", 10, stem="small", placement="paper",
                                        timm_kwargs={"channels": [16, 32, 64, 128]})
    assert placement["stage_args"] == {"groups": {"1": 16, "2": 16, "3": 32, "4": 32}}
    assert "its paper's groups=32 cannot be built in every stage of resnet18" in caplog.text
    assert block_label({"attn": "sk"}, None, placement) == "sk (site=conv, not a published network, groups by stage 16/16/32/32)"
    assert model.layer2[0].conv1.paths[0].conv.groups == 16 and model.layer3[1].conv1.paths[0].conv.groups == 32
    with torch.device("meta"):
        _, sknet = build_placed("resnext50_32x4d", "sk", 1000, placement="paper")
    assert "stage_args" not in sknet
