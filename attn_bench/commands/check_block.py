"""``attn-bench check-block SPEC [key=value ...]``: is this block fit to train and compare, in seconds on a CPU.

Runs the contract checks (attn_bench.attention.contract), then what the block costs: parameters,
MACs and FLOPs it adds to ResNet-50 at 224 px next to SE's (with every op the counter could not
price), and its CPU latency overhead on ResNet-18 at 224 px next to SE's, marked when the machine
was busy. Prints one table; exit status 0 only if every check passed. ``key=value`` pairs are the
block's arguments (as ``+model.attn_args.key=value`` would give them), values parsed as YAML.
"""
from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING

import yaml
from rich.console import Console
from rich.table import Table

from attn_bench.attention.registry import BASELINE, block_identity
from attn_bench.errors import ConfigError, plain_text
from attn_bench.tables import wide_console

if TYPE_CHECKING:
    from attn_bench.attention.contract import Check
    from attn_bench.metrics.complexity import OpCount
# the checks need torch and timm, imported where they run: --help and a bad argument answer without them

USAGE = "usage: attn-bench check-block SPEC [key=value ...]  (SPEC: a block name, file.py:Class or module:Class)"
COST_BACKBONE, LATENCY_BACKBONE, IMG = "resnet50", "resnet18", 224
COST_CHECK = f"cost on {COST_BACKBONE} at {IMG} px"
LATENCY_CHECK = f"CPU latency on {LATENCY_BACKBONE} at {IMG} px"


def _build(backbone: str, spec: str, kwargs: dict | None = None):
    """``spec`` on ``backbone``, built as a run builds it (``placement=paper``: SA's and SGE's groups fitted
    to ResNet-18's 64-channel stage)."""
    from attn_bench.models import build_model

    return build_model(backbone, spec, 1000, attn_args=kwargs or None, placement="paper")


def _compared(backbone: str, spec: str, kwargs: dict):
    """(name, model) for no block, SE (the reference) and the block under test, on ``backbone``."""
    for name, args in ((BASELINE, None), ("se", None), (spec, kwargs)):
        yield name, _build(backbone, name, args)


def _counted(model) -> tuple[int, OpCount]:
    from attn_bench.metrics.complexity import count_ops, count_params

    return count_params(model)["params"], count_ops(model, IMG)


@functools.lru_cache(maxsize=None)
def _reference_cost(name: str) -> tuple[int, OpCount]:
    """No block's and SE's row of the cost check: the same for every block, so counted once per process."""
    return _counted(_build(COST_BACKBONE, name))


def _parse(argv: list[str]) -> tuple[str, dict]:
    if not argv or argv[0].startswith("-"):
        raise ConfigError(USAGE)
    kwargs = {}
    for pair in argv[1:]:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"check-block: '{pair}' is not key=value; {USAGE}")
        try:
            kwargs[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"check-block: cannot read the value of '{pair}': {str(err).splitlines()[0]}") from None
    return argv[0], kwargs


def _cost(spec: str, kwargs: dict) -> Check:
    from attn_bench.attention.contract import Check

    (base_params, base_ops), (se_params, se_ops) = _reference_cost(BASELINE), _reference_cost("se")
    params, ops = _counted(_build(COST_BACKBONE, spec, kwargs))
    detail = (f"+{params - base_params:,} params, +{(ops.macs - base_ops.macs) / 1e6:,.1f} M MACs, "
              f"+{(ops.flops - base_ops.flops) / 1e6:,.1f} M FLOPs (SE: +{se_params - base_params:,}, "
              f"+{(se_ops.macs - base_ops.macs) / 1e6:,.1f} M, +{(se_ops.flops - base_ops.flops) / 1e6:,.1f} M)")
    if ops.uncounted_ops:
        return Check(COST_CHECK, False, detail + "; ops with no FLOP formula (not counted): " + ", ".join(ops.uncounted_ops))
    return Check(COST_CHECK, True, detail)


def _latency(spec: str, kwargs: dict) -> Check:
    from attn_bench.attention.contract import Check
    from attn_bench.metrics.latency import BusyDeviceWarning, TimingPlan, measure_latency

    plan = TimingPlan(warmup=2, warmup_s=0.5, min_repeats=5, repeats=20, budget_s=3.0)
    medians, busy = {}, False
    for name, model in _compared(LATENCY_BACKBONE, spec, kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BusyDeviceWarning)
            result = measure_latency(model, IMG, "cpu", plan=plan)
        medians[name], busy = result["median_ms"], busy or result["busy"]
    base = medians[BASELINE]
    detail = (f"{100 * (medians[spec] / base - 1):+.1f} % ({medians[spec]:.1f} ms vs {base:.1f} ms without a block; "
              f"SE {100 * (medians['se'] / base - 1):+.1f} %), batch 1, median")
    return Check(LATENCY_CHECK, None, detail + ("; the machine was busy: compare with care" if busy else ""))


def _guarded(name: str, measure, spec: str, kwargs: dict) -> Check:
    """A measurement on a whole backbone; a block that fails there (other widths and sizes than the
    contract's) fails the check with its error, not the command."""
    from attn_bench.attention.contract import Check, describe_error

    try:
        return measure(spec, kwargs)
    except Exception as err:
        return Check(name, False, describe_error(err))


def run_checks(spec: str, kwargs: dict, timing: bool = True) -> list[Check]:
    from attn_bench.attention.contract import construct, contract_checks, first_width_built, identity_at_init

    checks = contract_checks(spec, kwargs)
    if all(c.passed is not False for c in checks):
        c = first_width_built(spec, kwargs)
        checks.append(identity_at_init(construct(spec, c, kwargs), c))
        checks.append(_guarded(COST_CHECK, _cost, spec, kwargs))
        if timing:
            checks.append(_guarded(LATENCY_CHECK, _latency, spec, kwargs))
    return checks


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(plain_text(f"{USAGE}\n\n{__doc__.split(chr(10) * 2)[1].strip()}"))
        return 0
    spec, kwargs = _parse(argv)
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    source = block_identity(spec)  # a bad spec fails here, in one line
    checks = run_checks(spec, kwargs)
    title = f"check-block {spec}" + (f" (source sha256 {source['source_sha256'][:12]})" if source.get("source_sha256") else "")
    table = Table(title=title)
    for column in ("check", "result", "observed"):
        table.add_column(column)
    marks = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "info"}
    for check in checks:
        table.add_row(check.name, marks[check.passed], check.detail)
    wide_console().print(table)
    failed = [c.name for c in checks if c.passed is False]
    if failed:
        Console(stderr=True).print(f"attn-bench: {spec} failed: {', '.join(failed)}", markup=False, highlight=False)
        return 1
    return 0
