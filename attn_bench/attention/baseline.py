"""The baseline: the backbone with every attention slot empty (``model.attn=none``)."""
from __future__ import annotations

from torch import nn

from attn_bench.attention.sites import ALL_SITES


class NoAttention(nn.Identity):
    """No attention: its output is its input, it has no parameters and takes no arguments.

    It is registered like every block (``create_block('none', C)``, its sites, its defaults), so the
    code above the registry never tests a block's name. Placement puts no module for it anywhere
    (``place_attention`` asks ``is_baseline``): the baseline network is the backbone itself, module
    for module, with the slots timm's blocks call cleared (MobileNetV3's own SE included).
    """

    attn_sites = ALL_SITES

    def __init__(self, channels: int):
        super().__init__()
