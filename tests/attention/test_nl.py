"""NonLocal ('nl') against the paper and the official video-nonlocal-net (nonlocal_helper.py), in 2-D."""
import pytest
import torch
import torch.nn.functional as F

from attn_bench.attention import block_defaults
from attn_bench.attention.non_local import NonLocal
from attn_bench.errors import ConfigError
from attn_bench.metrics.complexity import count_params
from attn_bench.models import build_model


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_defaults_are_the_official_ones():
    assert block_defaults("nl") == {"rd_ratio": 1 / 2, "sub_sample": True, "use_scale": True}


@pytest.mark.parametrize("c, expected", [(64, 8_480), (512, 526_592), (1024, 2_101_760)])
def test_param_count_is_2c2_plus_4_5c(c, expected):
    """theta, phi, g: C -> C/2 with bias; W: C/2 -> C with bias; BN: 2C."""
    assert 2 * c * c + 9 * c // 2 == expected
    assert n_params(NonLocal(c)) == expected


@pytest.mark.parametrize("train", [True, False])
def test_identity_at_initialisation(train):
    """The BN after W starts with scale 0: z = x exactly (paper Sec. 4.1)."""
    block = NonLocal(64).train(train)
    x = torch.randn(2, 64, 7, 5)
    with torch.no_grad():
        assert torch.equal(block(x), x)


def _reference(block: NonLocal, x: torch.Tensor) -> torch.Tensor:
    """The official computation, written out: pool the input before phi and g, scale by 1/sqrt(Ci),
    softmax over the keys, W then BN, plus x."""
    n, c, h, w = x.shape
    pooled = F.max_pool2d(x, 2, ceil_mode=True)
    theta = F.conv2d(x, block.theta.weight, block.theta.bias).flatten(2)
    phi = F.conv2d(pooled, block.phi.weight, block.phi.bias).flatten(2)
    g = F.conv2d(pooled, block.g.weight, block.g.bias).flatten(2)
    attn = torch.einsum("nci,ncj->nij", theta, phi) / theta.shape[1] ** 0.5
    y = torch.einsum("nij,ncj->nci", attn.softmax(dim=2), g).reshape(n, -1, h, w)
    return block.bn(F.conv2d(y, block.out.weight, block.out.bias)) + x


def test_matches_the_official_computation_by_hand():
    torch.manual_seed(0)
    block = NonLocal(32).eval()
    with torch.no_grad():
        block.bn.weight.normal_()
        block.theta.weight.normal_(std=0.3)
        block.phi.weight.normal_(std=0.3)
        x = torch.randn(2, 32, 6, 8)
        torch.testing.assert_close(block(x), _reference(block, x))
        rows = block.affinity(x)
    assert rows.shape == (2, 48, 12)  # 6x8 queries over 3x4 pooled keys
    torch.testing.assert_close(rows.sum(dim=-1), torch.ones(2, 48))  # softmax over the keys


def test_ceil_mode_pooling_keeps_1x1_maps():
    block = NonLocal(16).eval()
    with torch.no_grad():
        block.bn.weight.fill_(1.0)
        assert block(torch.randn(2, 16, 1, 1)).shape == (2, 16, 1, 1)


def test_paper_placement_is_five_blocks_after_every_other_block_of_res3_res4():
    """video-nonlocal-net res_stage_nonlocal: idx % 2 == 1 in res3 (4 blocks) and res4 (6 blocks)."""
    model = build_model("resnet50", "nl", placement="paper")
    placed = [name for name, m in model.named_modules() if isinstance(m, NonLocal)]
    assert placed == ["layer2.1.act3.attn", "layer2.3.act3.attn", "layer3.1.act3.attn", "layer3.3.act3.attn",
                      "layer3.5.act3.attn"]
    assert count_params(model)["params"] == 25_557_032 + 2 * 526_592 + 3 * 2_101_760 == 32_915_496
    seen = {}
    for name in placed:
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.update({name: (i[0].shape[1], bool((i[0] >= 0).all()))}))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 64))
    # the trunk: the full width after the addition and the block's ReLU (non-negative)
    assert seen == {"layer2.1.act3.attn": (512, True), "layer2.3.act3.attn": (512, True),
                    "layer3.1.act3.attn": (1024, True), "layer3.3.act3.attn": (1024, True),
                    "layer3.5.act3.attn": (1024, True)}


def test_a_fresh_nl_network_computes_the_plain_network():
    """Zero-init BN: the placed blocks change nothing until they learn. What is exact is checked bit for
    bit: each block's branch (BN(W y)) is exactly zero and its output is its input. The two whole networks
    are compared with a tolerance: the same values can round differently around the blocks (kernel choice
    and memory layout differ between machines), which is not a change the blocks made."""
    torch.manual_seed(0)
    plain = build_model("resnet18", "none", num_classes=10)
    torch.manual_seed(0)
    model = build_model("resnet18", "nl", num_classes=10, placement="paper")
    model.load_state_dict(plain.state_dict(), strict=False)
    blocks = [m for m in model.modules() if isinstance(m, NonLocal)]
    assert len(blocks) == 2  # ResNet-18 stages 2-3 have two blocks each: the second of each (layer2.1, layer3.1)
    seen = []
    for block in blocks:
        block.bn.register_forward_hook(lambda m, i, o: seen.append(("branch", bool(o.eq(0).all()))))
        block.register_forward_hook(lambda m, i, o: seen.append(("identity", torch.equal(o, i[0]))))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out, reference = model.eval()(x), plain.eval()(x)
    assert seen == [("branch", True), ("identity", True)] * len(blocks)
    # float32 logits of order 1 after 18 layers: 1e-5 is far below any change a block could make
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_one_line():
    with pytest.raises(ConfigError, match=r"^nl: sub_sample='yes' must be true or false$"):
        NonLocal(64, sub_sample="yes")
