"""SpatialTransformer ('stn'): identity at init, the affine warp, the input site."""
import pytest
import torch

from attn_bench.attention import block_defaults
from attn_bench.attention.spatial_transformer import SpatialTransformer
from attn_bench.errors import ConfigError
from attn_bench.metrics.complexity import count_params
from attn_bench.models import build_model


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def stn_params(c, loc=20, hidden=50, pool=4):
    return 25 * c * loc + loc + 25 * loc * loc + loc + loc * pool * pool * hidden + hidden + 6 * hidden + 6


def test_defaults():
    assert block_defaults("stn") == {"loc_channels": 20, "loc_hidden": 50, "pool_size": 4, "loc_lr_mult": 0.01}


def test_loc_lr_mult_scales_the_localisation_gradients_and_nothing_else():
    x = torch.randn(2, 3, 16, 16)
    grads, outputs = {}, {}
    for mult in (1.0, 0.01):
        torch.manual_seed(0)
        block = SpatialTransformer(3, loc_lr_mult=mult)
        with torch.no_grad():
            block.theta.weight.normal_(std=0.1)  # so that the gradient reaches the conv layers too
        out = block(x)
        (out * torch.linspace(-1, 1, 16)).sum().backward()
        outputs[mult], grads[mult] = out.detach(), {n: p.grad.clone() for n, p in block.named_parameters()}
    assert torch.equal(outputs[1.0], outputs[0.01])  # the forward pass is the same
    for name, grad in grads[1.0].items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[0.01][name], 0.01 * grad, rtol=1e-4, atol=1e-6 * grad.abs().max().item())


@pytest.mark.parametrize("c, kwargs", [(3, {}), (256, {}), (64, {"loc_channels": 8, "loc_hidden": 32, "pool_size": 2})])
def test_param_count_matches_formula(c, kwargs):
    assert n_params(SpatialTransformer(c, **kwargs)) == stn_params(c, *(kwargs.get(k, d) for k, d in (
        ("loc_channels", 20), ("loc_hidden", 50), ("pool_size", 4))))
    assert stn_params(3) == 27_896


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 64, 7, 5), (1, 8, 1, 1)])
def test_identity_at_initialisation(shape):
    block = SpatialTransformer(shape[1]).train()
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x, rtol=0, atol=1e-5)
        assert torch.equal(block.transform(x), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(shape[0], 2, 3))


def test_a_known_translation_moves_a_known_pixel():
    """theta = [[1, 0, 2/W], [0, 1, 0]] samples x + one pixel: the output at column j is the input at j + 1."""
    block = SpatialTransformer(1).eval()
    h, w = 8, 10
    with torch.no_grad():
        block.theta.bias.copy_(torch.tensor([1.0, 0, 2 / w, 0, 1.0, 0]))
        image = torch.zeros(1, 1, h, w)
        image[0, 0, 3, 6] = 1.0
        out = block(image)
    assert out[0, 0, 3, 5].item() == pytest.approx(1.0, abs=1e-5)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5) and out[0, 0, 3, 6].abs() < 1e-5


def test_a_known_zoom_scales_about_the_centre():
    """theta = 0.5 * I: the output shows the central half of the input, twice as large."""
    block = SpatialTransformer(1).eval()
    with torch.no_grad():
        block.theta.bias.copy_(torch.tensor([0.5, 0, 0, 0, 0.5, 0]))
        ramp = torch.linspace(-1, 1, 16).expand(1, 1, 16, 16).contiguous()  # x coordinate as the value
        out = block(ramp)
    # column j of the output samples x = 0.5 * ((2j + 1) / 16 - 1); the ramp is linear, so exactly that
    expected = 0.5 * ((2 * torch.arange(16) + 1) / 16 - 1) * 16 / 15
    torch.testing.assert_close(out[0, 0, 5], expected, rtol=0, atol=1e-5)


def test_input_site_sees_the_image_on_resnets_and_mobilenets():
    for backbone, stem in (("resnet50", "conv1"), ("mobilenetv2_100", "conv_stem")):
        model = build_model(backbone, "stn", placement="paper")
        assert model.attn_bench_placement["site"] == "input"
        stn = model.get_submodule(f"{stem}.attn")
        assert isinstance(stn, SpatialTransformer)
        assert count_params(model)["params"] - count_params(build_model(backbone, "none"))["params"] == 27_896
        seen = []
        stn.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.shape)))
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, 48, 40))
        assert seen == [(torch.Size([1, 3, 48, 40]), torch.Size([1, 3, 48, 40]))]


def test_stn_also_works_on_feature_maps_at_stage_end():
    model = build_model("resnet18", "stn", attn_site="stage_end", attn_stages=[2])
    assert isinstance(model.layer2.attn, SpatialTransformer) and model.layer2.attn.localization.conv1.in_channels == 128


def test_sites_a_block_cannot_work_at_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^attention 'stn' cannot work at site 'residual'; its sites: input, stage_end, trunk$"):
        build_model("resnet18", "stn", attn_site="residual")
    with pytest.raises(ConfigError, match=r"^attention 'se' cannot work at site 'input'; its sites: residual, mid, stage_end, trunk$"):
        build_model("resnet18", "se", attn_site="input")
