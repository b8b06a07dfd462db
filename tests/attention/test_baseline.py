"""The baseline ``none`` is a registered block: the identity, at every site, and it places nothing."""
import pytest
import timm
import torch

from attn_bench.attention import block_defaults, block_identity, block_sites, create_block, list_blocks
from attn_bench.attention.sites import ALL_SITES
from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed


def test_none_is_a_block_like_the_others():
    block = create_block("none", 64)
    x = torch.randn(2, 64, 5, 5)
    assert block(x) is x and sum(p.numel() for p in block.parameters()) == 0
    assert block_sites("none") == ALL_SITES and block_defaults("none") == {}
    assert list_blocks()[0] == "none" and "none" not in list_blocks(include_baseline=False)
    assert block_identity("none") == {"attn": "none"}  # as runs have recorded it: old runs stay the same run
    with pytest.raises(ConfigError, match="attention 'none' has no argument"):
        create_block("none", 64, k=2)


@pytest.mark.parametrize("backbone, site", [("resnet18", "conv"), ("resnet18", "trunk"), ("resnet50", "mid"),
                                            ("resnet18", "input"), ("resnet18", "stage_end"),
                                            ("mobilenetv3_large_100", "residual")])
def test_the_baseline_at_any_site_is_the_backbone_module_for_module(backbone, site):
    """Nothing inserted or replaced (the conv site would replace a conv): timm's own parameters, same
    names and shapes, with only the slots timm's blocks call cleared (MobileNetV3's SE)."""
    torch.manual_seed(0)
    model, placement = build_placed(backbone, "none", 10, attn_site=site)
    plain = timm.create_model(backbone, num_classes=10)
    expected = {k: v.shape for k, v in plain.state_dict().items() if ".se." not in k}
    assert {k: v.shape for k, v in model.state_dict().items()} == expected
    assert placement["site"] == site
