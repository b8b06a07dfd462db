"""How a model config is named in tables, summaries and plots: the backbone with its timm
arguments, the block with whatever makes it a variant (so that differing runs never share a label)."""
from __future__ import annotations

from typing import Any

from attn_bench.attention import BASELINE
from attn_bench.attention.user import SHORT_HASH


def _with_settings(name: str, settings: list[str]) -> str:
    return f"{name} ({', '.join(settings)})" if settings else name


def backbone_label(model: dict[str, Any]) -> str:
    """The backbone, plus its timm arguments when it has any (resnet18 and a narrowed resnet18 differ)."""
    kwargs = model.get("timm_kwargs") or {}
    return _with_settings(str(model["backbone"]), [f"{k}={v}" for k, v in sorted(kwargs.items())])


def block_label(model: dict[str, Any], block: dict[str, Any] | None = None) -> str:
    """The block, plus whatever makes it a variant: its source (a user's block: ``Class@<hash>``, so
    two versions of one file never share a row), its arguments, stages and position."""
    name = str(model["attn"])
    if name == BASELINE:
        return name
    if block and block.get("source_sha256"):
        name = f"{name.rpartition(':')[2]}@{block['source_sha256'][:SHORT_HASH]}"
    settings = [f"{k}={v}" for k, v in sorted((model.get("attn_args") or {}).items())]
    if model.get("attn_stages") is not None:
        settings.append(f"stages={list(model['attn_stages'])}")
    if model.get("attn_position", "every") != "every":
        settings.append(f"position={model['attn_position']}")
    return _with_settings(name, settings)


def row_key(config: dict[str, Any], block: dict[str, Any] | None = None) -> tuple[str, str, str]:
    """(backbone label, dataset, block label): runs that share it are seeds of one experiment.
    ``block`` is the run's recorded block identity (metrics.json ``block``)."""
    return backbone_label(config["model"]), str(config["data"]["name"]), block_label(config["model"], block)
