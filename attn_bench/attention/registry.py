"""Name -> attention block factory, in the spirit of timm's ``create_attn``.

Every block class takes ``channels`` as its first argument and maps an
``(N, C, H, W)`` tensor to a tensor of the same shape. Classes are imported
lazily so that listing the names costs nothing.

Besides the built-in names: installed plug-ins (entry-point group ``attn_bench.blocks``) by name,
and any class by ``path/to/file.py:Class`` or ``package.module:Class`` (see ``attention.user``).
"""
from __future__ import annotations

import importlib
import inspect
import logging
import re
from typing import TYPE_CHECKING, Any

from attn_bench.attention import user
from attn_bench.attention.sites import FEATURE_SITES
from attn_bench.config import unescape_override
from attn_bench.errors import ConfigError

if TYPE_CHECKING:  # torch is imported with the first block, not with the names (--help, completion)
    from torch import nn

BASELINE = "none"
log = logging.getLogger("attn_bench")

_BLOCKS: dict[str, str] = {
    BASELINE: "attn_bench.attention.baseline:NoAttention",
    "se": "attn_bench.attention.squeeze_excite:SqueezeExcite",
    "eca": "attn_bench.attention.eca:EfficientChannelAttn",
    "gc": "attn_bench.attention.global_context:GlobalContext",
    "ca": "attn_bench.attention.coord_attn:CoordAttention",
    "gam": "attn_bench.attention.gam:GAM",
    "cbam": "attn_bench.attention.cbam:CBAM",
    "bam": "attn_bench.attention.bam:BAM",
    "simam": "attn_bench.attention.simam:SimAM",
    "triplet": "attn_bench.attention.triplet:TripletAttention",
    "sk": "attn_bench.attention.selective_kernel:SelectiveKernel",
    "nl": "attn_bench.attention.non_local:NonLocal",
    "psa": "attn_bench.attention.polarized:PolarizedSelfAttention",
    "stn": "attn_bench.attention.spatial_transformer:SpatialTransformer",
    "srm": "attn_bench.attention.srm:StyleRecalibration",
    "sge": "attn_bench.attention.sge:SpatialGroupEnhance",
    "ese": "attn_bench.attention.effective_se:EffectiveSE",
    "scse": "attn_bench.attention.scse:ChannelSpatialSE",
    "nam": "attn_bench.attention.nam:NormalizationAttention",
    "sa": "attn_bench.attention.shuffle_attention:ShuffleAttention",
    "fca": "attn_bench.attention.fca:FrequencyChannelAttention",
    "cc": "attn_bench.attention.criss_cross:CrissCrossAttention",
    "splat": "attn_bench.attention.split_attention:SplitAttention",
    "ge": "attn_bench.attention.gather_excite:GatherExcite",
    "cot": "attn_bench.attention.contextual_transformer:ContextualTransformer",
    "gct": "attn_bench.attention.gated_channel:GatedChannelTransformation",
    "ema": "attn_bench.attention.efficient_multiscale:EfficientMultiScaleAttention",
}



def list_blocks(include_baseline: bool = True) -> list[str]:
    """Names accepted by ``model.attn``, baseline first, then built-ins, then installed plug-ins
    (a plug-in may not take a built-in's name)."""
    plugins = [name for name in user.plugin_blocks() if name not in _BLOCKS]
    return [name for name in _BLOCKS if include_baseline or not is_baseline(name)] + plugins


def _target(name: str) -> str:
    """``module:Class`` (or ``file.py:Class``) that ``name`` stands for."""
    if name in _BLOCKS:
        return _BLOCKS[name]
    if user.is_spec(name):
        return name
    plugins = user.plugin_blocks()
    if name in plugins:
        return plugins[name]
    raise ConfigError(f"unknown attention block '{name}'; valid choices: {', '.join(list_blocks())}, "
                      f"or your own as path/to/file.py:ClassName or package.module:ClassName")


def get_block_class(name: str) -> type[nn.Module]:
    target = _target(str(name))
    if name in _BLOCKS:
        module_name, class_name = target.split(":")
        return getattr(importlib.import_module(module_name), class_name)
    return user.load_class(target)


def _say_if_shadowed(name: str) -> None:
    """An installed plug-in under a built-in's name is never used for that name: said in a line, with the
    spec that does use it (a block added to attn-bench may take a name a plug-in had)."""
    plugin = user.plugin_blocks().get(name)
    if plugin:
        log.warning("model.attn=%s is attn-bench's built-in %s; the installed plug-in of that name (%s) is not used: "
                    "model.attn=%s runs it", name, name, plugin, plugin)


def is_builtin(name: str) -> bool:
    return str(name) in _BLOCKS


def is_baseline(name: str) -> bool:
    """Whether ``name`` is the baseline (no attention). Decided by the name alone: asking never loads a
    user's file (reports and figures read names from results folders)."""
    return str(name) == BASELINE


def block_identity(name: str) -> dict[str, Any]:
    """What a run records about its block: the name as given, the class it resolved to, and, for a
    block from outside attn-bench (a file, a module, a plug-in), the file that defines the class
    and the SHA-256 of its source (built-ins are identified by attn-bench's version, which every
    run records)."""
    name = str(name)
    if is_baseline(name):  # as runs have recorded it since the first version
        return {"attn": name}
    target = _target(name)
    if name in _BLOCKS:
        _say_if_shadowed(name)  # once per run: its spec is resolved once
        return {"attn": name, "class": target}
    cls = get_block_class(name)  # fails here, in one line, for a spec that does not load
    path, digest = user.class_source(cls)
    where = target.rpartition(":")[0]
    identity = {"attn": name, "class": f"{path if user.is_file_spec(where) else where}:{cls.__qualname__}"}
    if digest is not None:
        identity.update(source=str(path), source_sha256=digest)
    return identity


def block_sites(name: str) -> tuple[str, ...]:
    """The placement sites block ``name`` works at, its own site first (``attn_sites``)."""
    return tuple(getattr(get_block_class(name), "attn_sites", FEATURE_SITES))


def block_defaults(name: str) -> dict[str, Any]:
    """Keyword arguments and their defaults, as the block's signature states them."""
    params = list(inspect.signature(get_block_class(name).__init__).parameters.values())[2:]
    return {p.name: p.default for p in params if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY}


def _takes_any_keyword(cls: type) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def create_block(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """Build block ``name`` for ``channels`` channels (``none``: the identity)."""
    cls = get_block_class(name)
    unknown = sorted(set(kwargs) - set(block_defaults(name)))
    if unknown and not _takes_any_keyword(cls):
        raise ConfigError(
            f"attention '{name}' has no argument(s) {', '.join(unknown)}; "
            f"valid: {', '.join(block_defaults(name)) or '(none)'}"
        )
    return cls(channels, **kwargs)


def source_tag(name: str) -> str:
    """``@<first hex digits of the source hash>`` for a block identified by its source (a user's
    block or a plug-in), ``""`` for built-ins and for a spec that cannot be loaded (its own check
    reports that, in one line)."""
    if is_builtin(name):
        return ""
    try:
        digest = block_identity(name).get("source_sha256")
    except ConfigError:
        return ""
    return user.hash_tag(digest) if digest else ""


def tag_sources(overrides: str) -> str:
    """Hydra's ``k=v,k=v`` override string with each ``model.attn`` value followed by its
    :func:`source_tag`: directory names follow the block's source, so an edited block gets a new run."""
    def tagged(match: re.Match) -> str:
        value = unescape_override(match.group(2))
        return match.group(1) + value + source_tag(value)

    return re.sub(r"(?<![^,])(\+{0,2}model\.attn=)([^,]+)", tagged, overrides)
