"""The block contract, as checks that name what failed and what was observed.

A block's constructor takes ``channels`` first (keyword arguments from ``model.attn_args``); its
forward maps ``(N, C, H, W)`` to the same shape, for any H and W (1x1 included), in training and
in eval mode; gradients reach every parameter; the same input gives the same output. The channel
counts tried are those of the sites the block declares (``attn_sites``): feature maps, the 3x3
convs a ``conv`` block replaces (which must also take ``stride=2`` and halve the map), the image.

Used by training (``models.check``: a block that breaks the contract stops the run before its
first step, with one line) and by ``attn-bench check-block``, which runs every check and prints them.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from attn_bench.attention.registry import block_sites, create_block, get_block_class
from attn_bench.errors import ConfigError

# a BasicBlock slot (64), Bottleneck slots (256, 2048) and a MobileNetV2 slot (144)
CHANNELS = (64, 256, 2048, 144)
SITE_CHANNELS = {"conv": (64, 128, 256, 512), "input": (3,)}  # ResNet 3x3 conv widths; RGB


def site_channels(spec: str) -> tuple[int, ...]:
    """The channel counts the sites of ``spec`` give it, its own site's first."""
    counts = [c for site in block_sites(spec) for c in SITE_CHANNELS.get(site, CHANNELS)]
    return tuple(dict.fromkeys(counts))
# (batch, H, W, train mode): non-square, square, batch 1 in eval mode, 1x1 spatial
SHAPES = ((2, 7, 5, True), (2, 8, 8, True), (1, 6, 6, False), (2, 1, 1, True))


@dataclass
class Check:
    name: str
    passed: bool | None  # None: informative only
    detail: str


def _first_arg_check(spec: str) -> Check:
    params = list(inspect.signature(get_block_class(spec).__init__).parameters.values())[1:]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    ok = bool(positional) and positional[0].name == "channels"
    first = positional[0].name if positional else "nothing"
    return Check("constructor takes channels first", ok,
                 "yes" if ok else f"its first argument is {first}; the contract is Block(channels, **attn_args)")


def describe_error(err: BaseException) -> str:
    """One line for a failure inside a user's block: our message, or the exception's type and text."""
    return str(err) if isinstance(err, ConfigError) else f"{type(err).__name__}: {err}"


def construct(spec: str, channels: int, kwargs: dict[str, Any]) -> nn.Module:
    """``create_block`` with any failure of the user's constructor as one ConfigError."""
    try:
        return create_block(spec, channels, **kwargs)
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"{spec}({channels}, **{kwargs}) failed: {describe_error(err)}") from None


def _run(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except AssertionError as err:
        return Check(name, False, str(err))
    except Exception as err:
        return Check(name, False, describe_error(err))


def _shapes(block_for: Callable[[int], nn.Module], channels: tuple[int, ...]) -> str:
    for c in channels:
        block = block_for(c)
        for n, h, w, train in SHAPES:
            x = torch.randn(n, c, h, w)
            with torch.no_grad():
                y = block.train(train)(x)
            shape = tuple(getattr(y, "shape", ()))
            assert isinstance(y, torch.Tensor) and shape == tuple(x.shape), (
                f"input {tuple(x.shape)} ({'train' if train else 'eval'}) gave "
                f"{shape if isinstance(y, torch.Tensor) else type(y).__name__}; the output must have the input's shape")
            assert torch.isfinite(y).all(), f"input {tuple(x.shape)} gave non-finite values"
    return f"{len(channels)} channel counts x {len(SHAPES)} shapes (non-square, square, batch 1 eval, 1x1)"


def _gradients(block: nn.Module, c: int) -> str:
    params = {name: p for name, p in block.named_parameters() if p.requires_grad}
    x = torch.randn(4, c, 6, 5, requires_grad=True)
    y = block.train()(x)
    (y * torch.randn_like(y)).sum().backward()
    unused = sorted(name for name, p in params.items() if p.grad is None)
    assert not unused, f"no gradient reaches {', '.join(unused)} (an unused parameter)"
    assert x.grad is not None, "no gradient reaches the input"
    return f"{len(params)} parameter tensors, all reached"


def _deterministic(block: nn.Module, c: int) -> str:
    x = torch.randn(2, c, 6, 5)
    with torch.no_grad():
        a, b = block.eval()(x), block(x)
    diff = float((a - b).abs().max())
    assert torch.equal(a, b), f"two eval forwards of one input differ by up to {diff:.3g}"
    return "two eval forwards equal"


def _strided(spec: str, kwargs: dict[str, Any], c: int) -> str:
    block = construct(spec, c, {**kwargs, "stride": 2})
    x = torch.randn(2, c, 7, 8)
    with torch.no_grad():
        y = block.train()(x)
    assert tuple(y.shape) == (2, c, 4, 4), f"stride=2 on {tuple(x.shape)} gave {tuple(y.shape)}, not (2, {c}, 4, 4)"
    return "a 7x8 map comes out 4x4"


def identity_at_init(block: nn.Module, c: int) -> Check:
    x = torch.randn(2, c, 6, 5)
    with torch.no_grad():
        diff = float((block.eval()(x) - x).abs().max())
    return Check("identity at initialisation", None, f"{'yes' if diff < 1e-6 else 'no'} (max |out - in| = {diff:.3g})")


def contract_checks(spec: str, kwargs: dict[str, Any], channels: tuple[int, ...] | None = None) -> list[Check]:
    """Every contract check for ``spec`` with arguments ``kwargs``, on the CPU, seeded; ``channels``:
    the counts to try (default: those of the block's sites)."""
    torch.manual_seed(0)
    checks = [_first_arg_check(spec)]
    if not checks[0].passed:
        return checks
    if channels is None:  # the doctor's usual widths: a block may refuse some of them in one line
        built, channels = _widths_check(spec, kwargs, site_channels(spec))
    else:  # the slots' own widths: each must build
        built = _run("constructs for C = " + ", ".join(map(str, channels)),
                     lambda: ", ".join(f"C={c}: {_n_params(construct(spec, c, kwargs)):,} params" for c in channels))
    checks.append(built)
    if not built.passed:
        return checks

    def block_for(c: int) -> nn.Module:
        return construct(spec, c, kwargs)

    c = channels[0]
    checks.append(_run("output shape = input shape", lambda: _shapes(block_for, channels)))
    checks.append(_run("gradients reach every parameter", lambda: _gradients(block_for(c), c)))
    checks.append(_run("deterministic on the CPU", lambda: _deterministic(block_for(c), c)))
    if "conv" in block_sites(spec):
        checks.append(_run("stride 2 (a conv site's strided block)", lambda: _strided(spec, kwargs, c)))
    return checks


def _n_params(block: nn.Module) -> int:
    return sum(p.numel() for p in block.parameters())


def _widths_check(spec: str, kwargs: dict[str, Any], channels: tuple[int, ...]) -> tuple[Check, tuple[int, ...]]:
    """The construction check over the usual widths, and the widths that built. A width the block refuses
    with its own one-line ConfigError (SGE's groups must divide C) is said, not failed; any other
    exception fails, and so does refusing every width."""
    name = "constructs for C = " + ", ".join(map(str, channels))
    built, parts = [], []
    for c in channels:
        try:
            parts.append(f"C={c}: {_n_params(create_block(spec, c, **kwargs)):,} params")
            built.append(c)
        except ConfigError as err:
            parts.append(f"C={c}: refused ({err})")
        except Exception as err:
            return Check(name, False, f"{spec}({c}, **{kwargs}) failed: {describe_error(err)}"), ()
    return Check(name, bool(built), "; ".join(parts)), tuple(built)


def first_width_built(spec: str, kwargs: dict[str, Any]) -> int:
    """The first of the usual widths the block builds at (one it refuses in its own line is skipped); called
    once the construction check passed, so there is one."""
    return next(c for c in site_channels(spec) if _builds(spec, c, kwargs))


def _builds(spec: str, channels: int, kwargs: dict[str, Any]) -> bool:
    try:
        create_block(spec, channels, **kwargs)
        return True
    except ConfigError:
        return False


def check_contract(spec: str, kwargs: dict[str, Any], channels: tuple[int, ...]) -> None:
    """Before training: the first broken contract for these slots' channel counts, as one ConfigError."""
    for check in contract_checks(spec, kwargs, channels):
        if check.passed is False:
            raise ConfigError(f"block {spec} breaks the contract ({check.name}): {check.detail}")
