"""SpatialTransformer ('stn'): identity at init, the affine warp, the input site."""
import pytest
import torch

from attn_bench.attention import block_defaults
from attn_bench.attention.spatial_transformer import SpatialTransformer
from attn_bench.errors import ConfigError
from attn_bench.metrics.complexity import count_params
from attn_bench.models import build_model, build_placed


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def stn_params(c, loc=20, hidden=50, pool=4):
    return 25 * c * loc + loc + 25 * loc * loc + loc + loc * pool * pool * hidden + hidden + 6 * hidden + 6


def test_defaults():
    assert block_defaults("stn") == {"loc_channels": 20, "loc_hidden": 50, "pool_size": 4, "loc_lr_mult": 0.01}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_loc_lr_mult_is_the_localisation_nets_learning_rate_under_every_optimizer(optimizer, compose_train):
    """One update of the whole network, as training builds it (optimizer, scheduler at step 0): the STN's
    parameters move at 0.01 x the rate the host's move. SGD: exactly lr x 0.01 x gradient; AdamW, whose
    first step moves every weight by about lr whatever its gradient: the largest STN move is 0.01 x the
    host's (a gradient scaling would give 1.0 there)."""
    from attn_bench.models import model_from_config
    from attn_bench.training.optim import build_optimizer, build_scheduler

    cfg = compose_train(["model.attn=stn", f"trainer.optimizer.name={optimizer}", "trainer.optimizer.lr=0.1",
                         "trainer.scheduler.warmup_epochs=0"])
    torch.manual_seed(0)
    model = model_from_config(cfg.model, 10, 32).model
    stn = model.get_submodule("conv1.attn")
    with torch.no_grad():
        stn.theta.weight.normal_(std=0.1)  # so that every localisation parameter gets a gradient
    opt = build_optimizer(model, cfg.trainer.optimizer)
    build_scheduler(opt, cfg.trainer.scheduler, cfg.trainer.epochs, 10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    moved = {n: (p.detach() - before[n]) for n, p in model.named_parameters()}
    if optimizer == "sgd":  # nesterov, first step: the move is lr x (grad + momentum x grad); weight decay off biases
        momentum = cfg.trainer.optimizer.momentum
        for name in ("conv1.attn.theta.bias", "fc.bias"):
            scale = 0.01 if name.startswith("conv1.attn") else 1.0
            torch.testing.assert_close(moved[name], -0.1 * scale * (1 + momentum) * grads[name])
    else:
        stn_move = max(moved[n].abs().max().item() for n in moved if n.startswith("conv1.attn"))
        host_move = max(moved[n].abs().max().item() for n in moved if not n.startswith("conv1.attn"))
        assert stn_move / host_move == pytest.approx(0.01, rel=0.05)


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
        model, placement = build_placed(backbone, "stn", placement="paper")
        assert placement["site"] == "input"
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


def test_a_few_training_steps_reach_every_localisation_parameter_and_stay_finite():
    """The default run's cover for STN's learning (tests/commands/test_train.py, slow): from the identity start
    the zero last layer passes gradient on after its first update, so within a few SGD steps at the default
    recipe's learning rate every localisation parameter moves, the warp leaves the identity, and no loss is NaN."""
    torch.manual_seed(0)
    model = build_model("resnet18", "stn", 10, stem="small", attn_site="input",
                        timm_kwargs={"channels": [16, 32, 64, 128]}).train()
    stn = next(m for m in model.modules() if isinstance(m, SpatialTransformer))
    before = {name: p.detach().clone() for name, p in stn.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    for _ in range(4):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
    moved = {name for name, p in stn.named_parameters() if not torch.equal(p, before[name])}
    assert moved == set(before), set(before) - moved
    with torch.no_grad():
        out = stn.eval()(x[:2])
    assert not torch.allclose(out, x[:2], atol=1e-4)  # no longer the identity warp
