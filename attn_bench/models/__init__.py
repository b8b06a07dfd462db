"""Model assembly: timm backbone + stem + attention placement."""
from attn_bench.models.backbones import SUPPORTED_BACKBONES
from attn_bench.models.build import build_model
from attn_bench.models.placement import Slot, attention_modules, find_slots

__all__ = ["SUPPORTED_BACKBONES", "Slot", "attention_modules", "build_model", "find_slots"]
