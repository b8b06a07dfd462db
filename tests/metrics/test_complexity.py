"""Parameter and MAC/FLOP counts against published figures and hand-computed formulas."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attn_bench.attention import create_block, list_blocks
from attn_bench.metrics.complexity import EXTRA_FORMULAS, count_ops, count_params
from attn_bench.models.build import build_model

TINY_RESNET = {"channels": [16, 32, 64, 128]}


def tiny_model(block: str) -> nn.Module:
    return build_model("resnet18", block, num_classes=10, stem="small", timm_kwargs=TINY_RESNET)


# Measured with timm 1.0.31: resnet18 1_814_073_344 MACs / 3_638_006_784 FLOPs,
# resnet50 4_089_184_256 MACs / 8_217_633_280 FLOPs (He et al. and torchvision quote 1.8 G / 4.1 G).
@pytest.mark.parametrize("backbone, published_gmacs", [("resnet18", 1.82), ("resnet50", 4.11)])
def test_resnet_macs_match_published_figures(backbone, published_gmacs):
    ops = count_ops(build_model(backbone, num_classes=1000), 224)
    assert ops.gmacs == pytest.approx(published_gmacs, rel=0.02)
    assert ops.uncounted_ops == []
    assert ops.flops > 2 * ops.macs  # BN, ReLU, pooling and the residual adds come on top


def test_se_block_alone_matches_hand_count():
    c, h, w = 64, 14, 14
    cr = c // 16  # SE's default reduction r = 16
    ops = count_ops(create_block("se", c), (h, w), in_chans=c)
    # fc1 (1x1 conv C -> Cr) and fc2 (Cr -> C); their biases are not counted
    assert ops.macs == c * cr + cr * c
    gap = c * h * w + c  # C*H*W adds, then C divides
    relu, sigmoid, rescale = cr, 4 * c, c * h * w
    assert ops.flops == 2 * ops.macs + gap + relu + sigmoid + rescale
    assert ops.uncounted_ops == []


def test_eca_block_alone_matches_hand_count():
    c, h, w = 64, 14, 14
    block = create_block("eca", c)
    k = block.kernel_size  # psi(64) = 3
    assert k == 3
    ops = count_ops(block, (h, w), in_chans=c)
    assert ops.macs == c * k  # conv1d 1 -> 1 channel along C positions ("same" zero padding counted)
    gap, sigmoid, rescale = c * h * w + c, 4 * c, c * h * w
    assert ops.flops == 2 * ops.macs + gap + sigmoid + rescale
    assert ops.uncounted_ops == []


@pytest.mark.parametrize("block", list_blocks())
def test_every_block_is_fully_counted(block):
    model, baseline = tiny_model(block), tiny_model("none")
    ops, base_ops = count_ops(model, 32), count_ops(baseline, 32)
    assert ops.uncounted_ops == []
    params = count_params(model)
    assert params["params"] - count_params(baseline)["params"] == params["attn_params"]
    if block != "none":
        assert ops.flops > base_ops.flops  # every block, parameter-free SimAM included, costs something


def test_op_without_formula_is_reported():
    class Unpriced(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, dim=1).sin()

    ops = count_ops(Unpriced(), 8)
    assert ops.uncounted_ops == ["cumsum", "sin"]


def test_data_movement_ops_are_free_and_not_reported():
    class Shuffle(nn.Module):
        def forward(self, x):
            y = x.permute(0, 2, 3, 1).reshape(1, -1)
            return torch.cat([y, y.flip(1)], dim=1).view(2, -1).contiguous()

    ops = count_ops(Shuffle(), 4)
    assert ops.flops == 0 and ops.uncounted_ops == []


def test_norm_formulas_for_inference_and_training_kernels():
    def flops(module: nn.Module, x: torch.Tensor) -> int:
        counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
        with counter:
            module(x)
        return counter.get_total_flops()

    x = torch.randn(2, 8, 4, 4)
    assert flops(nn.BatchNorm2d(8).eval(), x) == 2 * x.numel()  # running stats fold into mul + add
    tracked = 1  # training also runs num_batches_tracked += 1
    assert flops(nn.BatchNorm2d(8).train(), x) == (5 + 2) * x.numel() + tracked  # batch stats + affine
    assert flops(nn.BatchNorm2d(8, affine=False).train(), x) == 5 * x.numel() + tracked
    assert flops(nn.LayerNorm([8, 4, 4]), x) == (5 + 2) * x.numel()
    assert flops(nn.GroupNorm(2, 8), x) == (5 + 2) * x.numel()


def test_count_ops_leaves_the_model_as_it_was():
    model = tiny_model("se").train()
    model.fc.eval()
    count_ops(model, 32)
    assert model.training and not model.fc.training
    assert all(p.device.type == "cpu" for p in model.parameters())
