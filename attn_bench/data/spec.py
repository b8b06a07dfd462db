"""One spec per dataset: what attn-bench knows about each, which loader it gets, and the
checks of a ``data`` config node (run before anything is loaded)."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from attn_bench.config import check_group_keys
from attn_bench.errors import check as require
from attn_bench.errors import check_number

LOADERS = ("auto", "memory", "torch")
SMALL_IMAGE_MAX = 64  # images up to this size are decoded once and kept in memory (loader=auto)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    img_size: int | None  # fixed image size; None = any (data.img_size)
    num_classes: int | None  # fixed class count; None = data.num_classes (counted from the folders)
    loaders: tuple[str, ...]  # loaders that can read it
    folder: str | None = None  # torchvision's folder under data.root


SPECS = {
    "synthetic": DatasetSpec("synthetic", 32, 10, ("memory",)),
    "cifar10": DatasetSpec("cifar10", 32, 10, ("memory", "torch"), "cifar-10-batches-py"),
    "cifar100": DatasetSpec("cifar100", 32, 100, ("memory", "torch"), "cifar-100-python"),
    "imagefolder": DatasetSpec("imagefolder", None, None, ("memory", "torch")),
}


def dataset_spec(name: str) -> DatasetSpec:
    require(name in SPECS, f"unknown dataset '{name}'; valid choices: {', '.join(SPECS)}")
    return SPECS[name]


def is_small(cfg: DictConfig) -> bool:
    """Small images (CIFAR-sized) get pad-and-crop augmentation and, with loader=auto, memory."""
    return dataset_spec(cfg.name).img_size is not None or int(cfg.img_size) <= SMALL_IMAGE_MAX


def resolve_loader(cfg: DictConfig) -> str:
    """``memory`` or ``torch`` for ``data.loader`` (``auto`` picks memory for small images)."""
    spec = dataset_spec(cfg.name)
    kind = cfg.loader
    require(kind in LOADERS, f"unknown data.loader '{kind}'; valid choices: {', '.join(LOADERS)}")
    if kind == "auto":
        kind = "memory" if is_small(cfg) else "torch"
    require(kind in spec.loaders, f"data.loader={kind} is not available for {spec.name} data; "
                                  f"valid choices: {', '.join(spec.loaders)}")
    return kind


AUGMENTS = (None, "randaugment", "autoaugment", "trivialaugment")


def augment_policy(cfg: DictConfig):
    """The torchvision policy ``data.augment`` names (None: none); it takes PIL images or uint8
    tensors alike. AutoAugment uses its CIFAR-10 policy for small images, ImageNet's otherwise."""
    from torchvision.transforms import v2

    if cfg.get("augment") is None:
        return None
    if cfg.augment == "autoaugment":
        small = is_small(cfg)
        return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10 if small else v2.AutoAugmentPolicy.IMAGENET)
    return {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide}[cfg.augment]()


def check(cfg: DictConfig) -> None:
    """Every mistake a ``data`` node can hold that shows without reading the data."""
    spec = dataset_spec(cfg.name)
    check_group_keys("data", cfg)
    check_number(cfg.num_classes, "data.num_classes", integer=True)
    check_number(cfg.img_size, "data.img_size", integer=True)
    require(cfg.num_classes > 1, f"data.num_classes must be at least 2, got {cfg.num_classes}")
    require(cfg.img_size >= 8, f"data.img_size must be at least 8, got {cfg.img_size}")
    require(spec.img_size is None or cfg.img_size == spec.img_size,
            f"{spec.name} images are {spec.img_size}x{spec.img_size}; data.img_size={cfg.img_size} is not supported for it")
    require(spec.num_classes is None or cfg.num_classes == spec.num_classes,
            f"{spec.name} data has {spec.num_classes} classes; data.num_classes must be {spec.num_classes}")
    for key in ("subset_per_class", "eval_subset_per_class"):
        value = cfg.get(key)
        require(value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0),
                f"data.{key} must be a positive integer or null, got {value!r}")
    augment, erasing = cfg.get("augment"), cfg.get("random_erasing", 0.0)
    require(augment in AUGMENTS, f"unknown data.augment '{augment}'; valid choices: "
                                 f"{', '.join(str(a) for a in AUGMENTS)}")
    check_number(erasing, "data.random_erasing")
    require(0 <= erasing <= 1, f"data.random_erasing must be in [0, 1], got {erasing}")
    kind = resolve_loader(cfg)
    require(not cfg.get("skip_corrupt") or kind == "memory",
            "data.skip_corrupt=true needs data.loader=memory (images decoded once, up to 64 px); the "
            "DataLoader path reads files as it trains and cannot count what it would skip")
