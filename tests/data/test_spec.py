"""Each dataset's spec and the checks of a ``data`` node, before anything is read."""
from __future__ import annotations

import pytest

from attn_bench import data
from attn_bench.errors import ConfigError


@pytest.mark.parametrize("overrides, message", [
    (["data=cifar10", "data.num_classes=5"], "cifar10 data has 10 classes; data.num_classes must be 10"),
    (["data.num_classes=3"], "synthetic data has 10 classes"),
    (["data.loader=torch"], "data.loader=torch is not available for synthetic data; valid choices: memory"),
    (["data.loader=bogus"], "unknown data.loader 'bogus'; valid choices: auto, memory, torch"),
    (["data=cifar100", "data.img_size=64"], "cifar100 images are 32x32"),
    (["data.subset_per_class=0"], "data.subset_per_class must be a positive integer or null"),
])
def test_data_mistakes_are_found_by_the_data_check(compose_train, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.check(compose_train(overrides).data)


@pytest.mark.parametrize("overrides, expected", [
    ([], "memory"),
    (["data=cifar10"], "memory"),
    (["data=imagefolder", "data.root=x", "data.num_classes=3"], "torch"),
    (["data=imagefolder", "data.root=x", "data.num_classes=3", "data.img_size=64"], "memory"),
    (["data=cifar10", "data.loader=torch"], "torch"),
])
def test_auto_picks_memory_for_small_images_and_the_dataloader_otherwise(compose_train, overrides, expected):
    cfg = compose_train(overrides).data
    data.check(cfg)
    assert data.resolve_loader(cfg) == expected
