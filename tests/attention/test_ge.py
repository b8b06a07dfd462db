"""Gather-Excite ('ge') against hujie-frank/GENet's prototxts and extent-8 schemas, by hand."""
import pytest
import torch
import torch.nn.functional as F

from conftest import _compose_train, slot_sees

from attn_bench.attention import block_defaults, create_block
from attn_bench.attention.gather_excite import GatherExcite
from attn_bench.errors import ConfigError
from attn_bench.models import build_placed
from attn_bench.models.build import model_from_config

RESNET50 = 25_557_032
WIDTHS = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3  # ResNet-50's bottleneck widths
MAPS = [56] * 3 + [28] * 4 + [14] * 6 + [7] * 3  # their map sizes at 224 px (the prototxts' kernel sizes)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_theta_minus_is_the_parameter_free_mean_gate_of_rn50_gepf():
    assert block_defaults("ge") == {"variant": "theta-", "extent": 0, "rd_ratio": 1 / 16, "feat_size": None}
    ge = GatherExcite(32)
    assert n_params(ge) == 0
    x = torch.randn(2, 32, 5, 7)
    torch.testing.assert_close(ge(x), x * torch.sigmoid(x.mean((2, 3), keepdim=True)))


def _windowed_mean(x, extent):
    """GEPF8's gather by loops: the mean of the map's pixels in a (2e-1)-wide window every e pixels."""
    height, width = x.shape[-2:]
    rows, cols = -(-height // extent), -(-width // extent)
    out = torch.empty(*x.shape[:2], rows, cols)
    for i in range(rows):
        for j in range(cols):
            r0, c0 = max(i * extent - (extent - 1), 0), max(j * extent - (extent - 1), 0)
            out[..., i, j] = x[..., r0:i * extent + extent, c0:j * extent + extent].mean((-2, -1))
    return out


@pytest.mark.parametrize("extent", [2, 4, 8])
def test_theta_minus_at_an_extent_pools_with_the_schemas_window_and_interpolates_back(extent):
    x = torch.randn(2, 8, 17, 12)
    g = _windowed_mean(x, extent)
    assert g.shape[-2:] == (-(-17 // extent), -(-12 // extent))  # the figure's ceil(H/e) x ceil(W/e)
    rows = (torch.arange(17) * g.shape[-2]) // 17  # nearest-neighbour: output pixel -> its pooled cell
    cols = (torch.arange(12) * g.shape[-1]) // 12
    expected = x * torch.sigmoid(g[..., rows[:, None], cols[None, :]])
    torch.testing.assert_close(GatherExcite(8, extent=extent)(x), expected)


def test_theta_global_is_a_depthwise_kernel_the_size_of_the_map_then_bn_as_rn50_gep():
    c, h, w = 16, 6, 5
    ge = GatherExcite(c, variant="theta", feat_size=(h, w)).eval()
    conv, bn = ge.gather
    assert conv.weight.shape == (c, 1, h, w) and conv.bias is None and conv.padding == (0, 0)
    assert n_params(ge) == c * h * w + 2 * c
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.1, 0.1), bn.running_var.uniform_(0.5, 2)
    x = torch.randn(3, c, h, w)
    pooled = (x * conv.weight[:, 0]).sum((2, 3), keepdim=True)  # one weighted sum over the whole map
    gathered = (pooled - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
    gathered = gathered * bn.weight[:, None, None] + bn.bias[:, None, None]
    torch.testing.assert_close(ge(x), x * torch.sigmoid(gathered))
    std = conv.weight.std().item()  # msra: fan-in h x w
    assert std == pytest.approx((2 / (h * w)) ** 0.5, rel=0.2)


def test_theta_plus_adds_the_relu_and_the_excite_mlp_of_rn50_gepp():
    c = 64
    torch.manual_seed(0)
    ge = GatherExcite(c, variant="theta+", feat_size=4).eval()
    down, up = ge.mlp[1], ge.mlp[3]
    assert (down.in_channels, down.out_channels, up.out_channels) == (c, c // 16, c)
    assert n_params(ge) == c * 16 + 2 * c + (c * 4 + 4) + (4 * c + c)
    assert down.weight.std().item() == pytest.approx(0.01, rel=0.2) and not down.bias.any() and not up.bias.any()
    with torch.no_grad():
        for p in (down.bias, up.bias):
            p.normal_()
    x = torch.randn(2, c, 4, 4)
    g = F.relu(ge.gather(x))
    g = F.conv2d(F.relu(F.conv2d(g, down.weight, down.bias)), up.weight, up.bias)
    torch.testing.assert_close(ge(x), x * torch.sigmoid(g))


def test_theta_at_an_extent_is_log2_e_strided_depthwise_convs_with_bn_and_relu_between():
    ge = GatherExcite(8, variant="theta", extent=8)
    kinds = [type(m).__name__ for m in ge.gather]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d"]
    assert all(m.stride == (2, 2) and m.kernel_size == (3, 3) and m.groups == 8 for m in ge.gather if hasattr(m, "stride"))
    assert n_params(ge) == 3 * (8 * 9 + 2 * 8)
    x = torch.randn(2, 8, 20, 20)
    assert ge.gather(x).shape[-2:] == (3, 3) and ge(x).shape == x.shape  # ceil(20 / 8), as GEP8's schema


def test_bad_settings_are_one_line():
    with pytest.raises(ConfigError, match="^ge: variant='theta' with extent=0 \\(global\\) needs feat_size"):
        GatherExcite(8, variant="theta")
    with pytest.raises(ConfigError, match="^ge: variant='thetaplus'; valid choices: theta-, theta, theta\\+$"):
        GatherExcite(8, variant="thetaplus")
    with pytest.raises(ConfigError, match="extent=3 must be 0 \\(global\\) or a power of two"):
        GatherExcite(8, extent=3)
    with pytest.raises(ConfigError, match="released with the global gather only"):
        GatherExcite(8, variant="theta+", extent=4)
    with pytest.raises(ConfigError, match="rd_ratio is the width of theta\\+'s excite MLP"):
        create_block("ge", 8, rd_ratio=0.25)
    with pytest.raises(ConfigError, match="^ge: built for a 4x4 map \\(feat_size\\), got 5x5"):
        GatherExcite(8, variant="theta", feat_size=4)(torch.randn(1, 8, 5, 5))


def test_resnet50_counts_from_the_prototxts_at_224_px():
    counts = {}
    for variant in ("theta-", "theta", "theta+"):
        with torch.device("meta"):
            model, placement = build_placed("resnet50", "ge", 1000, placement="paper", attn_args={"variant": variant},
                                            img_size=224)
        counts[variant] = n_params(model)
        assert (placement["site"], placement["stages"]) == ("residual", "all")
    gather = sum(c * m * m + 2 * c for c, m in zip(WIDTHS, MAPS))
    mlp = sum(c * (c // 16) + c // 16 + (c // 16) * c + c for c in WIDTHS)
    assert counts == {"theta-": RESNET50, "theta": RESNET50 + gather, "theta+": RESNET50 + gather + mlp}
    assert (gather, counts["theta"], counts["theta+"]) == (5_549_568, 31_106_600, 33_637_592)


def test_a_run_gives_each_slot_the_map_it_sees_and_refuses_its_own_feat_size():
    cfg = _compose_train(["model.attn=ge", "+model.attn_args.variant=theta"])
    model = model_from_config(cfg.model, 10, 32).model
    kernels = [model.get_submodule(f"layer{s}.0.se").gather[0].kernel_size for s in (1, 2, 3, 4)]
    assert kernels == [(32, 32), (16, 16), (8, 8), (4, 4)]  # the small stem on 32 px: 32/16/8/4
    assert slot_sees(model, "layer2.1", "bn2", size=32) == (GatherExcite, True)
    torch.nn.init.ones_(model.layer3[1].bn2.weight)  # timm zero-initialises the branch's last BN
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.layer3[1].se.gather[0].weight.grad.abs().sum() > 0
    cfg = _compose_train(["model.attn=ge", "+model.attn_args.variant=theta", "+model.attn_args.feat_size=8"])
    with pytest.raises(ConfigError, match="^model.attn_args.feat_size: ge gets the map size at each slot from img_size"):
        model_from_config(cfg.model, 10, 32)


def test_your_own_block_with_a_feat_size_argument_gets_the_map_at_its_slot(tmp_path):
    (tmp_path / "sized.py").write_text(
        "from torch import nn\n\n"
        "class Sized(nn.Identity):\n"
        "    def __init__(self, channels, feat_size=None):\n"
        "        super().__init__()\n"
        "        self.feat_size = tuple(feat_size)\n")
    model, _ = build_placed("resnet18", f"{tmp_path / 'sized.py'}:Sized", 10, stem="small", img_size=40)
    assert [model.get_submodule(f"layer{s}.1.se").feat_size for s in (1, 2, 3, 4)] == [(40, 40), (20, 20), (10, 10), (5, 5)]
