"""Model assembly: timm backbone + stem + attention placement.

The names below load on first use (PEP 562), so that the torch-free parts of the package (``labels``: how a
run's model is named in tables and figures) import without torch and timm; the backbones of this package
register with timm when the first of them is used."""
from __future__ import annotations

import importlib

_SOURCES = {
    "SUPPORTED_BACKBONES": "backbones", "Placed": "build", "build_model": "build", "build_placed": "build",
    "check": "build", "model_as_recorded": "build", "model_from_config": "build", "Slot": "placement",
    "attention_modules": "placement", "find_slots": "placement",
}
__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
    globals()[name] = value  # found directly from now on
    return value
