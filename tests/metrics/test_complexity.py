"""Parameter and MAC/FLOP counts against published figures and hand-computed formulas."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attn_bench.attention import block_sites, create_block, list_blocks
from attn_bench.metrics.complexity import EXTRA_FORMULAS, count_ops, count_params
from attn_bench.models.build import build_model

TINY_RESNET = {"channels": [16, 32, 64, 128]}


# SK's 32, SGE's 64, SA's 2 x 64 and EMA's 32 groups need more than the narrowest stage's 16 channels
TINY_ARGS = {"sk": {"groups": 8}, "sge": {"groups": 8}, "sa": {"groups": 8}, "ema": {"factor": 8}}


def tiny_model(block: str) -> nn.Module:
    return build_model("resnet18", block, num_classes=10, stem="small", timm_kwargs=TINY_RESNET,
                       attn_args=TINY_ARGS.get(block))


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
    replaced = 0
    if block_sites(block)[0] == "conv":  # conv-site units replace each BasicBlock's first 3x3 conv and its BN
        stages = (baseline.layer1, baseline.layer2, baseline.layer3, baseline.layer4)
        replaced = sum(p.numel() for stage in stages for b in stage for m in (b.conv1, b.bn1) for p in m.parameters())
    assert params["params"] - count_params(baseline)["params"] == params["attn_params"] - replaced
    if block in ("sk", "cot"):  # grouped convs (SK's G = 8, CoT's 4 key groups) and 1x1s instead of a dense 3x3
        assert base_ops.flops / 2 < ops.flops < base_ops.flops
    elif block != "none":
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


# --- every block by hand -------------------------------------------------------------------------
# C channels on an H x W map (non-square, so that a swapped H and W would show). Costs per element
# as in complexity.py's table: add/mul/div/relu 1, sigmoid 4, hardswish 5, softmax 5, eval BN 2,
# layer norm 7; mean 1 per input + 1 per output; amax and sum 1 per input. A conv or linear adds
# out_elements * fan_in MACs (zero padding included, biases not counted).
C, H, W = 64, 6, 5
P = H * W


def _gc():
    hid = C // 16
    macs = C * P + C * P + 2 * C * hid  # attention logits, context (bmm), the two 1x1 transforms
    return macs, 2 * macs + 5 * P + 7 * hid + hid + C * P  # softmax, layer norm, relu, the add


def _ca():
    hid, lines = 8, H + W  # max(8, 64 // 32)
    macs = hid * C * lines + C * hid * H + C * hid * W
    pooling = (C * P + C * H) + (C * P + C * W)
    return macs, 2 * macs + pooling + (2 + 5) * hid * lines + 4 * C * lines + 2 * C * P


def _gam():
    hid = C // 4
    macs = 2 * P * C * hid + 2 * 49 * P * C * hid  # two linears per pixel, two 7x7 convs
    channel = P * hid + 4 * C * P + C * P  # relu, sigmoid, rescale
    channel += P * hid  # fc1 sees the permuted, non-contiguous map: it runs as mm + add, bias add counted
    spatial = 2 * hid * P + hid * P + 2 * C * P + 4 * C * P + C * P  # bn, relu, bn, sigmoid, rescale
    return macs, 2 * macs + channel + spatial


def _cbam():
    hid = C // 16
    macs = 2 * (C * hid + hid * C) + 2 * 49 * P  # the shared MLP twice, the 7x7 conv 2 -> 1
    channel = (C * P + C) + C * P + 2 * hid + C + 4 * C + C * P  # mean, max, relus, add, sigmoid, rescale
    spatial = C * P + (C * P + P) + 2 * P + 4 * P + C * P  # max, mean over C, bn, sigmoid, rescale
    return macs, 2 * macs + channel + spatial


def _bam():
    hid = C // 16
    macs = 2 * C * hid + C * hid * P + 2 * 9 * hid * hid * P + hid * P
    channel = (C * P + C) + 2 * hid + hid  # mean, BatchNorm1d, relu
    spatial = 3 * (2 * hid * P + hid * P)  # three conv-bn-relu
    combine = C * P + 4 * C * P + C * P + C * P  # mc + ms, sigmoid, 1 +, rescale
    return macs, 2 * macs + channel + spatial + combine


def _simam():
    # mean, x - mean, square, sum, / n, v + lambda, 4 *, d / ..., + 0.5, sigmoid, rescale
    return 0, (C * P + C) + C * P + C * P + C * P + C + C + C + C * P + C * P + 4 * C * P + C * P


def _triplet():
    planes = C * W + H * C + H * W  # the (C, W), (H, C) and (H, W) planes of the three branches
    macs = 2 * 49 * planes
    per_branch = 3 * C * P  # max and mean over the third axis, rescale
    return macs, 2 * macs + 3 * per_branch + 7 * planes + 3 * C * P  # + mean's divide, bn, sigmoid; (a+b+c)/3


def _sk():
    groups_fan_in, d, m = C // 32 * 9, 32, 2  # G = 32, d = max(C / 16, L = 32)
    macs = m * C * P * groups_fan_in + C * d + d * m * C
    branches = m * (2 * C * P + C * P)  # eval BN, ReLU
    fuse = m * C * P + (C * P + C) + 2 * d + d  # sum of branches, mean, BN, ReLU
    select = 5 * m * C + m * C * P + m * C * P  # softmax over branches, weighting, sum
    return macs, 2 * macs + branches + fuse + select


def _nl():
    ci, keys = C // 2, 3 * 3  # 6x5 max-pooled 2x2 with ceil mode: 3x3
    macs = 2 * ci * P * C + 2 * ci * keys * C + 2 * P * keys * ci  # theta and W; phi and g; two bmm
    pools = 2 * 4 * C * keys  # the input pooled twice (for phi and for g), 4 per output
    return macs, 2 * macs + pools + P * keys + 5 * P * keys + 2 * C * P + C * P  # scale, softmax, BN, add


def _psa():
    ci = C // 2
    macs = P * C + 3 * ci * P * C + 2 * ci * P + C * ci  # q (C -> 1), three C -> Ci convs, two matmuls, conv_up
    channel = 5 * P + 4 * C + C * P  # softmax over positions, sigmoid, rescale
    spatial = (ci * P + ci) + 5 * P + 4 * P + C * P  # mean, softmax, sigmoid, rescale
    return macs, 2 * macs + channel + spatial + C * P  # + the sum of the two branches


def _stn():
    loc, hidden = 20, 50
    pooled1, pooled2 = 3 * 3, 2 * 2  # 6x5 -> 3x3 -> 2x2 (2x2 max pools, ceil mode)
    macs = loc * P * C * 25 + loc * pooled1 * loc * 25 + hidden * loc * 16 + 6 * hidden + 6 * P  # + affine grid
    loc_net = 4 * loc * pooled1 + loc * pooled1 + 4 * loc * pooled2 + loc * pooled2 + 2 * loc * 16 + hidden
    return macs, 2 * macs + loc_net + 12 * P + 7 * C * P  # grid_sample, bilinear


def _srm():
    style = (C * P + C) + 3 * C * P + C + C + C  # mean; x - mean, square, sum; / (n - 1), variance floor, sqrt
    cfc = 2 * C + 2 * C  # w0 * mean + w1 * std
    return 0, style + cfc + 2 * C + 4 * C + C * P  # eval BN, sigmoid, rescale


def _sge():
    g = 64  # the default: one channel per group here
    similarity = (C * P + C) + C * P + C * P  # the group means, x . mean, sum over the group's channels
    # mean; c - mean; square, sum; / (n - 1), floor, sqrt, + eps; divide
    normalise = (g * P + g) + g * P + 2 * g * P + 4 * g + g * P
    return 0, similarity + normalise + 2 * g * P + 4 * g * P + C * P  # w * n + b, sigmoid, rescale


def _ese():
    macs = C * C  # one 1x1 conv C -> C on the pooled vector; its bias is not counted
    return macs, 2 * macs + (C * P + C) + 4 * C + C * P  # mean, hard sigmoid, rescale


def _scse():
    hid = C // 2
    macs = C * hid + hid * C + C * P  # the two FCs; the 1x1 conv C -> 1 at every position
    channel = (C * P + C) + hid + 4 * C + C * P  # mean, relu, sigmoid, rescale
    spatial = 4 * P + C * P  # sigmoid, rescale (the conv's bias is not counted)
    return macs, 2 * macs + channel + spatial + C * P  # the element-wise max


def _nam():
    weights = C + C + C  # |gamma|, its sum, the division
    return 0, 2 * C * P + weights + C * P + 4 * C * P + C * P  # eval BN, w * BN(x), sigmoid, rescale


def _sa():
    half = C // 2  # the channel and the spatial halves of every group, in all
    channel = (half * P + half) + half + half + 4 * half + half * P  # mean, cw *, + cb, sigmoid, rescale
    spatial = 7 * half * P + half * P + half * P + 4 * half * P + half * P  # GroupNorm, sw *, + sb, sigmoid, rescale
    return 0, channel + spatial  # concatenation and shuffle move data only


def _fca():
    macs = 2 * C * (C // 16)  # the two bias-free FCs
    # the 6x5 map pooled (adaptive) up to the 7x7 DCT: windows of 1+2+2+2+2+2+1 = 12 rows by 1+2+2+1+2+2+1 = 11
    # columns summed, one divide per output; then the DCT: a multiply and an add per position
    pool = C * (12 * 11) + C * 7 * 7
    return macs, 2 * macs + pool + 2 * C * 49 + C // 16 + 4 * C + C * P  # DCT, relu, sigmoid, rescale


def _cc():
    ci, passes = C // 8, 2  # recurrence 2, the same weights twice
    macs = passes * (2 * C * ci * P + C * C * P + ci * P * (H + W) + C * P * (H + W))  # q, k, v; energies; outputs
    # each position's own column entry masked, softmax over H + W, out_H + out_W, gamma *, + x
    return macs, 2 * macs + passes * (P * H + 5 * P * (H + W) + C * P + C * P + C * P)


def _splat():
    radix, attn = 2, 32  # ResNeSt's radix; max(32, C * radix / 4) attention channels
    macs = radix * C * P * (C // radix * 9) + C * attn + attn * radix * C  # grouped 3x3 conv (2 groups), fc1, fc2
    conv = 2 * radix * C * P + radix * C * P  # eval BN, ReLU on the radix * C maps
    split = radix * C * P + (C * P + C)  # the sum of the splits, its mean over positions
    attention = 2 * attn + attn + 5 * radix * C  # eval BN, ReLU, the softmax over the radix
    return macs, 2 * macs + conv + split + attention + radix * C * P + radix * C * P  # weighting, sum of the splits


def _ge():
    return 0, (C * P + C) + 4 * C + C * P  # theta-, global: the mean, sigmoid, rescale (no parameter, no MAC)


def _cot():
    k2, shared, attn = 9, C // 8, max(C * 2 // 4, 32)  # 3x3 neighbourhoods; weights per C/8 channels; fusion width
    per_position = C * (C // 4) * k2 + 2 * C * (C // 2) + (C // 2) * (k2 * shared) + C * C  # key, embed x2, value
    macs = P * per_position + C * attn + attn * 2 * C  # + the fusion's two FCs on the pooled vector
    aggregate = 2 * C * k2 * P  # a multiply per tap, then the sum over the taps (im2col only copies)
    norms = 7 * k2 * shared * P + 2 * (3 * C * P + C // 2 * P + attn)  # GroupNorm; eval BNs (key, value, y; embed; fusion)
    acts = 5 * C * P + (C * P + C // 2 * P + attn)  # SiLU on y; ReLUs (key, embed, fusion)
    fuse = 2 * C * P + (C * P + C) + 5 * 2 * C + 2 * C * P + 2 * C * P  # y + k, its mean, softmax, weighting, sum
    return macs, 2 * macs + aggregate + norms + acts + fuse


def _gct():
    embed = 2 * C * P + 2 * C + C  # x^2 and its sum over positions; + eps, sqrt; * alpha
    normalise = C + (C + 1) + 2 + C  # s^2, its mean over the channels, + eps and sqrt (once), gamma / it
    gate = C + C + C + C  # s * n, + beta, tanh, 1 +
    return 0, embed + normalise + gate + C * P  # rescale


def _ema():
    g, c = 32, C // 32  # the factor's groups, their channels
    macs = g * (c * c * (H + W) + c * c * 9 * P + 2 * c * P)  # the 1x1 on the pooled rows and columns, 3x3, two matmuls
    pools = (C * P + C * H) + (C * P + C * W) + 2 * (C * P + C)  # the h and w pools; each branch's mean
    gates = 4 * (C * H + C * W) + 2 * C * P + 7 * C * P  # sigmoids on the h and w gates, both products, GroupNorm
    cross = 5 * 2 * C + g * P + 4 * g * P + C * P  # the two softmaxes, their maps' sum, its sigmoid, rescale
    return macs, 2 * macs + pools + gates + cross


HAND_COUNTS = {"gc": _gc, "ca": _ca, "gam": _gam, "cbam": _cbam, "bam": _bam, "simam": _simam, "triplet": _triplet,
               "sk": _sk, "nl": _nl, "psa": _psa, "stn": _stn, "srm": _srm,
               "sge": _sge, "ese": _ese, "scse": _scse, "nam": _nam, "sa": _sa, "fca": _fca, "cc": _cc, "splat": _splat,
               "ge": _ge, "cot": _cot, "gct": _gct, "ema": _ema}


HAND_ARGS = {"sa": {"groups": 8}}  # SA's default 64 groups need 128 channels


def test_every_block_has_a_hand_count():
    assert set(HAND_COUNTS) | {"se", "eca", "none"} == set(list_blocks())


@pytest.mark.parametrize("block", HAND_COUNTS)
def test_block_alone_matches_hand_count(block):
    ops = count_ops(create_block(block, C, **HAND_ARGS.get(block, {})), (H, W), in_chans=C)
    assert ops.uncounted_ops == []
    assert (ops.macs, ops.flops) == HAND_COUNTS[block](), ops.flops_by_op


def test_mobilenet_ops_match_hand_count():
    """Depthwise conv (fan-in 1 x k x k per output), hardswish 5 and hardsigmoid 4 per element."""
    c = 8
    module = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.Hardswish(), nn.Hardsigmoid())
    ops = count_ops(module, (H, W), in_chans=c)
    assert ops.macs == c * P * 9
    assert ops.flops == 2 * ops.macs + 5 * c * P + 4 * c * P and ops.uncounted_ops == []


def _macs_from_layer_shapes(model: nn.Module, img_size: int) -> int:
    """Conv and linear MACs summed from each layer's output shape and fan-in (forward hooks): a count
    independent of the dispatch-level counter."""
    total = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total.append(output.numel() * fan_in)
        elif isinstance(module, nn.Linear):
            total.append(output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, img_size, img_size))
    for handle in handles:
        handle.remove()
    return sum(total)


@pytest.mark.parametrize("backbone, attn, macs", [
    ("resnet50", "none", 4_089_184_256),  # torchvision's and He et al.'s "4.1 GFLOPs"
    ("mobilenetv3_large_100", "none", None),
    ("mobilenetv2_100", "ca", None),
])
def test_backbone_macs_are_exact(backbone, attn, macs):
    model = build_model(backbone, attn, num_classes=1000)
    ops = count_ops(model, 224)
    assert ops.macs == _macs_from_layer_shapes(model, 224)
    assert macs is None or ops.macs == macs
    assert ops.uncounted_ops == []
