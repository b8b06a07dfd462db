"""Faults a user meets, each as one line and a recorded reason: full disks, unwritable outputs,
unreadable images, keys that nothing reads."""
from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from attn_bench.commands.train import run_training, validate_config
from attn_bench.errors import ConfigError


def test_a_full_disk_names_the_path_and_keeps_the_last_checkpoint(compose_train, tiny_train, tmp_path, monkeypatch):
    import attn_bench.io

    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".last.pt."):
            calls["n"] += 1
            if calls["n"] == 2:  # epoch 1's last.pt is written; epoch 2's finds the disk full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(attn_bench.io.os, "fsync", fsync)
    with pytest.raises(ConfigError, match=r"cannot write '.*last.pt': No space left on device"):
        run_training(compose_train(tiny_train + ["measure_cost=false"]), tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1  # the previous one, intact
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "No space left on device" in metrics["reason"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_unwritable_output_directory_is_one_line(compose_train, tiny_train, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot create the run directory .*file/run"):
        run_training(compose_train(tiny_train), tmp_path / "file" / "run")


def test_report_out_that_cannot_be_written_is_one_line(tmp_path, capsys):
    from attn_bench.cli import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model:\n  attn: se\nseed: 0\n")
    (tmp_path / "file").write_text("")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "file" / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write" in err and "file/out" in err


@pytest.mark.parametrize("override, valid", [
    ("+trainer.swa=true", "trainer.swa"),
    ("+data.foo=1", "data.foo"),
    ("+model.pretrain=true", "model.pretrain"),
])
def test_keys_that_nothing_reads_are_refused(compose_train, override, valid):
    with pytest.raises(ConfigError, match=f"unknown key {valid}: nothing reads it; (did you mean .*\\? )?valid keys under"):
        validate_config(compose_train([override]))


def test_block_and_timm_arguments_stay_free_form(compose_train):
    validate_config(compose_train(["model.attn=se", "+model.attn_args.rd_ratio=0.25"]))
    validate_config(compose_train(["+model.timm_kwargs.drop_rate=0.1"]))


def write_imagefolder_with_a_truncated_jpeg(root):
    from PIL import Image

    for split in ("train", "val"):
        for c in range(2):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (32, 32), (60 * c, 20 * i, 9)).save(folder / f"{i}.jpg")
    bad = root / "train" / "c1" / "2.jpg"
    bad.write_bytes(bad.read_bytes()[:40])
    return bad


def test_a_truncated_jpeg_is_named_or_skipped_and_counted(compose_train, tmp_path):
    bad = write_imagefolder_with_a_truncated_jpeg(tmp_path / "data")
    overrides = ["data=imagefolder", f"data.root={tmp_path / 'data'}", "data.num_classes=2", "data.img_size=32",
                 f"data.cache_dir={tmp_path / 'cache'}", "model=resnet18_tiny", "trainer=quick", "trainer.epochs=1",
                 "trainer.batch_size=2", "trainer.progress=false", "measure_cost=false", "device=cpu"]
    with pytest.raises(ConfigError, match=f"cannot decode '{bad}'.*data.skip_corrupt=true"):
        run_training(compose_train(overrides), tmp_path / "run")
    metrics = run_training(compose_train(overrides + ["data.skip_corrupt=true"]), tmp_path / "run2")
    assert metrics["status"] == "completed" and metrics["skipped_files"] == 1
    with pytest.raises(ConfigError, match="data.skip_corrupt=true needs data.loader=memory"):
        validate_config(compose_train(overrides + ["data.skip_corrupt=true", "data.loader=torch"]))
