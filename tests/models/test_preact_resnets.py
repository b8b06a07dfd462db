"""Pre-activation ResNet-164 and the Wide ResNets: the published sizes, the official shortcut, every site."""
import pytest
import timm
import torch
from torch import nn

from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed
from attn_bench.models.preact_resnets import PreActBasicBlock, PreActBottleneck


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bn(c: int) -> int:
    return 2 * c


def wrn_by_hand(n: int, k: int, classes: int) -> int:
    """Stem, 2 n basic units a stage (BN + 3x3 conv each), a 1x1 shortcut per stage, final BN, classifier."""
    total, c_in = 27 * 16, 16
    for width in (16 * k, 32 * k, 64 * k):
        for unit in range(n):
            total += bn(c_in) + 9 * c_in * width + bn(width) + 9 * width * width
            total += c_in * width if unit == 0 else 0
            c_in = width
    return total + bn(c_in) + c_in * classes + classes


def preact164_by_hand(classes: int) -> int:
    total, c_in = 27 * 16, 16
    for planes in (16, 32, 64):
        for unit in range(18):
            total += bn(c_in) + c_in * planes + bn(planes) + 9 * planes * planes + bn(planes) + planes * 4 * planes
            total += c_in * 4 * planes if unit == 0 else 0
            c_in = 4 * planes
    return total + bn(c_in) + c_in * classes + classes


# name -> (the paper's figure, exact count with 10 classes, by hand for 10 / 100 classes, depth as the paper counts)
PUBLISHED = {
    "preact_resnet164_cifar": ("1.7M", 1_703_258, preact164_by_hand, 164),  # He et al. 2016b, Table 3
    "wrn16_8": ("11.0M", 10_961_370, lambda c: wrn_by_hand(2, 8, c), 16),  # Zagoruyko & Komodakis, Table 4
    "wrn28_10": ("36.5M", 36_479_194, lambda c: wrn_by_hand(4, 10, c), 28),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_each_network_has_its_papers_size_and_depth(name):
    published, exact, by_hand, depth = PUBLISHED[name]
    with torch.device("meta"):
        ten, hundred = (timm.create_model(name, num_classes=c) for c in (10, 100))
    assert n_params(ten) == by_hand(10) == exact and f"{exact / 1e6:.1f}M" == published
    assert n_params(hundred) == by_hand(100)
    convs = [m for m in ten.modules() if isinstance(m, nn.Conv2d)]
    shortcuts = [m for m in convs if m.kernel_size == (1, 1) and m in [b.shortcut for b in _units(ten)]]
    if name.startswith("wrn"):  # WRN-d counts the stem, the units' convs and the three 1x1 shortcuts
        assert len(convs) == depth and len(shortcuts) == 3
    else:  # ResNet-164 counts the stem, the units' convs and the classifier, not the shortcuts
        assert len(convs) - len(shortcuts) + 1 == depth


def _units(model):
    return [b for stage in (model.layer1, model.layer2, model.layer3) for b in stage]


@pytest.mark.parametrize("name, kind", [("preact_resnet164_cifar", PreActBottleneck), ("wrn16_8", PreActBasicBlock)])
def test_where_the_shape_changes_both_branches_start_from_the_pre_activated_input(name, kind):
    torch.manual_seed(0)
    model = build_model(name, "none", 10, stem="small").eval()
    unit = model.layer2[0]
    assert type(unit) is kind and unit.shortcut is not None and model.layer2[1].shortcut is None
    seen = {}
    unit.act1.register_forward_hook(lambda m, i, o: seen.update(pre=o.clone()))
    unit.shortcut.register_forward_hook(lambda m, i, o: seen.update(shortcut_in=i[0]))
    unit.conv1.register_forward_hook(lambda m, i, o: seen.update(conv_in=i[0]))
    model(torch.randn(1, 3, 32, 32))
    assert torch.equal(seen["shortcut_in"], seen["pre"]) and torch.equal(seen["conv_in"], seen["pre"])


@pytest.mark.parametrize("attn, site, placed", [
    ("se", "residual", 54), ("simam", "mid", 54), ("bam", "stage_end", 2), ("nl", "trunk", 27), ("stn", "input", 1),
])
def test_every_site_but_conv_works_on_preact_resnet164(attn, site, placed):
    model, placement = build_placed("preact_resnet164_cifar", attn, 10, stem="small", placement="paper")
    assert placement["site"] == site and len(model.attn_bench_slots) == placed
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_se_sits_at_the_end_of_the_residual_branch_and_nl_after_the_addition():
    model = build_model("wrn16_8", "se", 10, stem="small", placement="uniform").eval()
    unit, seen = model.layer3[1], {}
    unit.conv2.register_forward_hook(lambda m, i, o: seen.update(conv2=o))
    unit.se.register_forward_hook(lambda m, i, o: seen.update(se_in=i[0]))
    model(torch.randn(1, 3, 32, 32))
    assert torch.equal(seen["conv2"], seen["se_in"])
    trunk = build_model("wrn16_8", "nl", 10, stem="small", placement="paper").eval()
    unit, seen = trunk.layer3[1], {}
    unit.register_forward_hook(lambda m, i, o: seen.update(out=o))
    unit.merge.attn.register_forward_hook(lambda m, i, o: seen.update(nl_out=o))
    trunk(torch.randn(1, 3, 32, 32))
    assert torch.equal(seen["out"], seen["nl_out"])


def test_sk_has_no_conv_site_here_and_says_so_in_one_line():
    with pytest.raises(ConfigError, match="site 'conv' does not exist in wrn16_8"):
        build_model("wrn16_8", "sk", 10, stem="small", placement="paper")


def test_wrn_dropout_is_between_the_two_convs_and_trains():
    model = build_model("wrn16_8", "eca", 10, stem="small", timm_kwargs={"dropout": 0.3})
    unit = model.layer1[0]
    assert isinstance(unit.dropout, nn.Dropout) and unit.dropout.p == 0.3
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    torch.nn.functional.cross_entropy(model.train()(x), y).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ConfigError, match="rejected model.timm_kwargs"):
        build_model("preact_resnet164_cifar", "none", 10, stem="small", timm_kwargs={"dropout": 0.3})
