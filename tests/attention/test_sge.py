"""SGE ('sge') against implus/PytorchInsight's SpatialGroupEnhance, written out from the paper's Eq. 1-5."""
import pytest
import torch

from conftest import slot_sees

from attn_bench.attention import block_defaults
from attn_bench.attention.sge import SpatialGroupEnhance
from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def reference(x, weight, bias, groups):
    """The official forward, step by step: view as (N*G, C/G, H, W), similarity to the group mean, normalise
    with the unbiased std + 1e-5, scale and shift per group, sigmoid, rescale."""
    n, c, h, w = x.shape
    x = x.view(n * groups, -1, h, w)
    xn = (x * x.mean(dim=(2, 3), keepdim=True)).sum(dim=1, keepdim=True)
    t = xn.view(n * groups, -1)
    t = t - t.mean(dim=1, keepdim=True)
    t = t / (t.std(dim=1, keepdim=True) + 1e-5)
    t = t.view(n, groups, h, w) * weight + bias
    return (x * torch.sigmoid(t.view(n * groups, 1, h, w))).view(n, c, h, w)


def test_two_parameters_per_group_starting_at_weight_0_bias_1():
    assert block_defaults("sge") == {"groups": 64}
    sge = SpatialGroupEnhance(256)
    assert n_params(sge) == 2 * 64 and not sge.weight.any() and sge.bias.eq(1).all()
    x = torch.randn(2, 256, 5, 5)
    torch.testing.assert_close(sge(x), x * torch.sigmoid(torch.tensor(1.0)))  # every gate sigmoid(1) at init


def test_it_computes_the_official_forward():
    torch.manual_seed(0)
    sge = SpatialGroupEnhance(32, groups=4)
    with torch.no_grad():
        sge.weight.copy_(torch.randn(1, 4, 1, 1))
        sge.bias.copy_(torch.randn(1, 4, 1, 1))
    x = torch.randn(3, 32, 6, 7)
    out = sge(x)
    torch.testing.assert_close(out, reference(x, sge.weight, sge.bias, 4))
    assert not torch.allclose(out, x * torch.sigmoid(sge.bias).repeat_interleave(8, dim=1))  # the spatial term acts


@pytest.mark.parametrize("backbone, total", [
    ("resnet50", 25_557_032 + 16 * 128),  # the official README's SGE-ResNet50 25.56M
    ("resnet18", 11_689_512 + 8 * 128),
])
def test_every_block_adds_two_parameters_per_group(backbone, total):
    with torch.device("meta"):
        model = build_model(backbone, "sge", 1000, placement="paper")
    assert n_params(model) == total
    assert f"{n_params(model) / 1e6:.2f}M" == ("25.56M" if backbone == "resnet50" else "11.69M")


def test_it_sits_after_bn3_before_the_addition_as_in_resnet_sge():
    model, placement = build_placed("resnet50", "sge", 10, placement="paper")
    assert (placement["site"], placement["stages"], placement["args"]) == ("residual", "all", {})
    assert slot_sees(model, "layer3.2", "bn3") == (SpatialGroupEnhance, True)


def test_groups_that_do_not_divide_the_channels_are_one_line():
    with pytest.raises(ConfigError, match=r"^sge: groups=64 must divide channels=48 \(set model.attn_args.groups "
                                          r"to a divisor of every placed block's width\)$"):
        SpatialGroupEnhance(48)
    with pytest.raises(ConfigError, match="^sge: groups=0 must be a positive integer"):
        SpatialGroupEnhance(64, groups=0)


def test_a_single_position_or_a_zero_branch_stays_finite():
    sge = SpatialGroupEnhance(8, groups=2)
    with torch.no_grad():
        sge.weight.fill_(1.0)
    assert torch.isfinite(sge(torch.randn(2, 8, 1, 1))).all()
    x = torch.zeros(3, 8, 5, 5, requires_grad=True)  # a timm residual branch at step 0 (zero_init_last)
    (sge(x) * torch.randn(3, 8, 5, 5)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in sge.parameters()) and torch.isfinite(x.grad).all()


def test_the_doctor_says_a_width_sge_refuses_and_fails_only_when_it_refuses_every_width():
    from attn_bench.commands.check_block import run_checks

    (built,) = [c for c in run_checks("sge", {}, timing=False) if c.name.startswith("constructs")]
    assert built.passed and "C=2048: 128 params" in built.detail and "C=144: refused (sge: groups=64" in built.detail
    (built,) = [c for c in run_checks("sge", {"groups": 7}, timing=False) if c.name.startswith("constructs")]
    assert built.passed is False and built.detail.count("refused") == 4


def test_on_narrow_stages_the_paper_placement_takes_the_most_groups_that_divide_and_says_so(caplog):
    """The default model's 16- and 32-channel stages cannot hold 64 groups: 16 and 32 there, logged and
    recorded (row label 'sge (groups by stage 16/32/64/64)'); an explicit groups is the run's own."""
    from attn_bench.models.labels import block_label

    narrow = {"channels": [16, 32, 64, 128]}  # model=resnet18_tiny, the default
    with caplog.at_level("INFO", logger="attn_bench"):
        model, placement = build_placed("resnet18", "sge", 10, placement="paper", timm_kwargs=narrow)
    assert "its paper's groups=64 cannot be built in every stage of resnet18; 16-channel stage 1: groups=16" in caplog.text
    assert placement["stage_args"] == {"groups": {"1": 16, "2": 32, "3": 64, "4": 64}}
    assert [m.groups for m in model.modules() if isinstance(m, SpatialGroupEnhance)] == [16] * 2 + [32] * 2 + [64] * 4
    assert block_label({"attn": "sge"}, None, placement) == "sge (groups by stage 16/32/64/64)"
    _, own = build_placed("resnet18", "sge", 10, placement="paper", timm_kwargs=narrow, attn_args={"groups": 8})
    assert own["args"] == {"groups": 8} and "stage_args" not in own
    with torch.device("meta"):
        _, resnet50 = build_placed("resnet50", "sge", 10, placement="paper")
    assert "stage_args" not in resnet50  # every stage takes the paper's 64
