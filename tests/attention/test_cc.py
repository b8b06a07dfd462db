"""Criss-cross attention ('cc') against CCNet's definition, written out position by position."""
import pytest
import torch

from attn_bench.attention import block_defaults
from attn_bench.attention.criss_cross import CrissCrossAttention
from attn_bench.errors import ConfigError
from attn_bench.models import build_model, build_placed


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def one_pass_by_position(block, x):
    """Each position i: softmax over q_i . k_j for j in its column (without i) and its row (with i), then
    the weighted sum of those v_j (the paper's Eq. 1-2 and the official -inf diagonal)."""
    q, k, v = block.query(x), block.key(x), block.value(x)
    n, c, height, width = x.shape
    out = torch.empty_like(x)
    for h in range(height):
        for w in range(width):
            keys = [(g, w) for g in range(height) if g != h] + [(h, u) for u in range(width)]
            energy = torch.stack([(q[:, :, h, w] * k[:, :, a, b]).sum(1) for a, b in keys], dim=1)
            weights = torch.softmax(energy, dim=1)
            out[:, :, h, w] = sum(weights[:, i, None] * v[:, :, a, b] for i, (a, b) in enumerate(keys))
    return out


def test_defaults_size_and_identity_at_init():
    assert block_defaults("cc") == {"recurrence": 2}
    cc = CrissCrossAttention(64)
    assert n_params(cc) == 2 * (64 * 8 + 8) + 64 * 64 + 64 + 1
    x = torch.randn(2, 64, 5, 4)
    assert torch.equal(cc(x), x)  # gamma = 0


def test_it_computes_the_criss_cross_definition_twice_with_the_same_weights():
    torch.manual_seed(0)
    cc = CrissCrossAttention(16)
    with torch.no_grad():
        cc.gamma.fill_(0.7)
    x = torch.randn(2, 16, 4, 5)
    once = 0.7 * one_pass_by_position(cc, x) + x
    torch.testing.assert_close(cc.attend(x), one_pass_by_position(cc, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cc(x), 0.7 * one_pass_by_position(cc, once) + once, atol=1e-5, rtol=1e-5)
    single = CrissCrossAttention(16, recurrence=1)
    single.load_state_dict(cc.state_dict())
    torch.testing.assert_close(single(x), once, atol=1e-5, rtol=1e-5)


def test_the_paper_placement_is_the_trunk_after_the_last_stage():
    model, placement = build_placed("resnet50", "cc", 10, placement="paper")
    assert (placement["site"], placement["stages"], placement["position"]) == ("trunk", [4], "last")
    blocks = [name for name, m in model.named_modules() if isinstance(m, CrissCrossAttention)]
    assert len(blocks) == 1 and blocks[0].startswith("layer4.2")
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    with torch.device("meta"):
        plain = build_model("resnet50", "none", 10)
    assert n_params(model) - n_params(plain) == 2 * (2048 * 256 + 256) + 2048 * 2048 + 2048 + 1


def test_bad_arguments_are_one_line():
    with pytest.raises(ConfigError, match="^cc: recurrence=0 must be a positive integer"):
        CrissCrossAttention(64, recurrence=0)
