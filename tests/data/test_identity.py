"""A run belongs to its data: fingerprints, the decode cache, and refusing another dataset's directory."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from attn_bench.data.datasets import load_tensors
from attn_bench.data.identity import ABSENT, dataset_identity, files_fingerprint
from attn_bench.errors import ConfigError
from conftest import make_imagefolder


def repaint(path: Path, colour) -> None:
    """New pixels, same size on disk is not guaranteed, so bump the mtime as an editor would."""
    Image.new("RGB", (32, 32), colour).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def imagefolder_overrides(root: Path, cache: Path) -> list[str]:
    return ["data=imagefolder", f"data.root={root}", "data.num_classes=2", "data.img_size=32",
            f"data.cache_dir={cache}", "model=resnet18_tiny", "trainer=quick", "trainer.epochs=1",
            "trainer.batch_size=4", "trainer.progress=false", "measure_cost=false", "device=cpu"]


def test_the_fingerprint_follows_the_files(tmp_path):
    root = make_imagefolder(tmp_path / "a")
    before = files_fingerprint(root / "train")
    assert files_fingerprint(root / "train") == before
    repaint(root / "train" / "class0" / "0.png", (1, 2, 3))
    changed = files_fingerprint(root / "train")
    assert changed != before
    (root / "train" / "class1" / "extra.png").write_bytes(b"")
    assert files_fingerprint(root / "train") not in (before, changed)
    assert files_fingerprint(tmp_path / "nowhere") == ABSENT


def test_synthetic_identity_is_its_generator_settings(compose_train):
    a = dataset_identity(compose_train([]).data)
    assert a == dataset_identity(compose_train([]).data) and a["root"] is None
    assert a != dataset_identity(compose_train(["data.generator_seed=7"]).data)


def test_the_decode_cache_never_serves_old_pixels_and_survives_corruption(tmp_path, compose_train, caplog):
    root = make_imagefolder(tmp_path / "a")
    cfg = compose_train(imagefolder_overrides(root, tmp_path / "cache")).data
    first = load_tensors(cfg, train=True)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    repaint(root / "train" / "class0" / "0.png", (255, 0, 0))
    second = load_tensors(cfg, train=True)
    assert not torch.equal(first.images, second.images)
    assert second.images[0, :, 0, 0].tolist() == [255, 0, 0]
    for cache in (tmp_path / "cache").iterdir():
        cache.write_bytes(b"not a tensor file")
    third = load_tensors(cfg, train=True)
    assert torch.equal(third.images, second.images) and "rebuilding it" in caplog.text


def test_a_run_directory_refuses_another_folder_and_changed_files(tmp_path, compose_train):
    from attn_bench.commands.train import run_training

    a, b = make_imagefolder(tmp_path / "a"), make_imagefolder(tmp_path / "b")
    run_dir = tmp_path / "run"
    first = run_training(compose_train(imagefolder_overrides(a, tmp_path / "cache")), run_dir)
    assert first["data"]["root"] == str(a.resolve())
    again = run_training(compose_train(imagefolder_overrides(a, tmp_path / "cache")), run_dir)
    assert again["final"] == first["final"]  # same data: reported, not recomputed
    with pytest.raises(ConfigError, match="different config .*data.root"):
        run_training(compose_train(imagefolder_overrides(b, tmp_path / "cache")), run_dir)
    repaint(a / "val" / "class1" / "3.png", (0, 0, 0))
    with pytest.raises(ConfigError, match="holds a run on different data .*files changed"):
        run_training(compose_train(imagefolder_overrides(a, tmp_path / "cache")), run_dir)


def test_corrupt_cifar_files_are_called_corrupt_not_missing(tmp_path, compose_train):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"):
        (folder / name).write_bytes(b"\x80\x04 truncated")
    cfg = compose_train(["data=cifar10", f"data.root={tmp_path / 'cifar'}"]).data
    with pytest.raises(ConfigError, match="corrupt or incomplete") as err:
        load_tensors(cfg, train=True)
    assert str(folder) in str(err.value) and "not found" not in str(err.value)


def test_data_fetched_while_building_the_loaders_is_what_the_run_records(tmp_path, compose_train, monkeypatch):
    """data.download=true fetches the files inside the loaders: the fingerprint must be taken after,
    or the second run of the same command would be refused as 'different data'."""
    import attn_bench.commands.train.run as run_module
    from attn_bench.commands.train import run_training

    root = tmp_path / "late"
    build = run_module.build_loaders

    def download_then_build(cfg, *args, **kwargs):
        make_imagefolder(root)  # what torchvision's download would do at this point
        return build(cfg, *args, **kwargs)

    monkeypatch.setattr(run_module, "build_loaders", download_then_build)
    overrides = imagefolder_overrides(root, tmp_path / "cache")
    first = run_training(compose_train(overrides), tmp_path / "run")
    assert first["data"]["fingerprint"] == dataset_identity(compose_train(overrides).data)["fingerprint"]
    assert run_training(compose_train(overrides), tmp_path / "run")["final"] == first["final"]


def test_a_directory_without_a_data_record_is_refused_with_the_reason(tmp_path, compose_train):
    from attn_bench.commands.train import run_training

    root = make_imagefolder(tmp_path / "a")
    overrides = imagefolder_overrides(root, tmp_path / "cache")
    run_training(compose_train(overrides), tmp_path / "run")
    (tmp_path / "run" / "run.json").unlink()  # as a run of an older attn-bench left it: config.yaml alone
    with pytest.raises(ConfigError, match="no record of the data it was trained on .*older attn-bench"):
        run_training(compose_train(overrides), tmp_path / "run")


def test_a_change_of_modification_time_alone_changes_the_fingerprint(tmp_path):
    """Same bytes and size, only the mtime moved (a file copied over with other contents of the same size
    looks like this to a stat): the fingerprint does not read the bytes, so the mtime must be in it."""
    root = make_imagefolder(tmp_path / "a")
    before = files_fingerprint(root / "train")
    path = root / "train" / "class0" / "0.png"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert path.stat().st_size == stat.st_size and files_fingerprint(root / "train") != before
