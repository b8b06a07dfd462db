"""Model assembly: timm backbone + stem + attention placement."""
from attn_bench.models.backbones import SUPPORTED_BACKBONES
from attn_bench.models.build import Placed, build_model, build_placed, check, model_as_recorded, model_from_config
from attn_bench.models.placement import Slot, attention_modules, find_slots

__all__ = ["SUPPORTED_BACKBONES", "Placed", "Slot", "attention_modules", "build_model", "build_placed", "check",
           "find_slots", "model_as_recorded", "model_from_config"]
