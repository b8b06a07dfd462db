"""Parameter and operation counts: ``count_params`` and ``count_ops``. (One idea, counting; most of
its length is the table of per-op formulas, which reads best in one place.)

Counter: ``torch.utils.flop_counter.FlopCounterMode``. It is PyTorch's own, maintained with
PyTorch, and sees the aten ops that actually run (a ``TorchDispatchMode``), so nothing depends
on module types or on tracing. Out of the box it only knows conv / matmul / attention kernels;
the element-wise, activation, reduction, pooling, softmax and norm formulas below are passed as
its ``custom_mapping`` (not ``register_flop_formula``, which would change the process-wide
registry for every other user of the counter).

No op is skipped silently: an op logger (a second ``TorchDispatchMode``, entered *beneath* the
counter so that it sees exactly the ops the counter executes, after any decomposition) records
every aten op of the forward pass. An op with neither a formula nor a place on ``ZERO_COST_OPS``
is returned in ``uncounted_ops``.

Units: ``macs`` are multiply-accumulates of conv / linear / matmul (what papers call "FLOPs" or
"Mult-Adds": ResNet-50 at 224 px is 4.1 G). ``flops`` counts every floating-point op: 2 per MAC,
plus the per-element costs below. Bias additions of conv / linear are not counted (PyTorch's
formulas, fvcore and the papers leave them out too), with one exception the counter cannot see
through: a linear layer applied to a non-contiguous input (GAM's channel MLP on a permuted NCHW
map) runs as ``mm`` + ``add``, and that ``add`` is counted (hidden x H x W flops, ~0.01 % of GAM's).

Cost per element (one flop each for add, sub, mul, div, compare, exp, erf, sqrt, tanh):

==========================================  ==================================================
arithmetic: add, sub, mul, div, neg, pow,   1 per output element (broadcast: output shape)
  exp, log, sqrt, rsqrt, abs, maximum, ...
relu                                        1 (x > 0 ? x : 0)
hardtanh (ReLU6), clamp                     2 (two compares)
sigmoid                                     4 (1 / (1 + exp(-x)): neg, exp, add, div)
hardsigmoid                                 4 (relu6(x + 3) / 6: add, 2 compares, div)
hardswish                                   5 (x * hardsigmoid(x))
silu                                        5 (x * sigmoid(x))
gelu                                        5 (x/2 * (1 + erf(x / sqrt 2)); tanh form too)
softmax, log_softmax                        5 (running max, sub, exp, sum, div / log-sub)
sum, amax, amin, max/min over dims          1 per input element
mean                                        1 per input element + 1 per output (the divide)
var / std                                   4 per input (mean, sub, square, sum) + 1 / 2 per out
max pool (incl. adaptive)                   1 per window element per output
avg pool (incl. adaptive)                   1 per window element per output + 1 per output
batch norm, eval (running statistics)       2 ((x - mean) * w / std + b folds to mul + add)
batch norm, training; layer / group norm    5 (mean, sub, square, sum, scale) + 2 if affine
affine_grid (a spatial transformer's grid)  MACs: the (H*W, 3) base grid times theta^T (3, 2),
                                            6 per output position
grid_sample, bilinear                       12 per output position (unnormalise 2 coordinates:
                                            4, fractions and their complements: 4, corner
                                            weights: 4) + 7 per output element (4 mul, 3 add)
grid_sample, nearest / bicubic              4 (unnormalise) + 2 (round) per position / 4 + 40
                                            per position (fractions and 8 cubic weights) +
                                            31 per output element (16 mul, 15 add)
==========================================  ==================================================

Counting runs the model once in eval mode on a batch of 1 on the CPU (a CPU copy if the
model lives elsewhere), so the numbers do not depend on the device's kernel choice.
"""
from __future__ import annotations

import collections
import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from attn_bench.models.placement import attention_modules

aten = torch.ops.aten

# Ops that move, view, allocate or copy data without arithmetic.
ZERO_COST_OPS = frozenset({
    # views and reshapes
    "view", "_unsafe_view", "reshape", "_reshape_alias", "permute", "transpose", "t", "expand",
    "unsqueeze", "squeeze", "slice", "select", "narrow", "as_strided", "alias", "detach", "unfold",
    # copies, casts, concatenation and splitting
    "clone", "copy_", "_to_copy", "contiguous", "cat", "stack", "split", "split_with_sizes", "unbind",
    "chunk", "repeat", "flip", "roll", "constant_pad_nd", "index_select", "gather", "lift_fresh",
    "lift_fresh_copy", "im2col",  # im2col: F.unfold, copying each k x k neighbourhood (CoT's aggregation)
    # allocation and filling
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like",
    "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "fill_", "zero_", "eye",
})

# Matrix-product ops of PyTorch's own registry: their FLOPs are 2 per MAC.
MAC_OPS = frozenset({
    "convolution", "_convolution", "convolution_overrideable", "cudnn_convolution", "_slow_conv2d_forward",
    "mm", "addmm", "bmm", "baddbmm", "_scaled_mm",
    "affine_grid_generator",  # a batched matrix product (formula below)
})

ELEMENTWISE_COST = {
    1: ("add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "pow", "pow_", "square",
        "exp", "log", "sqrt", "rsqrt", "reciprocal", "abs", "tanh", "erf", "maximum", "minimum", "clamp_min",
        "clamp_min_", "clamp_max", "clamp_max_", "where", "masked_fill", "masked_fill_", "relu", "relu_", "threshold"),
    2: ("hardtanh", "hardtanh_", "clamp", "clamp_", "leaky_relu", "leaky_relu_"),
    4: ("sigmoid", "sigmoid_", "hardsigmoid", "hardsigmoid_"),
    5: ("hardswish", "hardswish_", "silu", "silu_", "gelu", "gelu_", "_softmax", "_log_softmax"),
}

EVAL_NORM_COST = 2
STATS_NORM_COST = 5
AFFINE_COST = 2


def _numel(shape: Any) -> int:
    return math.prod(shape)


def _main_output(out_shape: Any) -> torch.Size:
    """The shape of an op's (first) output: ops such as ``max.dim`` return (values, indices)."""
    return out_shape if isinstance(out_shape, torch.Size) else out_shape[0]


def _elementwise(cost: int) -> Callable[..., int]:
    def formula(*args, out_shape=None, **kwargs) -> int:
        return cost * _numel(out_shape)
    return formula


def _reduction(per_input: int, per_output: int) -> Callable[..., int]:
    def formula(input_shape, *args, out_shape=None, **kwargs) -> int:
        return per_input * _numel(input_shape) + per_output * _numel(_main_output(out_shape))
    return formula


def _pool(dims: int, per_output: int) -> Callable[..., int]:
    """Fixed-window pooling: ``kernel area + per_output`` ops per output element."""
    def formula(input_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
        window = _numel(kernel_size) if len(kernel_size) == dims else kernel_size[0] ** dims
        return (window + per_output) * _numel(_main_output(out_shape))
    return formula


def _adaptive_window_total(size_in: int, size_out: int) -> int:
    """Sum of the window lengths of adaptive pooling along one dimension (windows may overlap)."""
    return sum(math.ceil((i + 1) * size_in / size_out) - (i * size_in) // size_out for i in range(size_out))


def _adaptive_pool(per_output: int) -> Callable[..., int]:
    def formula(input_shape, output_size, *args, out_shape=None, **kwargs) -> int:
        out = _main_output(out_shape)
        dims = len(output_size)
        leading = _numel(input_shape[:-dims])
        windows = math.prod(_adaptive_window_total(i, o) for i, o in zip(input_shape[-dims:], out[-dims:]))
        return leading * windows + per_output * _numel(out)
    return formula


def _norm_cost(input_shape: Any, uses_batch_stats: bool, affine: bool) -> int:
    if not uses_batch_stats:
        return EVAL_NORM_COST * _numel(input_shape)
    return (STATS_NORM_COST + (AFFINE_COST if affine else 0)) * _numel(input_shape)


def _batch_norm(training: bool | None) -> Callable[..., int]:
    """``training=None``: the op's first bool argument says (native_batch_norm, cudnn_batch_norm, ...)."""
    def formula(input_shape, weight, *args, out_shape=None, **kwargs) -> int:
        is_training = training if training is not None else next(a for a in args if isinstance(a, bool))
        return _norm_cost(input_shape, is_training, weight is not None)
    return formula


def _layer_norm(input_shape, normalized_shape, weight=None, *args, out_shape=None, **kwargs) -> int:
    return _norm_cost(input_shape, True, weight is not None)


def _group_norm(input_shape, weight=None, *args, out_shape=None, **kwargs) -> int:
    return _norm_cost(input_shape, True, weight is not None)


def _affine_grid(theta_shape, size, *args, out_shape=None, **kwargs) -> int:
    """2 flops per MAC, 3 MACs per output coordinate (out: N, H, W, 2)."""
    return 2 * 3 * _numel(out_shape)


GRID_SAMPLE_COST = {0: (12, 7), 1: (6, 0), 2: (44, 31)}  # interpolation mode -> (per position, per element)


def _grid_sample(input_shape, grid_shape, interpolation_mode, *args, out_shape=None, **kwargs) -> int:
    per_position, per_element = GRID_SAMPLE_COST[int(interpolation_mode)]
    out = _main_output(out_shape)
    return per_position * _numel(grid_shape[:-1]) + per_element * _numel(out)


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    formulas: dict[str, Callable[..., int]] = {}
    for cost, names in ELEMENTWISE_COST.items():
        formulas.update({name: _elementwise(cost) for name in names})
    formulas.update({
        "sum": _reduction(1, 0), "amax": _reduction(1, 0), "amin": _reduction(1, 0), "max": _reduction(1, 0),
        "min": _reduction(1, 0), "mean": _reduction(1, 1), "var": _reduction(4, 1), "std": _reduction(4, 2),
        "max_pool1d": _pool(1, 0), "max_pool2d_with_indices": _pool(2, 0), "max_pool3d_with_indices": _pool(3, 0),
        "avg_pool2d": _pool(2, 1), "avg_pool3d": _pool(3, 1),
        "_adaptive_avg_pool2d": _adaptive_pool(1), "_adaptive_avg_pool3d": _adaptive_pool(1),
        "adaptive_max_pool2d": _adaptive_pool(0), "adaptive_max_pool3d": _adaptive_pool(0),
        "native_batch_norm": _batch_norm(None), "_native_batch_norm_legit": _batch_norm(None),
        "cudnn_batch_norm": _batch_norm(None), "miopen_batch_norm": _batch_norm(None),
        "_native_batch_norm_legit_no_training": _batch_norm(False), "_batch_norm_no_update": _batch_norm(False),
        "_batch_norm_with_update": _batch_norm(True),
        "native_layer_norm": _layer_norm, "native_group_norm": _group_norm,
        "affine_grid_generator": _affine_grid, "grid_sampler_2d": _grid_sample,
    })
    return {getattr(aten, name): formula for name, formula in formulas.items()}


EXTRA_FORMULAS = _extra_formulas()


class _OpLogger(TorchDispatchMode):
    """Counts the calls of every aten op (by overload packet name) that runs beneath it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@dataclass
class OpCount:
    macs: int
    flops: int
    flops_by_op: dict[str, int]
    calls_by_op: dict[str, int]
    uncounted_ops: list[str] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def count_params(model: nn.Module) -> dict[str, int]:
    """``params``: all parameters (buffers such as BN running stats excluded); ``attn_params``:
    those of the placed attention blocks."""
    attn = sum(p.numel() for block in attention_modules(model) for p in block.parameters())
    return {"params": sum(p.numel() for p in model.parameters()), "attn_params": attn}


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own training flag."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags.items():
            module.training = training


def _on_cpu(model: nn.Module) -> nn.Module:
    tensors = [*model.parameters(), *model.buffers()]
    return model if all(t.device.type == "cpu" for t in tensors) else copy.deepcopy(model).cpu()


def count_ops(model: nn.Module, img_size: int | tuple[int, int], in_chans: int = 3) -> OpCount:
    """MACs and FLOPs of one forward pass of a ``(1, in_chans, H, W)`` input (eval mode, CPU)."""
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    model = _on_cpu(model)
    x = torch.randn(1, in_chans, height, width)
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with eval_mode(model), torch.no_grad(), _OpLogger() as logger, counter:
        model(x)
    by_op = {packet.__name__: int(n) for packet, n in counter.get_flop_counts().get("Global", {}).items()}
    known = {p.__name__ for p in flop_registry} | {p.__name__ for p in EXTRA_FORMULAS}
    uncounted = sorted(op for op in logger.calls if op not in known and op not in ZERO_COST_OPS)
    return OpCount(
        macs=sum(n for op, n in by_op.items() if op in MAC_OPS) // 2,
        flops=sum(by_op.values()),
        flops_by_op=dict(sorted(by_op.items(), key=lambda item: -item[1])),
        calls_by_op=dict(logger.calls),
        uncounted_ops=uncounted,
    )
