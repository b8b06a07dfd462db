"""Config composition: the card's commands compose to the documented recipes."""
import pytest

from attn_bench.config import group_options
from attn_bench.rundir import dirname_for


def test_default_config_is_the_quick_synthetic_run(compose_train):
    cfg = compose_train()
    assert cfg.data.name == "synthetic"
    assert cfg.model.backbone == "resnet18" and list(cfg.model.timm_kwargs.channels) == [16, 32, 64, 128]
    assert cfg.model.attn == "none"
    assert cfg.trainer.epochs == 5 and cfg.trainer.batch_size == 64 and cfg.data.train_size == 5000
    assert cfg.seed == 0


def test_the_cifar_recipe_keeps_the_papers_batch_of_128(compose_train):
    cfg = compose_train(["data=cifar10"])
    assert cfg.trainer.batch_size == 128 and cfg.trainer.epochs == 200


def test_card_command_composes_to_cifar100_recipe(compose_train):
    cfg = compose_train(["model.attn=gam", "data=cifar100"])
    assert cfg.model.attn == "gam"
    assert cfg.model.backbone == "resnet18"
    assert cfg.data.num_classes == 100
    assert cfg.trainer.epochs == 200
    assert cfg.trainer.optimizer.name == "sgd" and cfg.trainer.optimizer.lr == 0.1
    assert cfg.trainer.scheduler.name == "cosine"


def test_command_line_backbone_wins_over_dataset_recipe(compose_train):
    cfg = compose_train(["data=cifar10", "model=mobilenetv2_100", "trainer.epochs=3"])
    assert cfg.model.backbone == "mobilenetv2_100"
    assert cfg.trainer.epochs == 3


def test_block_arguments_live_beside_the_name(compose_train):
    cfg = compose_train(["model.attn=gc", "model.attn_stages=[2,3,4]", "+model.attn_args.rd_ratio=0.125"])
    assert list(cfg.model.attn_stages) == [2, 3, 4]
    assert cfg.model.attn_args.rd_ratio == 0.125


@pytest.mark.parametrize("group, expected", [
    ("model", {"resnet18", "resnet34", "resnet50", "resnet101", "mobilenetv2_100", "mobilenetv3_large_100"}),
    ("data", {"synthetic", "cifar10", "cifar100", "imagefolder"}),
])
def test_required_group_options_exist(group, expected):
    assert expected <= set(group_options(group))


def test_run_directory_names_are_readable_and_bounded():
    assert dirname_for("") == "default"
    assert dirname_for("data=cifar100,model.attn=gam") == "data=cifar100,model.attn=gam"
    assert "/" not in dirname_for("data.root=/a/b")
    long = dirname_for("x" * 500)
    assert len(long) <= 120 and long != dirname_for("x" * 499)


def test_the_run_name_leaves_out_exactly_the_keys_that_change_no_number():
    """One list: a key in the name but not in the identity gives a needless new run; one in the
    identity but not in the name finds an old directory and is refused there."""
    from omegaconf import OmegaConf

    from attn_bench.config import CONFIG_MODULE
    from attn_bench.rundir import NO_EFFECT_KEYS

    from importlib import resources

    hydra = OmegaConf.load(resources.files(CONFIG_MODULE) / "hydra" / "default.yaml")
    assert set(hydra.job.config.override_dirname.exclude_keys) == set(NO_EFFECT_KEYS)
