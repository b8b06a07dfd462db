"""The in-memory loader, unit by unit: crop and flip against a per-image reference, rank shares,
and an order that is a pure function of (seed, epoch)."""
from __future__ import annotations

import pytest
import torch

from attn_bench.data.datasets import ImageTensors
from attn_bench.data.loaders import MemoryLoader, _crop_flip, _draw_crop_flip


def reference_crop_flip(x, offsets, flips, pad):
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    out = []
    for i in range(x.shape[0]):
        top, left = int(offsets[0, i]), int(offsets[1, i])
        crop = padded[i, :, top:top + h, left:left + w]
        out.append(crop.flip(-1) if flips[i] else crop)
    return torch.stack(out)


def test_batched_crop_and_flip_equal_per_image_slicing():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 10), dtype=torch.uint8, generator=gen)
    offsets, flips = _draw_crop_flip(16, 3, gen, flip=True)
    assert flips.any() and not flips.all() and offsets.min() >= 0 and offsets.max() <= 6
    assert torch.equal(_crop_flip(x, offsets, flips, 3), reference_crop_flip(x, offsets, flips, 3))


def test_zero_offset_without_flip_crops_the_padding_corner():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    out = _crop_flip(x, torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, dtype=torch.bool), 2)
    assert torch.equal(out[:, :, 2:, 2:], x[:, :, :2, :2]) and out[:, :, :2].eq(0).all()


def loader(n=103, train=True, rank=0, world_size=1, seed=0, batch=10, drop_last=True):
    data = ImageTensors(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous(),
                        torch.arange(n))
    return MemoryLoader(data, batch, torch.device("cpu"), mean=[0, 0, 0], std=[1 / 255] * 3, train=train,
                        seed=seed, drop_last=drop_last, pad=0, flip=False, rank=rank, world_size=world_size)


def labels_of(memory_loader) -> list[int]:
    return [int(v) for _, y in memory_loader for v in y]


@pytest.mark.parametrize("world_size", [2, 3])
def test_training_shares_are_equal_disjoint_and_cover_all_but_the_remainder(world_size):
    shares = [labels_of(loader(rank=r, world_size=world_size, drop_last=False)) for r in range(world_size)]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == 103 // world_size
    assert [loader(rank=r, world_size=world_size).num_samples for r in range(world_size)] == [len(shares[0])] * world_size
    seen = [v for s in shares for v in s]
    assert len(seen) == len(set(seen)) == 103 - 103 % world_size


def test_evaluation_shares_see_every_image_exactly_once():
    shares = [labels_of(loader(train=False, rank=r, world_size=3)) for r in range(3)]
    assert sorted(v for s in shares for v in s) == list(range(103))


def test_pixels_follow_their_labels_through_the_shuffle():
    for x, y in loader():
        assert torch.allclose(x[:, 0, 0, 0], y.float())  # std 1/255 and mean 0 undo the /255


def test_order_is_a_function_of_seed_and_epoch_and_resume_skips_exactly():
    a, b = loader(seed=1), loader(seed=1)
    assert labels_of(a) == labels_of(b)
    b.set_epoch(1)
    assert labels_of(a) != labels_of(b)
    assert labels_of(loader(seed=2)) != labels_of(a)
    full = [y.tolist() for _, y in a.iterate()]
    assert [y.tolist() for _, y in a.iterate(start_batch=4)] == full[4:]
    assert len(full) == 10 and all(len(y) == 10 for y in full)  # drop_last: 103 -> 10 batches of 10


def torch_loader(workers: int, train: bool = True, rank: int = 0, world_size: int = 1):
    from torchvision import transforms as T
    from torchvision.datasets import FakeData

    from attn_bench.data.loaders import TorchLoader

    augment = [T.RandomCrop(16, padding=4), T.RandomHorizontalFlip()] if train else []
    data = FakeData(30, (3, 16, 16), num_classes=3, transform=T.Compose(augment + [T.PILToTensor()]), random_offset=5)
    return TorchLoader(data, 4, torch.device("cpu"), train=train, seed=3, drop_last=train, num_workers=workers,
                       rank=rank, world_size=world_size)


def test_the_dataloader_path_sees_the_same_batches_whatever_the_workers_or_the_start():
    """Order and PIL augmentation are functions of (seed, epoch, position): not of the worker processes,
    not of where the epoch started (resume), and not the same in the next epoch."""
    in_process, workers = torch_loader(0), torch_loader(2)
    batches = list(in_process.iterate())
    assert len(batches) == len(in_process) == 7
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, workers.iterate()))
    resumed = list(torch_loader(0).iterate(start_batch=4))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[4:], resumed)) and len(resumed) == 3
    in_process.set_epoch(1)
    assert not torch.equal(torch.cat([x for x, _ in in_process]), torch.cat([x for x, _ in batches]))
    # no augmentation outside training: evaluation sees each image as stored, once, in order
    plain = torch_loader(0, train=False)
    assert torch.equal(torch.cat([y for _, y in plain]), torch.tensor([plain.loader.dataset.dataset[i][1] for i in range(30)]))


def test_dataloader_eval_shares_cover_each_sample_once():
    whole = torch.cat([x for x, _ in torch_loader(0, train=False)])
    shares = [torch.cat([x for x, _ in torch_loader(0, train=False, rank=r, world_size=4)]) for r in range(4)]
    assert [len(s) for s in shares] == [8, 8, 7, 7]  # 30 images over 4 ranks: no padding duplicates
    for rank, share in enumerate(shares):
        assert torch.equal(share, whole[rank::4])


def test_synthetic_classes_are_balanced_and_the_images_a_function_of_the_seed():
    from attn_bench.data.synthetic import CLASSES, make_synthetic

    images, labels = make_synthetic(1003, seed=5)
    counts = torch.bincount(labels, minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1 and counts.sum() == 1003
    again, same_labels = make_synthetic(1003, seed=5)
    assert torch.equal(images, again) and torch.equal(labels, same_labels)
    other, other_labels = make_synthetic(1003, seed=6)
    assert not torch.equal(labels, other_labels) and not torch.equal(images, other)
    assert images.shape == (1003, 3, 32, 32) and images.dtype == torch.uint8


def _synthetic_train(*overrides: str, seed: int = 0):
    from attn_bench.config import compose
    from attn_bench.data.loaders import build_loaders

    cfg = compose("train", ["data.train_size=64", "data.test_size=32", *overrides])
    return build_loaders(cfg.data, 16, torch.device("cpu"), seed, True)[0]


def test_randaugment_changes_pixels_deterministically_and_survives_a_resume():
    plain = list(_synthetic_train())
    augmented = list(_synthetic_train("data.augment=randaugment", "data.random_erasing=0.5"))
    again = list(_synthetic_train("data.augment=randaugment", "data.random_erasing=0.5"))
    other_seed = list(_synthetic_train("data.augment=randaugment", "data.random_erasing=0.5", seed=1))
    assert all(torch.equal(a[1], p[1]) for a, p in zip(augmented, plain))  # same order and labels
    assert not torch.equal(augmented[0][0], plain[0][0])  # the policy changed pixels
    assert all(torch.equal(a[0], b[0]) for a, b in zip(augmented, again))  # a function of the seed
    assert not torch.equal(augmented[0][0], other_seed[0][0])
    loader = _synthetic_train("data.augment=randaugment", "data.random_erasing=0.5")
    resumed = list(loader.iterate(start_batch=2))
    assert all(torch.equal(r[0], a[0]) for r, a in zip(resumed, augmented[2:]))  # resume-proof
    erased = [(x == 0).all(1).flatten(1).any(1) for x, _ in augmented]  # erased patches are 0 after normalising
    assert any(e.any() for e in erased)


@pytest.mark.parametrize("policy, name", [("randaugment", "RandAugment"), ("autoaugment", "AutoAugment"),
                                          ("trivialaugment", "TrivialAugmentWide")])
def test_the_dataloader_path_applies_the_same_policies_to_training_images_only(policy, name):
    from attn_bench.config import compose
    from attn_bench.data.loaders import _pil_transforms

    cfg = compose("train", ["data=imagefolder", "data.root=/x", "data.num_classes=2", "data.img_size=32",
                            f"data.augment={policy}", "data.random_erasing=0.25"]).data
    train = [type(t).__name__ for t in _pil_transforms(cfg, True).transforms]
    assert name in train and train[-1] == "RandomErasing"
    assert not {name, "RandomErasing"} & {type(t).__name__ for t in _pil_transforms(cfg, False).transforms}
