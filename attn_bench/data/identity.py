"""What a run was trained on: the dataset's resolved location and a cheap fingerprint of its files.

The fingerprint hashes every file's relative path, size and modification time (no contents are
read, so 60,000 images take well under a second). A run directory records it when the run starts;
running again on a different folder, or on one whose files changed, is refused rather than
reported as the old run's result. The ImageFolder decode cache is keyed on it too.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from attn_bench.data.spec import dataset_spec
from attn_bench.errors import ConfigError

ABSENT = "absent"


def files_fingerprint(folder: Path) -> str:
    """sha1 over (relative path, size, mtime) of every file below ``folder``, symlinked folders
    followed (subsets are often built from them) and folder names included; ``absent`` if none."""
    if not folder.is_dir():
        return ABSENT
    digest, seen = hashlib.sha1(), set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link cycle: each real folder once
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        digest.update(f"dir {Path(dirpath).relative_to(folder)}\n".encode())
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                stat = path.stat()
            except OSError as err:  # e.g. a broken symlink
                raise ConfigError(f"cannot read '{path}' in the dataset ({err.strerror or err}); "
                                  f"fix or remove it") from None
            digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def data_folders(cfg: DictConfig) -> list[Path]:
    """The folders a dataset's files live in (none for the generated synthetic data)."""
    spec = dataset_spec(cfg.name)
    if spec.name == "synthetic":
        return []
    root = Path(cfg.root).expanduser().absolute()
    if spec.folder is not None:
        return [root / spec.folder]
    return [root / split for split in [cfg.train_split, *cfg.eval_splits]]


def dataset_identity(cfg: DictConfig) -> dict[str, Any]:
    """``{"name", "root", "fingerprint"}`` of the data ``cfg`` describes (synthetic: its generator settings)."""
    folders = data_folders(cfg)
    if not folders:
        settings = f"{cfg.name}|{cfg.train_size}|{cfg.test_size}|{cfg.generator_seed}"
        return {"name": cfg.name, "root": None, "fingerprint": hashlib.sha1(settings.encode()).hexdigest()}
    parts = [f"{folder.name}:{files_fingerprint(folder)}" for folder in folders]
    return {"name": cfg.name, "root": str(Path(cfg.root).expanduser().resolve()),
            "fingerprint": hashlib.sha1("|".join(parts).encode()).hexdigest()}
