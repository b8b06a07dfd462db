"""Pretrained starts: every backbone weight loaded exactly, attention modules new, one line per mistake."""
import logging

import pytest
import timm
import torch

from attn_bench.errors import ConfigError
from attn_bench.models import build_model
from attn_bench.models.placement import placed_attention
from attn_bench.models.pretrained import load_backbone_weights, read_state_dict

TINY = {"channels": [16, 32, 64, 128]}


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    """A timm resnet18 (quarter width, 1000 classes) saved to a file, as a stand-in for downloaded weights."""
    torch.manual_seed(1)
    source = timm.create_model("resnet18", **TINY)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(source.state_dict(), path)
    return path, source.state_dict()


def test_every_backbone_weight_is_the_files_and_the_attention_keeps_its_init(timm_file):
    path, weights = timm_file
    torch.manual_seed(0)
    model = build_model("resnet18", "cbam", 1000, timm_kwargs=TINY)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_backbone_weights(model, read_state_dict(path), "file")
    attention = tuple(f"{p}." for p, _ in placed_attention(model))
    for key, value in model.state_dict().items():
        if key.startswith(attention):
            assert torch.equal(value, fresh[key]), key  # the block starts from its own initialisation
        else:
            assert torch.equal(value, weights[key]), key  # every backbone tensor is the file's
    assert report["attention"] and not report["unused"] and not report["head_reset"]


def test_fine_tuning_resets_the_head_for_other_classes_and_reports_unused_keys(timm_file, tmp_path, caplog):
    _, weights = timm_file
    extra = dict(weights, **{"layer1.0.se.fc.weight": torch.zeros(1)})  # e.g. a file with its own SE
    path = tmp_path / "extra.safetensors"
    from safetensors.torch import save_file

    save_file(extra, str(path))
    model = build_model("resnet18", "none", 10, timm_kwargs=TINY)
    with caplog.at_level(logging.INFO, logger="attn_bench"):
        report = load_backbone_weights(model, read_state_dict(path), "file")
    assert report["head_reset"] == ["fc.bias", "fc.weight"] and report["unused"] == ["layer1.0.se.fc.weight"]
    assert torch.equal(model.state_dict()["conv1.weight"], weights["conv1.weight"])
    assert "1 key(s) this network does not use, left out: layer1.0.se.fc.weight" in caplog.text


@pytest.mark.parametrize("change, fragment", [
    (lambda s: s.update({"layer2.0.conv1.weight": torch.zeros(3, 3, 3, 3)}), "layer2.0.conv1.weight has shape (3, 3, 3, 3)"),
    (lambda s: s.pop("layer3.1.bn2.running_var"), "no weights for layer3.1.bn2.running_var"),
])
def test_a_mismatch_names_the_key_in_one_line(timm_file, change, fragment):
    _, weights = timm_file
    state = dict(weights)
    change(state)
    with pytest.raises(ConfigError) as err:
        load_backbone_weights(build_model("resnet18", "se", 1000, timm_kwargs=TINY), state, "file")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_file_that_is_not_a_state_dict_is_one_line(tmp_path):
    (tmp_path / "notes.pth").write_text("not weights")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    for name, fragment in (("missing.pth", "does not exist"), ("notes.pth", "not a readable state dict"),
                           ("list.pth", "holds no state dict")):
        with pytest.raises(ConfigError, match=fragment):
            read_state_dict(tmp_path / name)


def test_the_run_starts_from_the_file_and_mistakes_stop_it_before_training(timm_file, tmp_path, compose_train):
    from attn_bench.commands.train import run_training

    path, weights = timm_file
    cfg = compose_train(["data.train_size=200", "data.test_size=100", "trainer.epochs=1", "measure_cost=false",
                         "model.stem=imagenet", f"model.pretrained_file={path}", "trainer.optimizer.lr=1e-9",
                         "trainer.scheduler.warmup_lr=1e-9", "trainer.progress=false"])
    run_training(cfg, tmp_path / "run")
    trained = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    assert torch.allclose(trained["layer4.1.conv2.weight"], weights["layer4.1.conv2.weight"], atol=1e-6)
    with pytest.raises(ConfigError, match="give one of model.pretrained and model.pretrained_file"):
        run_training(compose_train([f"model.pretrained_file={path}", "model.pretrained=true"]), tmp_path / "both")
    assert not (tmp_path / "both" / "last.pt").exists()


def test_timms_weights_offline_without_a_cache_name_the_cache_and_the_file_option(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), ATTN_BENCH_OUTPUTS=str(tmp_path / "out"))
    proc = subprocess.run([sys.executable, "-m", "attn_bench", "model.pretrained=true", "trainer.progress=false"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1, err
    assert str(tmp_path / "hf" / "hub") in err and "model.pretrained_file" in err
    assert not list(tmp_path.rglob("last.pt"))


def test_mobilenetv3s_own_se_is_reported_unused_when_the_baseline_removes_it(caplog):
    weights = timm.create_model("mobilenetv3_small_100").state_dict()
    model = build_model("mobilenetv3_small_100", "none", 1000)
    with caplog.at_level(logging.WARNING, logger="attn_bench"):
        report = load_backbone_weights(model, weights, "timm's mobilenetv3_small_100")
    assert report["unused"] and all(".se." in key for key in report["unused"])
    assert len([r for r in caplog.records if "does not use" in r.getMessage()]) == 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
