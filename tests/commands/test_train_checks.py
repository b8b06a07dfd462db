"""``validate_config``: the one set of checks a job runs first and a sweep runs for every job."""
from __future__ import annotations

import pytest

from attn_bench.commands.train import validate_config
from attn_bench.errors import ConfigError


@pytest.mark.parametrize("overrides, message", [
    (["model.attn_stages=[7]"], "stage"),
    (["model.attn_position=first"], "first"),
    (["data.loader=bogus"], "unknown data.loader 'bogus'"),
    (["model.attn=se", "+model.attn_args.foo=1"], "attention 'se' has no argument(s) foo"),
    (["trainer.scheduler.name=onecycle"], "unknown scheduler 'onecycle'; valid choices: cosine, tanh, poly, multistep, step, plateau"),
    (["trainer.precision=fp8"], "unknown trainer.precision 'fp8'; valid choices: fp32, bf16, fp16"),
    (["trainer.accumulate_steps=0"], "trainer.accumulate_steps must be a positive integer, got 0"),
    (["trainer.accumulate_steps=1.5"], "trainer.accumulate_steps must be an integer, got 1.5"),
    (["trainer.clip_grad=0"], "trainer.clip_grad must be positive (null = no clipping), got 0"),
    (["trainer.clip_grad=-1.0"], "trainer.clip_grad must be positive (null = no clipping), got -1.0"),
    (["trainer.clip_grad=big"], "trainer.clip_grad must be a number, got 'big'"),
    (["trainer.clip_grad=1.0", "trainer.clip_mode=max"], "unknown trainer.clip_mode 'max'; valid choices: norm, value, agc"),
    (["model.stem=imagenet", "model=resnet50", "data.img_size=32"], None),  # 32 px >= stride 32: fine
    (["model.stem=imagenet", "model=resnet50", "data=imagefolder", "data.root=x", "data.num_classes=2",
      "data.img_size=16"], "img_size=16 is too small for resnet50 with the imagenet stem"),
])
def test_model_data_and_trainer_mistakes_are_all_found_before_building(compose_train, overrides, message):
    cfg = compose_train(overrides)
    if message is None:
        validate_config(cfg)
        return
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)
