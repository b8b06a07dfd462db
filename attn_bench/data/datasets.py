"""Datasets by name: synthetic (embedded), cifar10, cifar100, imagefolder.

Every dataset can be had as :class:`ImageTensors` (all images decoded once into a uint8 tensor,
for the in-memory path) and, except synthetic, as a torchvision ``Dataset`` with PIL transforms
(the standard DataLoader path for large data).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from attn_bench.data.identity import files_fingerprint
from attn_bench.data.spec import dataset_spec
from attn_bench.data.synthetic import make_synthetic
from attn_bench.errors import ConfigError

log = logging.getLogger("attn_bench")


@dataclass
class ImageTensors:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)
    skipped: int = 0  # unreadable files left out (data.skip_corrupt=true)
    masks: torch.Tensor | None = None  # bool (N, H, W) where the class evidence is (synthetic data only)

    def __len__(self) -> int:
        return self.labels.numel()

    def subset_per_class(self, per_class: int | None) -> "ImageTensors":
        """The first ``per_class`` images of every class (all when ``None``)."""
        if per_class is None:
            return self
        keep = torch.tensor(_first_per_class(self.labels, per_class))
        masks = None if self.masks is None else self.masks[keep]
        return ImageTensors(self.images[keep], self.labels[keep], self.skipped, masks)


# --- torchvision CIFAR ------------------------------------------------------------------------

def _cifar(cfg: DictConfig, train: bool, transform=None):
    from torchvision import datasets

    cls = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    root = Path(cfg.root).expanduser().absolute()
    try:
        return cls(str(root), train=train, download=bool(cfg.download), transform=transform)
    except Exception as err:  # torchvision raises RuntimeError when absent, URLError/OSError offline
        how = (
            f"put the python-version archive contents ('{dataset_spec(cfg.name).folder}/') there, "
            f"point data.root at a folder that has them, or set data.download=true on a machine with network"
        )
        folder = root / dataset_spec(cfg.name).folder
        if cfg.download:
            reason = "download failed: " + str(err).splitlines()[0]
        elif folder.is_dir() and any(folder.iterdir()):  # there, but torchvision's md5 check failed
            reason = f"the files in '{folder}' are corrupt or incomplete (torchvision's checksums do not match)"
            how = "replace them with an intact copy of the python-version archive"
        else:
            reason = "files not found"
        raise ConfigError(f"{cfg.name}: {reason} under '{root}'; {how}") from None


def _cifar_tensors(cfg: DictConfig, train: bool) -> ImageTensors:
    ds = _cifar(cfg, train)
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(images, torch.tensor(ds.targets, dtype=torch.int64))


# --- ImageFolder ------------------------------------------------------------------------------


def _split_dir(cfg: DictConfig, train: bool) -> Path:
    root = Path(cfg.root).expanduser()
    names = [cfg.train_split] if train else list(cfg.eval_splits)
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise ConfigError(
        f"imagefolder: no {'/'.join(names)} folder under '{root}'; expected '{root}/<split>/<class>/<image>' "
        f"(set data.root, data.train_split or data.eval_splits)"
    )


def eval_split_name(cfg: DictConfig) -> str:
    """The split evaluation reads: ``test`` for the built-in datasets, the first of
    ``data.eval_splits`` that exists for an ImageFolder tree."""
    return _split_dir(cfg, False).name if cfg.name == "imagefolder" else "test"


def _imagefolder(cfg: DictConfig, train: bool, transform=None):
    from torchvision import datasets

    folder = _split_dir(cfg, train)
    try:
        ds = datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as err:
        raise ConfigError(f"imagefolder: cannot read '{folder}': {err}") from None
    if len(ds.classes) != cfg.num_classes:
        raise ConfigError(f"imagefolder: '{folder}' has {len(ds.classes)} class folders but data.num_classes="
                          f"{cfg.num_classes}; set data.num_classes={len(ds.classes)}")
    return ds


def _per_class(cfg: DictConfig, train: bool) -> int | None:
    return cfg.get("subset_per_class") if train else cfg.get("eval_subset_per_class")


def _first_per_class(targets: list[int] | torch.Tensor, per_class: int | None) -> list[int]:
    """Indices of the first ``per_class`` samples of every class, in dataset order."""
    targets = torch.as_tensor(targets)
    if per_class is None:
        return list(range(len(targets)))
    keep = torch.cat([torch.nonzero(targets == c).flatten()[:per_class] for c in targets.unique()])
    return keep.sort().values.tolist()


def _cache_path(cfg: DictConfig, folder: Path, count: int) -> Path:
    """Keyed on the folder's files (paths, sizes, modification times): a changed image is a new cache."""
    key = f"{folder.resolve()}|{count}|{cfg.img_size}|{bool(cfg.skip_corrupt)}|{files_fingerprint(folder)}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    cache_dir = Path(os.path.expanduser(cfg.cache_dir))
    return cache_dir / f"{folder.parent.name}-{folder.name}-{cfg.img_size}px-{digest}.pt"


def _read_image(ds, path: str, skip_corrupt: bool):
    """The image as RGB, or None for an unreadable file when ``skip_corrupt``; else one line naming it."""
    try:
        return ds.loader(path).convert("RGB")  # convert() forces the decode that finds a truncated file
    except (OSError, SyntaxError, ValueError) as err:  # PIL: unidentified, truncated, broken headers
        if skip_corrupt:
            return None
        raise ConfigError(f"imagefolder: cannot decode '{path}' ({type(err).__name__}: {err}); replace or remove "
                          f"it, or set data.skip_corrupt=true to leave unreadable files out") from None


def _decode(ds, indices: list[int], size: int, skip_corrupt: bool) -> ImageTensors:
    from torchvision.transforms.functional import pil_to_tensor, resize

    images = torch.empty(len(indices), 3, size, size, dtype=torch.uint8)
    kept = []
    for i in indices:
        img = _read_image(ds, ds.samples[i][0], skip_corrupt)
        if img is None:
            continue
        if img.size != (size, size):
            img = resize(img, [size, size], antialias=True)
        images[len(kept)] = pil_to_tensor(img)
        kept.append(i)
    labels = torch.tensor([ds.targets[i] for i in kept], dtype=torch.int64)
    return ImageTensors(images[: len(kept)], labels, skipped=len(indices) - len(kept))


def _imagefolder_tensors(cfg: DictConfig, train: bool) -> ImageTensors:
    """Decode the split once (the subset only, when one is asked for) and cache it on disk."""
    from attn_bench.io import atomic_torch_save

    ds = _imagefolder(cfg, train)
    indices = _first_per_class(ds.targets, _per_class(cfg, train))
    path = _cache_path(cfg, _split_dir(cfg, train), len(indices))
    if path.exists():
        try:
            cached = torch.load(path, weights_only=True)
            return ImageTensors(cached["images"], cached["labels"], int(cached.get("skipped", 0)))
        except Exception as err:  # a torn or foreign file: decode again rather than fail or trust it
            log.warning("decode cache %s is unreadable (%s); rebuilding it", path, type(err).__name__)
    tensors = _decode(ds, indices, int(cfg.img_size), bool(cfg.skip_corrupt))
    atomic_torch_save({"images": tensors.images, "labels": tensors.labels, "skipped": tensors.skipped}, path)
    return tensors


# --- public -----------------------------------------------------------------------------------


def load_tensors(cfg: DictConfig, train: bool) -> ImageTensors:
    """The whole split decoded into memory (for the in-memory path)."""
    if dataset_spec(cfg.name).name == "synthetic":
        count = cfg.train_size if train else cfg.test_size
        images, labels, masks = make_synthetic(int(count), seed=int(cfg.generator_seed) + (0 if train else 1), masks=True)
        tensors = ImageTensors(images, labels, masks=masks)
    elif dataset_spec(cfg.name).folder is not None:
        tensors = _cifar_tensors(cfg, train)
    else:
        return _imagefolder_tensors(cfg, train)  # subset already applied before decoding
    return tensors.subset_per_class(_per_class(cfg, train))


def class_folders(cfg: DictConfig) -> list[str] | None:
    """The class names of an image-folder dataset (its sub-folders, in label order); None otherwise."""
    if dataset_spec(cfg.name).name != "imagefolder":
        return None
    return sorted(d.name for d in _split_dir(cfg, False).iterdir() if d.is_dir())


def load_dataset(cfg: DictConfig, train: bool, transform):
    """A torchvision ``Dataset`` with PIL ``transform`` (for the standard DataLoader path)."""
    ds = _cifar(cfg, train, transform) if dataset_spec(cfg.name).folder is not None else _imagefolder(cfg, train, transform)
    if _per_class(cfg, train) is not None:
        ds = torch.utils.data.Subset(ds, _first_per_class(ds.targets, _per_class(cfg, train)))
    return ds
