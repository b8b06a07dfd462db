"""Start from pretrained backbone weights: timm's own (``model.pretrained=true``, from the local
Hugging Face / torch cache) or a local file (``model.pretrained_file=<.pth / .safetensors>``).

Every backbone weight is loaded exactly; the attention modules are new and keep their own
initialisation (a file's weights under their paths are not used); the classifier is re-initialised
when the class count differs (fine-tuning); keys the network does not use - e.g. MobileNetV3's own
SE, removed for the baseline - are reported in one line; any other missing key or shape mismatch
is one line naming the key.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attn_bench.errors import ConfigError, check
from attn_bench.io import file_sha256
from attn_bench.models.placement import placed_attention

log = logging.getLogger("attn_bench")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a torch file (a bare state dict, or one under
    ``state_dict`` / ``model`` as training scripts save it)."""
    path = Path(path).expanduser()
    check(path.is_file(), f"model.pretrained_file: '{path}' does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user mistake
        raise ConfigError(f"model.pretrained_file: '{path}' is not a readable state dict ({type(err).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    check(isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()),
          f"model.pretrained_file: '{path}' holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def timm_state_dict(backbone: str, timm_kwargs: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """timm's pretrained weights for ``backbone``, from the local cache (or the network, where there is one)."""
    import timm

    try:
        return timm.create_model(backbone, pretrained=True, **(timm_kwargs or {})).state_dict()
    except Exception as err:  # noqa: BLE001 - offline, no cache, no such weights: one line
        from huggingface_hub.constants import HF_HUB_CACHE

        reason = " ".join(str(err).split())[:200]
        raise ConfigError(f"model.pretrained=true: timm's weights for {backbone} could not be loaded ({reason}); "
                          f"they are looked for in the Hugging Face cache '{HF_HUB_CACHE}' (set HF_HOME to move it; "
                          f"fill it on a machine with network), or give model.pretrained_file=<.pth/.safetensors>") from None


def pretrained_identity(model_cfg) -> dict[str, str] | None:
    """Which weights a run starts from, as part of what the run is: a file by its resolved path and
    SHA-256 (the same path overwritten is other weights), timm's by timm's version and the weights' tag."""
    if model_cfg.get("pretrained_file"):
        path = Path(str(model_cfg.pretrained_file)).expanduser().resolve()  # models.check found it there
        return {"file": str(path), "sha256": file_sha256(path)}
    if model_cfg.get("pretrained"):
        import timm
        from timm.models import get_pretrained_cfg

        weights = get_pretrained_cfg(str(model_cfg.backbone))
        tag = (weights.hf_hub_id or f"{model_cfg.backbone}.{weights.tag}") if weights is not None else "default"
        return {"timm": timm.__version__, "weights": tag}
    return None


def apply_pretrained(model_cfg, model: nn.Module) -> dict[str, list[str]] | None:
    """Load what ``model.pretrained`` / ``model.pretrained_file`` name into ``model`` (None: neither)."""
    if model_cfg.get("pretrained_file"):
        path = model_cfg.pretrained_file
        return load_backbone_weights(model, read_state_dict(path), f"model.pretrained_file '{path}'")
    if model_cfg.get("pretrained"):
        timm_kwargs = dict(model_cfg.timm_kwargs or {})
        return load_backbone_weights(model, timm_state_dict(model_cfg.backbone, timm_kwargs),
                                     f"timm's pretrained {model_cfg.backbone}")
    return None


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, list[str]]:
    """Copy ``state`` into ``model`` as the module docstring says; returns the keys left alone."""
    attn_prefixes = tuple(f"{path}." for path, _ in placed_attention(model))
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_keys = {name for name, p in model.named_parameters() if head is not None
                 and any(p is q for q in head.parameters())}
    own = model.state_dict()
    attention = [k for k in own if k.startswith(attn_prefixes)]
    unused = sorted(k for k in state if k not in own or k.startswith(attn_prefixes))
    head_reset = sorted(k for k in head_keys if k in state and state[k].shape != own[k].shape)
    left_out = set(unused) | set(head_reset)
    loaded = {k: v for k, v in state.items() if k not in left_out}
    for key, value in loaded.items():
        if value.shape != own[key].shape:
            raise ConfigError(f"{source}: {key} has shape {tuple(value.shape)} there and {tuple(own[key].shape)} "
                              f"in this network (another backbone, width or stem?)")
    missing = sorted(k for k in own if k not in state and k not in attention)
    if missing:
        more = f" and {len(missing) - 1} more backbone keys" if len(missing) > 1 else ""
        raise ConfigError(f"{source}: no weights for {missing[0]}{more}; is it a checkpoint of this backbone?")
    model.load_state_dict(loaded, strict=False)
    if unused:
        log.warning("%s: %d key(s) this network does not use, left out: %s%s", source, len(unused),
                    ", ".join(unused[:4]), ", ..." if len(unused) > 4 else "")
    if head_reset:
        log.info("%s: classifier %s re-initialised for %d classes (fine-tuning)", source, ", ".join(head_reset),
                 own[head_reset[0]].shape[0])
    log.info("%s: loaded %d backbone tensors; %d attention tensors keep their own initialisation", source,
             len(own) - len(attention) - len(head_reset), len(attention))
    return {"unused": unused, "head_reset": head_reset, "attention": attention}
