"""SRM ('srm') against the official hyunjaelee410/style-based-recalibration-module SRMLayer, by hand."""
import pytest
import torch

from attn_bench.attention import block_defaults
from attn_bench.attention.srm import StyleRecalibration
from attn_bench.errors import ConfigError
from attn_bench.models import build_model


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_four_parameters_per_channel_and_no_arguments():
    assert block_defaults("srm") == {}
    srm = StyleRecalibration(64)
    assert n_params(srm) == 4 * 64 and srm.cfc.shape == (64, 2)
    with pytest.raises(ConfigError, match="^srm: channels="):
        StyleRecalibration(0)


@pytest.mark.parametrize("backbone, stem, classes, timm_kwargs, total", [
    ("resnet50", "imagenet", 1000, None, 25_557_032 + 60_416),  # 4 x (3x256 + 4x512 + 6x1024 + 3x2048)
    ("resnet32_cifar", "small", 10, {"shortcut": "B"}, 466_906 + 2_240),  # 4 x 5 x (16 + 32 + 64)
])
def test_in_every_block_it_adds_four_parameters_per_channel(backbone, stem, classes, timm_kwargs, total):
    with torch.device("meta"):
        model = build_model(backbone, "srm", classes, stem=stem, placement="paper", timm_kwargs=timm_kwargs)
    assert n_params(model) == total


def test_the_gate_is_sigmoid_of_bn_of_the_weighted_mean_and_unbiased_std():
    torch.manual_seed(0)
    srm = StyleRecalibration(3)
    with torch.no_grad():
        srm.cfc.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, -1.0]]))
        srm.bn.running_mean.copy_(torch.tensor([0.1, 0.2, 0.3]))
        srm.bn.running_var.copy_(torch.tensor([1.0, 4.0, 0.25]))
        srm.bn.weight.copy_(torch.tensor([1.0, 0.5, 2.0]))
        srm.bn.bias.copy_(torch.tensor([0.0, 0.1, -0.2]))
    srm.eval()
    x = torch.randn(2, 3, 4, 5)
    mean = x.mean(dim=(2, 3))
    std = x.flatten(2).std(dim=2)  # torch's default: unbiased, as the official code calls it
    z = torch.stack([mean[:, 0], 2 * std[:, 1], 0.5 * mean[:, 2] - std[:, 2]], dim=1)
    z_hat = (z - srm.bn.running_mean) / torch.sqrt(srm.bn.running_var + 1e-5) * srm.bn.weight + srm.bn.bias
    torch.testing.assert_close(srm(x), x * torch.sigmoid(z_hat)[:, :, None, None])


def test_at_the_official_initialisation_every_gate_is_one_half():
    srm = StyleRecalibration(8).eval()
    assert not srm.cfc.any()
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(srm(x), x * 0.5, rtol=0, atol=0)


def test_a_single_position_gives_std_zero_not_nan():
    srm = StyleRecalibration(4).eval()
    with torch.no_grad():
        srm.cfc.fill_(1.0)
    x = torch.randn(2, 4, 1, 1)
    assert torch.isfinite(srm(x)).all()
    torch.testing.assert_close(srm.style(x)[:, :, 1], torch.full((2, 4), 1e-6))


def test_a_zero_residual_branch_as_timm_starts_it_gives_finite_gradients():
    srm = StyleRecalibration(4).train()
    x = torch.zeros(3, 4, 5, 5, requires_grad=True)
    (srm(x) * torch.randn(3, 4, 5, 5)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in srm.parameters()) and torch.isfinite(x.grad).all()
