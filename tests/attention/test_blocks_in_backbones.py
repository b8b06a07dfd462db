"""Every registered attention block, placed by ``build_model`` into real timm blocks.

For each block x {ResNet BasicBlock (resnet18), Bottleneck (resnet50), MobileNetV2
InvertedResidual (mobilenetv2_100)} we build the model with ``build_model`` - so the block sits
in the ``se`` slot exactly where the placement code puts it - and check, on a non-square input:

* shapes: the attention block maps its input to the same shape, the timm block (one with stride 1
  and equal in/out channels) maps its input to the same shape, the model gives logits and the same
  feature map as the plain backbone;
* batch 1 works in eval mode and gives the same numbers as that sample inside a batch of 2;
* gradients reach every parameter of the attention block, in train and in eval mode;
* forward is bit-for-bit deterministic on CPU in eval mode.

To stay fast the ResNets are built narrow (``timm_kwargs={"channels": (16, 32, 64, 128)}``:
same block classes and wiring, a quarter of the width); timm offers no width argument for
``mobilenetv2_100`` (its channel multiplier is fixed by the name), so it is built at full width.
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch
from timm.models._efficientnet_blocks import InvertedResidual
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from attn_bench.attention import block_sites, get_block_class, list_blocks
from attn_bench.models import attention_modules, build_model, find_slots

# the blocks that work at the residual site (sk replaces a conv, stn transforms the image or a
# trunk: their own files test them at their sites)
BLOCKS = [b for b in list_blocks(include_baseline=False) if "residual" in block_sites(b)]
NUM_CLASSES = 10
HW = (24, 40)  # non-square on purpose: catches H/W mix-ups (CA, triplet, BAM's pooling)

# timm ResNets zero the gamma of every block's last BN at init (``zero_init_last``, Goyal et al.
# 2017), so in a fresh timm ResNet the residual branch - i.e. the attention block's input - is
# exactly 0 and no gradient can reach the attention parameters until the BN gammas have moved
# (x * gate(x) with x = 0). We build with ``zero_init_last=False`` so the slot sees real features.
NARROW_RESNET = {"channels": (16, 32, 64, 128), "zero_init_last": False}

# name -> (backbone, timm kwargs, path of a stride-1 block with equal in/out channels, timm class)
HOSTS = {
    "basic": ("resnet18", NARROW_RESNET, "layer3.1", BasicBlock),  # 64 channels: SE/CBAM get 4 hidden units
    "bottleneck": ("resnet50", NARROW_RESNET, "layer2.1", Bottleneck),
    "inverted_residual": ("mobilenetv2_100", {}, "blocks.2.1", InvertedResidual),
}

# SGE's official 64 groups divide neither the narrow ResNets' 16 channels nor MobileNetV2's 24
BLOCK_ARGS = {"sge": {"groups": 8}, "sa": {"groups": 8}, "ema": {"factor": 8}}

# Multiplicative parameters that the block's (paper / official) init sets to exactly zero. While
# they are zero, everything upstream of them gets an exactly-zero gradient:
#   gc: mlp_add.fc2 (GCNet's zero init of the last transform conv, so the block starts as the
#       identity) -> conv_attn, mlp_add.fc1 and mlp_add.norm get zero grads;
#   cbam: spatial.bn.weight (official model_resnet.py init) -> spatial.conv gets zero grads;
#   triplet: hw.bn.weight (official init of the un-rotated branch) -> hw.conv gets zero grads;
#   nl: bn.weight (the non-local block starts as the identity) -> theta, phi, g and out get zero grads.
# ``test_zero_init_blocks_gradients_at_init`` checks exactly that; the other gradient tests first
# set these weights to small random values - i.e. a block after some training steps.
ZERO_INIT_WEIGHTS = {
    "gc": {"mlp_add.fc2.weight"},
    "cbam": {"spatial.bn.weight"},
    "triplet": {"hw.bn.weight"},
    "nl": {"bn.weight"},
    "srm": {"cfc"},
    "sa": {"cweight", "sweight"},  # both gates start at sigmoid(bias)
    "cc": {"gamma"},  # the block starts as the identity
    "sge": {"weight"},  # while it is 0 every gate is sigmoid(bias); nothing upstream of it has parameters
    "gct": {"gamma", "beta"},  # gamma * ...: 0, the gate exactly 1 + tanh(beta); beta is GCT's (additive) gate bias
}
ZERO_AT_INIT_UPSTREAM = {
    "gc": {"conv_attn.weight", "conv_attn.bias", "mlp_add.fc1.weight", "mlp_add.fc1.bias",
           "mlp_add.norm.weight", "mlp_add.norm.bias"},
    "cbam": {"spatial.conv.weight"},
    "triplet": {"hw.conv.weight"},
    "nl": {f"{conv}.{p}" for conv in ("theta", "phi", "g", "out") for p in ("weight", "bias")},
    "srm": {"bn.weight"},  # it scales the normalised z = cfc . style, all 0 while cfc is
    "sa": {"gn.weight", "gn.bias"},  # the GroupNorm feeds the spatial gate only through sweight
    "cc": {f"{conv}.{p}" for conv in ("query", "key", "value") for p in ("weight", "bias")},
    "sge": set(),  # the gate is sigmoid(weight * n + bias): the bias learns at once
    "gct": {"alpha"},  # it scales the embedding only through gamma's product
}

PARAMETER_FREE = {"simam", "ge"}  # ge: its default theta- variant (GENet's RN50-GEPF)

# Parameters whose gradient is zero *by mathematics*, not by accident:
#   gc conv_attn.bias: adds the same constant to every spatial logit, and softmax is shift
#       invariant, so it never changes the output (it is in the official ContextBlock too).
#   nl phi.bias: adds q_i . b to every key logit of query i, shift invariant in the same way.
ALWAYS_ZERO_GRAD = {"gc": {"conv_attn.bias"}, "nl": {"phi.bias"}}
#   A bias feeding straight into a BatchNorm in train mode is removed again by the batch mean,
#   so its gradient is 0 in train mode (it is not in eval mode, where BN uses running stats).
TRAIN_ZERO_GRAD = {
    "bam": {"channel_att.fc1.bias", "spatial_att.reduce.0.bias",
            "spatial_att.dilated.0.0.bias", "spatial_att.dilated.1.0.bias"},
    "ca": {"conv1.bias"},
    "nl": {"out.bias"},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tensors here are tiny: one intra-op thread is as fast, and it does not collapse when
    the 2 cores are shared (with a team of 2 OpenMP threads on a loaded machine, small convs ran
    ~50x slower and this file took 75 s instead of about 10 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    _model.cache_clear()  # GAM-MobileNetV2 alone holds 112M parameters


@functools.lru_cache(maxsize=None)
def _model(host: str, block: str) -> nn.Module:
    backbone, timm_kwargs, _, _ = HOSTS[host]
    torch.manual_seed(0)
    return build_model(backbone, block, NUM_CLASSES, timm_kwargs=timm_kwargs, attn_args=BLOCK_ARGS.get(block))


@functools.lru_cache(maxsize=None)
def _plain_features_shape(host: str) -> torch.Size:
    backbone, timm_kwargs, _, _ = HOSTS[host]
    model = build_model(backbone, "none", NUM_CLASSES, timm_kwargs=timm_kwargs).eval()
    with torch.no_grad():
        return model.forward_features(torch.randn(1, 3, *HW)).shape


def _timm_block(host: str, block: str) -> nn.Module:
    """A private copy of the host timm block, with ``block`` in its slot (placed by build_model)."""
    _, _, path, cls = HOSTS[host]
    model = _model(host, block)
    timm_block = model.get_submodule(path)
    assert type(timm_block) is cls
    assert type(timm_block.se) is get_block_class(block)
    assert any(m is timm_block.se for m in attention_modules(model))
    return copy.deepcopy(timm_block)


def _in_channels(timm_block: nn.Module) -> int:
    return next(m for m in timm_block.modules() if isinstance(m, nn.Conv2d)).in_channels


def _block_input(timm_block: nn.Module, batch: int, seed: int) -> torch.Tensor:
    """Random features plus a per-sample, per-channel offset, so that the samples' pooled
    descriptors differ (a pure N(0, 1) map pools to ~0 in every channel of every sample, and a
    narrow reduction MLP can then have all its ReLUs off for the whole batch - zero gradients
    that would be correct but would say nothing)."""
    gen = torch.Generator().manual_seed(seed)
    c = _in_channels(timm_block)
    return torch.randn(batch, c, *HW, generator=gen) + torch.randn(batch, c, 1, 1, generator=gen)


def _record_shapes(module: nn.Module, shapes: list) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda m, args, out: shapes.append((args[0].shape, out.shape)))


def _perturb_zero_init(attn: nn.Module, block: str) -> None:
    """Give the zero-initialised multiplicative weights small random values (see ZERO_INIT_WEIGHTS)."""
    params = dict(attn.named_parameters())
    zero = {n for n, p in params.items() if not n.endswith("bias") and not p.detach().any()}  # SRM's is 'cfc'
    assert zero == ZERO_INIT_WEIGHTS.get(block, set())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in zero:
            params[name].copy_(0.1 * torch.randn(params[name].shape, generator=gen))


def _attention_grads(timm_block: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Gradients of a random projection of the block's output w.r.t. the attention parameters.

    In float64, so that gradients that are zero by mathematics (see ALWAYS_ZERO_GRAD) come out
    as rounding noise far below every real gradient (in float32 a BatchNorm over a batch of 2
    nearly-equal pooled vectors amplifies that noise to ~1e-5 of the largest gradient).
    """
    gen = torch.Generator().manual_seed(2)
    timm_block.double()
    x = x.double().requires_grad_(True)
    out = timm_block(x)
    # a random weighting, so no gradient vanishes because of a symmetric loss
    (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    return {n: p.grad for n, p in timm_block.se.named_parameters()}


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("block", BLOCKS)
def test_block_shapes_batch1_determinism(block, host):
    timm_block = _timm_block(host, block).eval()
    _perturb_zero_init(timm_block.se, block)  # so that e.g. GC is not the identity
    x = _block_input(timm_block, 2, seed=3)
    shapes = []
    _record_shapes(timm_block.se, shapes)
    with torch.no_grad():
        out = timm_block(x)
        out_again = timm_block(x)
        out_single = timm_block(x[1:])
    assert out.shape == x.shape
    assert shapes and all(s_in == s_out for s_in, s_out in shapes)
    assert shapes[0][0][-2:] == HW  # the slot sees the non-square map (stride-1 block)
    assert torch.equal(out, out_again), "eval forward is not deterministic on CPU"
    assert out_single.shape == x[1:].shape
    torch.testing.assert_close(out_single, out[1:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gradients_reach_every_attention_parameter(block, host, mode):
    timm_block = _timm_block(host, block).train(mode == "train")
    _perturb_zero_init(timm_block.se, block)
    x = _block_input(timm_block, 4, seed=4)
    grads = _attention_grads(timm_block, x)
    if block in PARAMETER_FREE:
        assert grads == {}
        return
    assert grads
    expected_zero = set(ALWAYS_ZERO_GRAD.get(block, ()))
    if mode == "train":
        expected_zero |= TRAIN_ZERO_GRAD.get(block, set())
    assert expected_zero <= set(grads)
    for name, grad in grads.items():
        assert grad is not None, f"{block}.{name} got no gradient"
        assert torch.isfinite(grad).all(), f"{block}.{name} has a non-finite gradient"
        if name in expected_zero:
            # zero up to rounding: compare with the gradient scale of the whole block
            scale = max(g.abs().max().item() for g in grads.values())
            assert grad.abs().max().item() <= 1e-9 * scale, f"{block}.{name} should get a zero gradient"
        else:
            assert grad.abs().sum() > 0, f"{block}.{name} got an all-zero gradient"


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("block", sorted(ZERO_INIT_WEIGHTS))
def test_zero_init_blocks_gradients_at_init(block, host):
    """Without the perturbation, exactly the parameters upstream of the zero weights get 0 grads."""
    timm_block = _timm_block(host, block).train()
    x = _block_input(timm_block, 4, seed=5)
    grads = _attention_grads(timm_block, x)
    zero = {n for n, g in grads.items() if g is not None and not g.any()}
    assert all(g is not None for g in grads.values())
    assert zero == ZERO_AT_INIT_UPSTREAM[block]
    for name in ZERO_INIT_WEIGHTS[block]:  # the zero weights themselves do learn
        assert grads[name].abs().sum() > 0


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("block", BLOCKS)
def test_model_non_square_batch1_determinism(block, host):
    model = _model(host, block).eval()
    slots = find_slots(model)
    placed = attention_modules(model)
    assert len(placed) == len(slots)  # default placement: every slot of every stage
    assert all(type(m) is get_block_class(block) for m in placed)
    shapes = []
    handles = [_record_shapes(m, shapes) for m in placed]
    x = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        logits = model(x)
        logits_again = model(x)
        single = model(x[:1])
        features = model.forward_features(x[:1])
    for h in handles:
        h.remove()
    assert logits.shape == (2, NUM_CLASSES)
    assert single.shape == (1, NUM_CLASSES)
    assert features.shape == _plain_features_shape(host)  # attention changes no shape in the network
    assert len(shapes) == 4 * len(slots)  # every placed block ran, in each of the 4 forwards
    assert all(s_in == s_out for s_in, s_out in shapes)
    assert torch.isfinite(logits).all()
    assert torch.equal(logits, logits_again), "eval forward is not deterministic on CPU"
    # batch-independent in eval mode; float32 rounding grows with the logits' scale (no zero init
    # of the last BNs here: narrow BAM-ResNet-50 reaches |logits| ~ 500, off by ~0.08 at batch 1)
    scale = logits.abs().max().item()
    torch.testing.assert_close(single, logits[:1], rtol=0, atol=1e-3 * max(scale, 1.0))


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("block", BLOCKS)
def test_model_train_step_reaches_every_slot(block, host):
    """A train-mode backward through the whole network: stride-2 / channel-changing blocks, the
    MobileNet depthwise-separable first block and the 1x2 maps of the last stage included."""
    model = copy.deepcopy(_model(host, block)).train()  # train mode updates BN running stats
    x = torch.randn(2, 3, *HW, generator=torch.Generator().manual_seed(7))
    model(x).logsumexp(dim=1).sum().backward()
    for i, attn in enumerate(attention_modules(model)):
        for name, p in attn.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"slot {i}: {block}.{name}"
        params = list(attn.parameters())  # the loss reaches it: some gradient is not zero (a zero-initialised
        # last layer still gets one; all zeros would mean the block is cut off from the loss)
        assert not params or any(p.grad.abs().sum() > 0 for p in params), f"slot {i}: {block} got only zeros"
