"""The embedded default dataset: procedurally drawn shapes, 10 classes, 32x32 RGB.

Each image is a textured, tinted noise background with one shape drawn at a random position,
scale and colour; the shape's kind is the label. The class evidence therefore sits in a small,
moving region (where spatial attention can help), and two classes differ only in texture
(horizontal vs vertical stripes), so orientation-sensitive features are needed too.
Generation is deterministic in ``seed`` and needs no files and no network. ``make_synthetic(...,
masks=True)`` also returns each image's shape mask (where the class evidence is drawn), against
which heatmaps are checked.
"""
from __future__ import annotations

import torch

CLASSES = (
    "disk",
    "square",
    "ring",
    "frame",
    "plus",
    "cross",
    "h_stripes",
    "v_stripes",
    "checker",
    "triangle",
)


def _shape_masks(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Masks of every class's shape, stacked on dim 1, for offsets (dx, dy) from the centre."""
    ax, ay = dx.abs(), dy.abs()
    dist = (dx**2 + dy**2).sqrt()
    inside = (ax <= r) & (ay <= r)
    bar = (r / 3).clamp(min=1)
    masks = [
        dist <= r,
        inside,
        (dist <= r) & (dist >= r - 2),
        inside & ((ax >= r - 1.5) | (ay >= r - 1.5)),
        inside & ((ax <= bar / 2 + 0.5) | (ay <= bar / 2 + 0.5)),
        inside & ((dx - dy).abs() <= 1.2) | inside & ((dx + dy).abs() <= 1.2),
        inside & ((dy.long() % 4) < 2),
        inside & ((dx.long() % 4) < 2),
        inside & (((dx.long() // 2) + (dy.long() // 2)) % 2 == 0),
        (dy <= r) & (dy >= -r) & (ax <= (dy + r) / 2),
    ]
    return torch.stack(masks, dim=1)


def _draw(labels: torch.Tensor, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = labels.numel()
    radius = torch.randint(5, 10, (n,), generator=gen).float()
    cx = (torch.rand(n, generator=gen) * (size - 2 * radius - 1) + radius).view(n, 1, 1)
    cy = (torch.rand(n, generator=gen) * (size - 2 * radius - 1) + radius).view(n, 1, 1)
    coords = torch.arange(size, dtype=torch.float32)
    dx = coords.view(1, 1, size) - cx
    dy = coords.view(1, size, 1) - cy
    masks = _shape_masks(dx, dy, radius.view(n, 1, 1))
    mask = masks[torch.arange(n), labels].unsqueeze(1).float()  # (n, 1, H, W)

    # Background: smooth coloured noise plus fine grain, so neither colour nor mean intensity
    # gives the class away.
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=gen)
    background = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    background = 0.25 + 0.4 * background + 0.1 * torch.randn(n, 3, size, size, generator=gen)
    colour = (0.35 + 0.65 * torch.rand(n, 3, 1, 1, generator=gen)).expand(n, 3, size, size)
    image = background * (1 - mask) + colour * mask
    return (image.clamp(0, 1) * 255).round().to(torch.uint8), mask[:, 0].bool()


def make_synthetic(num_images: int, seed: int, size: int = 32, chunk: int = 2048, masks: bool = False):
    """``num_images`` balanced images as a uint8 ``(N, 3, size, size)`` tensor and int64 labels, and
    with ``masks=True`` the bool ``(N, size, size)`` shape masks as a third element."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % len(CLASSES)
    labels = labels[torch.randperm(num_images, generator=gen)]
    drawn = [_draw(labels[i : i + chunk], size, gen) for i in range(0, num_images, chunk)]
    images = torch.cat([d[0] for d in drawn])
    if masks:
        return images, labels, torch.cat([d[1] for d in drawn])
    return images, labels
