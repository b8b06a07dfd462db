"""Batches for the trainer: an in-memory tensor path and the standard torchvision DataLoader path.

The in-memory path keeps the whole split as uint8 on the training device and augments whole
batches as tensors (pad-and-crop, flip, normalise), with no per-sample PIL work. Its order and
augmentation are a pure function of (seed, epoch), which makes mid-epoch resume exact: a resumed
epoch regenerates the same plan and skips the batches already done. The DataLoader path follows the
same plan: its order comes from the same (seed, epoch) generator and every sample's PIL augmentation
runs under its own seed, so neither the number of workers nor a resume changes what is seen.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from attn_bench.data.datasets import ImageTensors, load_dataset, load_tensors
from attn_bench.data.spec import augment_policy, dataset_spec, is_small, resolve_loader


def _draw_crop_flip(n: int, pad: int, gen: torch.Generator, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's random crop offsets (2, n) and flip flags (n,), drawn on the CPU from ``gen``."""
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return offsets, flips


def _crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Random crop after zero padding and horizontal flip, for a whole batch at once.

    One ``gather`` over the flattened padded images, its index built on ``x``'s device: several
    times faster than per-sample slicing or 4-D advanced indexing on a CPU.
    """
    n, c, h, w = x.shape
    offsets, flips = offsets.to(x.device), flips.to(x.device)
    rows = offsets[0].view(n, 1) + torch.arange(h, device=x.device)
    cols = offsets[1].view(n, 1) + torch.arange(w, device=x.device)
    cols = torch.where(flips.view(n, 1), cols.flip(1), cols)
    index = (rows.view(n, h, 1) * (w + 2 * pad) + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


class _EpochPlan:
    """The order of one epoch for this rank, a pure function of (seed, epoch): shuffled for training
    (equal shares under DDP, as ``DistributedSampler(drop_last=True)``), in order for evaluation (every
    sample exactly once over all ranks, no padding duplicates)."""

    def _plan(self, size: int, batch_size: int, train: bool, seed: int, drop_last: bool, rank: int,
              world_size: int) -> None:
        self.size, self.batch_size, self.train, self.seed = size, batch_size, train, seed
        self.drop_last, self.rank, self.world_size = drop_last and train, rank, world_size
        self.epoch = 0
        self.limit: int | None = None  # at most this many batches per epoch (trainer.limit_batches)

    @property
    def num_samples(self) -> int:
        """This rank's share of the split (what ``_indices`` returns, without drawing it)."""
        used = self.size - self.size % self.world_size if self.train else self.size
        return len(range(self.rank, used, self.world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def _augmentation_generator(self) -> torch.Generator:
        gen = self._generator()
        return gen.manual_seed(gen.initial_seed() + 7919)  # a stream separate from the order's

    def _indices(self) -> torch.Tensor:
        n = self.size
        order = torch.randperm(n, generator=self._generator()) if self.train else torch.arange(n)
        if self.train and self.world_size > 1:
            order = order[: n - n % self.world_size]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = self.num_samples
        batches = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return batches if self.limit is None else min(batches, self.limit)

    def __iter__(self):
        return self.iterate()


class MemoryLoader(_EpochPlan):
    """Iterates ``ImageTensors`` in batches on ``device``; this rank's share only under DDP."""

    def __init__(
        self,
        data: ImageTensors,
        batch_size: int,
        device: torch.device,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        seed: int = 0,
        drop_last: bool = True,
        pad: int = 4,
        flip: bool = True,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        policy=None,
        erasing: float = 0.0,
    ):
        self.policy = policy  # data.augment: a torchvision policy, applied per image (training only)
        self.erasing = None if not erasing else _random_erasing(erasing)
        self.skipped = data.skipped  # unreadable files left out of this split
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self._plan(self.labels.numel(), batch_size, train, seed, drop_last, rank, world_size)
        self.device, self.pad, self.flip, self.channels_last = device, pad, flip, channels_last
        # uint8 -> normalised float as one multiply-add: x * scale + shift
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, device=device).view(1, -1, 1, 1) / std_t

    @property
    def _per_image(self) -> bool:
        return self.policy is not None or self.erasing is not None

    def iterate(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of this epoch from ``start_batch`` on (earlier ones are planned, not computed)."""
        indices = self._indices().to(self.device)
        gen = self._augmentation_generator()
        for b in range(len(self)):
            idx = indices[b * self.batch_size : (b + 1) * self.batch_size]
            if self.train:
                # Skipped batches draw their random numbers too, so that the stream stays aligned.
                offsets, flips = _draw_crop_flip(idx.numel(), self.pad, gen, self.flip)
                seeds = torch.randint(2**62, (idx.numel(),), generator=gen).tolist() if self._per_image else None
            if b < start_batch:
                continue
            x = self.images[idx]
            if self.train:
                x = _crop_flip(x, offsets, flips, self.pad)
                x = _each_seeded(x, seeds, self.policy)
            x = torch.addcmul(self.shift, x.float(), self.scale)
            if self.train:
                x = _each_seeded(x, seeds, self.erasing, offset=1)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]


def _random_erasing(p: float):
    from torchvision.transforms import v2

    return v2.RandomErasing(p=p)


def _each_seeded(x: torch.Tensor, seeds: list[int] | None, transform, offset: int = 0) -> torch.Tensor:
    """``transform`` applied to each image on its own, under the image's own seed (torchvision's
    random transforms draw from the global RNG): what a sample gets is a function of (seed, epoch,
    position), so order, resume and the number of devices do not change it."""
    if transform is None:
        return x
    out = torch.empty_like(x)
    for i, seed in enumerate(seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + offset)
            out[i] = transform(x[i])
    return out


class _SeededSamples(Dataset):
    """``dataset[index]`` with the global RNG, which torchvision's random transforms draw from, seeded
    by the sample's own seed (``None``: left alone), in whichever process loads it."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int | None]):
        index, seed = item
        if seed is None:
            return self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class _Batches:
    """The DataLoader's batch sampler: the batches the current ``iterate`` planned (persistent workers
    keep the DataLoader, the plan changes every epoch)."""

    def __init__(self):
        self.batches: list[list[tuple[int, int | None]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TorchLoader(_EpochPlan):
    """The standard path: torchvision dataset + PIL transforms + DataLoader workers."""

    def __init__(self, dataset, batch_size: int, device: torch.device, train: bool, seed: int, drop_last: bool,
                 num_workers: int, rank: int = 0, world_size: int = 1, channels_last: bool = False):
        self._plan(len(dataset), batch_size, train, seed, drop_last, rank, world_size)
        self.device, self.channels_last = device, channels_last
        self.skipped = 0  # data.skip_corrupt needs the memory loader (data.check)
        self.batches = _Batches()
        self.loader = DataLoader(_SeededSamples(dataset), batch_sampler=self.batches, num_workers=num_workers,
                                 pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)

    def iterate(self, start_batch: int = 0):
        """Batches of this epoch from ``start_batch`` on; the skipped ones are never loaded."""
        indices = self._indices().tolist()
        if self.train:  # one seed per position in the epoch, drawn for all positions: resume-proof
            seeds = torch.randint(2**62, (len(indices),), generator=self._augmentation_generator()).tolist()
        else:
            seeds = [None] * len(indices)
        size = self.batch_size
        self.batches.batches = [list(zip(indices[b * size : (b + 1) * size], seeds[b * size : (b + 1) * size]))
                                for b in range(start_batch, len(self))]
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


def _pil_transforms(cfg: DictConfig, train: bool):
    from torchvision import transforms as T

    size = int(cfg.img_size)
    normalize = [T.ToTensor(), T.Normalize(list(cfg.mean), list(cfg.std))]
    policy = [augment_policy(cfg)] if train and cfg.get("augment") else []
    erasing = [_random_erasing(float(cfg.random_erasing))] if train and cfg.get("random_erasing") else []
    if is_small(cfg):
        aug = [T.RandomCrop(size, padding=int(cfg.crop_padding)), T.RandomHorizontalFlip()] if train else []
        resize = [] if dataset_spec(cfg.name).img_size == size else [T.Resize((size, size))]
        return T.Compose(resize + aug + policy + normalize + erasing)
    if train:
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip()] + policy + normalize + erasing)
    return T.Compose([T.Resize(int(round(size / cfg.eval_crop_pct))), T.CenterCrop(size)] + normalize)


def build_loaders(cfg: DictConfig, batch_size: int, device: torch.device, seed: int, drop_last: bool,
                  rank: int = 0, world_size: int = 1, channels_last: bool = False):
    """(train, eval) loaders with per-rank batch ``batch_size`` for the dataset ``cfg`` describes."""
    common = dict(device=device, seed=seed, rank=rank, world_size=world_size, channels_last=channels_last)
    if resolve_loader(cfg) == "memory":
        train = MemoryLoader(load_tensors(cfg, True), batch_size, mean=cfg.mean, std=cfg.std, train=True,
                             drop_last=drop_last, pad=int(cfg.crop_padding), policy=augment_policy(cfg),
                             erasing=float(cfg.get("random_erasing", 0.0)), **common)
    else:
        train = TorchLoader(load_dataset(cfg, True, _pil_transforms(cfg, True)), batch_size, train=True,
                            drop_last=drop_last, num_workers=int(cfg.num_workers), **common)
    return train, build_eval_loader(cfg, batch_size, **common)


def build_eval_loader(cfg: DictConfig, batch_size: int, device: torch.device, seed: int = 0, rank: int = 0,
                      world_size: int = 1, channels_last: bool = False):
    """The evaluation loader alone (``attn-bench eval`` needs no training images)."""
    common = dict(device=device, seed=seed, rank=rank, world_size=world_size, channels_last=channels_last)
    if resolve_loader(cfg) == "memory":
        return MemoryLoader(load_tensors(cfg, False), batch_size, mean=cfg.mean, std=cfg.std, train=False,
                            drop_last=False, **common)
    return TorchLoader(load_dataset(cfg, False, _pil_transforms(cfg, False)), batch_size, train=False,
                       drop_last=False, num_workers=int(cfg.num_workers), **common)
