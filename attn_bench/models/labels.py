"""How a model config is named in tables, summaries and plots: the backbone with its timm
arguments, the block with whatever makes it a variant (so that differing runs never share a label)."""
from __future__ import annotations

from typing import Any

from attn_bench.attention import is_baseline
from attn_bench.attention.user import hash_tag


def _with_settings(name: str, settings: list[str]) -> str:
    return f"{name} ({', '.join(settings)})" if settings else name


def backbone_label(model: dict[str, Any]) -> str:
    """The backbone, plus its timm arguments when it has any (resnet18 and a narrowed resnet18 differ)."""
    kwargs = model.get("timm_kwargs") or {}
    return _with_settings(str(model["backbone"]), [f"{k}={v}" for k, v in sorted(kwargs.items())])


def block_label(model: dict[str, Any], block: dict[str, Any] | None = None,
                placement: dict[str, Any] | None = None) -> str:
    """The block, plus whatever makes it a variant: its source (a user's block: ``Class@<hash>``, so
    two versions of one file never share a row), its arguments, site, stages and position as the
    run resolved them (``placement``: metrics.json's record; older runs: the config's values)."""
    name = str(model["attn"])
    if is_baseline(name):
        return name
    if block and block.get("source_sha256"):
        name = name.rpartition(":")[2] + hash_tag(block["source_sha256"])
    if placement:
        args, site, stages, position = placement["args"], placement["site"], placement["stages"], placement["position"]
    else:
        args, site, position = model.get("attn_args") or {}, model.get("attn_site") or "residual", model.get("attn_position") or "every"
        stages = "all" if model.get("attn_stages") is None else list(model["attn_stages"])
    settings = [f"{k}={v}" for k, v in sorted(args.items())]
    if site != "residual":
        settings.append(f"site={site}")
    if stages != "all":
        settings.append(f"stages={list(stages)}")
    if position != "every":
        settings.append(f"position={position}")
    if placement and placement.get("layout"):
        settings.append(placement["layout"])
    if placement and placement.get("note"):  # e.g. SK units in a ResNet: not SKNet's network
        settings.append(placement["note"])
    settings += stage_args_text(placement)
    return _with_settings(name, settings)


def stage_args_text(placement: dict[str, Any] | None) -> list[str]:
    """A placement record's per-stage arguments in words: ``kernel_size by stage 3/5/5/7``."""
    return [f"{key} by stage {'/'.join(str(v) for v in by_stage.values())}"
            for key, by_stage in sorted(((placement or {}).get("stage_args") or {}).items())]


def row_key(config: dict[str, Any], block: dict[str, Any] | None = None,
            placement: dict[str, Any] | None = None) -> tuple[str, str, str]:
    """(backbone label, dataset, block label): runs that share it are seeds of one experiment.
    ``block`` and ``placement`` are the run's records (metrics.json ``block``, ``placement``)."""
    return (backbone_label(config["model"]), str(config["data"]["name"]),
            block_label(config["model"], block, placement))
