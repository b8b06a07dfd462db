"""Split attention ('splat'): timm's SplitAttn as a conv-site unit, and ResNeSt-50 parameter for parameter."""
import pytest
import timm
import torch

from attn_bench.attention import block_defaults, create_block
from attn_bench.attention.split_attention import SplitAttention
from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed
from attn_bench.models.labels import block_label


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_resnest50_is_resnet50d_with_a_split_attention_conv2_parameter_for_parameter():
    with torch.device("meta"):
        ours = build_model("resnet50d", "splat", 1000, placement="paper")
        resnest = timm.create_model("resnest50d", num_classes=1000)
        on_resnet50 = build_model("resnet50", "splat", 1000, placement="paper")
    assert n_params(ours) == n_params(resnest) == 27_483_240  # the paper's 27.5 M
    deep_stem = (3 * 32 + 32 * 32 + 32 * 64) * 9 + 2 * (32 + 32 + 64) - (3 * 64 * 49 + 2 * 64)
    assert n_params(on_resnet50) == 27_483_240 - deep_stem == 27_464_008


def test_each_unit_computes_resnests_unit_exactly():
    torch.manual_seed(0)
    model = build_model("resnet50d", "splat", 10, placement="paper").eval()
    resnest = timm.create_model("resnest50d", num_classes=10).eval()
    for path in ("layer1.0", "layer2.0", "layer3.1"):  # a stride-1 first block, a strided one (avd), a later one
        ours, theirs = model.get_submodule(path), resnest.get_submodule(path)
        ours.conv2[0].load_state_dict(theirs.conv2.state_dict())
        x = torch.randn(2, ours.conv1.out_channels, 12, 12)
        expected = theirs.avd_last(theirs.conv2(x)) if theirs.avd_last is not None else theirs.conv2(x)
        assert torch.equal(ours.conv2(x), expected), path
    assert type(model.layer2[0].bn2).__name__ == type(model.layer2[0].act2).__name__ == "Identity"


def test_defaults_and_the_label_off_its_network(caplog):
    assert block_defaults("splat") == {"out_channels": None, "stride": 1, "dilation": 1, "radix": 2,
                                       "rd_ratio": 0.25, "avd": True}
    with caplog.at_level("INFO", logger="attn_bench"):
        _, placement = build_placed("resnet50", "splat", 10, placement="paper")
    assert block_label({"attn": "splat"}, None, placement) == "splat (site=conv, not a published network)"
    assert "model=resnet50d model.attn=splat" in caplog.text
    assert create_block("splat", 64, stride=2, avd=False).eval()(torch.randn(1, 64, 7, 8)).shape == (1, 64, 4, 4)


def test_bad_arguments_are_one_line():
    with pytest.raises(ConfigError, match=r"^splat: radix=3 must divide the input channels \(64\)$"):
        SplitAttention(64, radix=3)
    with pytest.raises(ConfigError, match="^splat: avd='yes' must be true or false$"):
        SplitAttention(64, avd="yes")
