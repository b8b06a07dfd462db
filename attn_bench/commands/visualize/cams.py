"""What the figure shows, as numbers: each run's model from its checkpoint, a fixed class-balanced
set of evaluation images, and class-activation maps from the ``grad-cam`` package
(pytorch-grad-cam: Grad-CAM, Grad-CAM++, Eigen-CAM, ...), plus the share of CAM energy inside a
mask (the synthetic data's shape masks), which the tests check."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from attn_bench.commands.visualize.methods import METHODS
from attn_bench.data import synthetic
from attn_bench.data.datasets import ImageTensors, class_folders, load_tensors
from attn_bench.errors import ConfigError
from attn_bench.models.placement import placed_attention, stage_paths
from attn_bench.rundir import LAST_CKPT
from attn_bench.training.checkpoint import load_run_model


@dataclass
class Images:
    """The drawn images: uint8 for display, normalised for the model, and their labels and masks."""

    raw: torch.Tensor  # uint8 (N, 3, H, W)
    inputs: torch.Tensor  # float (N, 3, H, W), normalised as in training
    labels: torch.Tensor
    class_names: list[str]
    masks: torch.Tensor | None  # bool (N, H, W)


def balanced_indices(labels: torch.Tensor, count: int) -> list[int]:
    """``count`` indices cycling through the classes in order, each class's images in file order:
    the same images for every run on the same data."""
    by_class = {int(c): (labels == c).nonzero().flatten().tolist() for c in labels.unique()}
    picked, rank = [], 0
    while len(picked) < count and any(rank < len(v) for v in by_class.values()):
        picked += [v[rank] for _, v in sorted(by_class.items()) if rank < len(v)][: count - len(picked)]
        rank += 1
    return picked


def eval_images(data_cfg: dict[str, Any], count: int, split: str = "test") -> Images:
    cfg = OmegaConf.create(data_cfg)
    tensors: ImageTensors = load_tensors(cfg, train=split == "train")
    keep = torch.tensor(balanced_indices(tensors.labels, count))
    raw = tensors.images[keep]
    mean = torch.tensor(list(cfg.mean)).view(1, 3, 1, 1)
    std = torch.tensor(list(cfg.std)).view(1, 3, 1, 1)
    masks = None if tensors.masks is None else tensors.masks[keep]
    names = class_names(cfg)
    return Images(raw, (raw.float() / 255 - mean) / std, tensors.labels[keep], names, masks)


CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_names(cfg) -> list[str]:
    if cfg.name == "synthetic":
        return list(synthetic.CLASSES)
    if cfg.name == "cifar10":
        return list(CIFAR10)
    return class_folders(cfg) or [str(i) for i in range(int(cfg.num_classes))]


def load_model(run_dir: Path, config: dict[str, Any], trust_block: bool = False) -> nn.Module:
    """The run's network with its final weights (``last.pt``, weights only), in eval mode."""
    path = run_dir / LAST_CKPT
    if not path.exists():
        raise ConfigError(f"{run_dir}: no checkpoint ({LAST_CKPT}); nothing to draw for this run")
    cfg = OmegaConf.create(config)
    model, _ = load_run_model(run_dir, cfg.model, int(cfg.data.num_classes), int(cfg.data.img_size), path, trust_block)
    return model.eval()


def target_layer(model: nn.Module, name: str | None) -> nn.Module:
    """``name`` (a module path), or the last stage (ResNet ``layer4``, MobileNet ``blocks[-1]``)."""
    stages = stage_paths(model)
    if name is None:
        return model.get_submodule(stages[-1])
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"visualize: --layer '{name}' is not a module of this network; stages: "
                          f"{', '.join(stages)}") from None


def class_activation_maps(model: nn.Module, inputs: torch.Tensor, method: str = "gradcam",
                          layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(CAMs in [0, 1] at the input size (N, H, W), softmax probabilities (N, classes)) for the
    predicted class of each image."""
    import pytorch_grad_cam

    if method not in METHODS:
        raise ConfigError(f"visualize: unknown --method '{method}'; valid choices: {', '.join(METHODS)}")
    with torch.no_grad():
        probs = model(inputs).softmax(dim=1)
    with getattr(pytorch_grad_cam, METHODS[method])(model=model, target_layers=[target_layer(model, layer)]) as cam:
        maps = cam(input_tensor=inputs, targets=None)  # None: the top class of each image
    return torch.from_numpy(maps).float(), probs


def energy_inside(cams: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image: the share of CAM energy inside the mask divided by the mask's share of the image
    (1 = no better than uniform; the object's region singled out: well above 1)."""
    inside = (cams * masks).flatten(1).sum(1) / cams.flatten(1).sum(1).clamp(min=1e-12)
    return inside / masks.flatten(1).float().mean(1)


# A map whose values vary by less than this fraction of their mean is drawn flat: stretching it to
# [0, 1] would paint float32 rounding (~1e-7 relative) as structure (CBAM's zero-initialised
# spatial gate, sigmoid(0) = 0.5 everywhere, came out as a tiled pattern). Real but small
# variation is still stretched, and the row label gives its span so nobody mistakes it for contrast.
FLAT_SPAN = 1e-5


def _normalise(maps: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1]; the ``flat`` ones drawn as a uniform 0.5."""
    values = maps.flatten(1)
    low, high = values.min(1, keepdim=True).values, values.max(1, keepdim=True).values
    scaled = (values - low) / (high - low).clamp(min=1e-12)
    return torch.where(flat[:, None], torch.full_like(scaled, 0.5), scaled).view_as(maps)


def flat_maps(maps: torch.Tensor) -> torch.Tensor:
    """Per image: whether the map is flat (its span is below ``FLAT_SPAN`` of its mean magnitude)."""
    values = maps.flatten(1).float()
    span = values.max(1).values - values.min(1).values
    return span <= FLAT_SPAN * values.abs().mean(1).clamp(min=1e-12)


def block_maps(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, str] | None:
    """The block's own spatial map at its last placed module that has one (the protocol: a method
    ``spatial_map(x) -> (N, h, w)`` given the module's input), upsampled to the image and scaled to
    [0, 1] per image, with a label: that module's path and the maps' median span (max - min), or
    the value of the flat ones, which are drawn flat, not stretched; None when the block draws no
    spatial map."""
    candidates = [(path, m) for path, m in placed_attention(model) if hasattr(m, "spatial_map")]
    if not candidates:
        return None
    path, module = candidates[-1]
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(inputs)
            maps = module.spatial_map(seen[0])
    finally:
        handle.remove()
    if maps is None:
        return None
    flat = flat_maps(maps)
    up = torch.nn.functional.interpolate(maps.unsqueeze(1).float(), size=inputs.shape[-2:], mode="bilinear",
                                         align_corners=False)[:, 0]
    if flat.any():
        value = maps[flat].float().mean().item()
        path = f"{path}\nflat map ({value:.3g}) in {int(flat.sum())}/{len(flat)}"
    else:
        values = maps.flatten(1).float()
        span = (values.max(1).values - values.min(1).values).median().item()
        path = f"{path}\nspan {span:.2g}"
    return _normalise(up, flat), path


def channel_weights_by_stage(model: nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """For a block that weighs channels (``channel_weights(x) -> (N, C)``: SE, ECA, or a user's
    block): every placed module's weights on ``inputs``, pooled per stage ({"layer1": values, ...})."""
    modules = [(path, m) for path, m in placed_attention(model) if hasattr(m, "channel_weights")]
    inputs_seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda m, args, path=path: inputs_seen.setdefault(path, args[0]))
               for path, m in modules]
    try:
        with torch.no_grad():
            model(inputs)
            by_stage: dict[str, list[torch.Tensor]] = {}
            for path, module in modules:
                stage = path.split(".")[0] if not path.startswith("blocks.") else ".".join(path.split(".")[:2])
                by_stage.setdefault(stage, []).append(module.channel_weights(inputs_seen[path]).flatten())
    finally:
        for handle in handles:
            handle.remove()
    return {stage: torch.cat(values) for stage, values in by_stage.items()}
