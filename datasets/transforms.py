"""Evaluation transforms of the benchmarks (SPEC 10); the normalisation constants come from utils.normalisation.

Cityscapes / COCO-Stuff (STEGO's `get_transform(320, is_label, "center")`):
    image: Resize(320, NEAREST) on the shorter side -> CenterCrop(320) -> ToTensor -> ImageNet Normalize.
    Nearest-neighbour for the RGB image too is the original's QUIRK (SPEC 15.6), kept so that evaluation
    numbers stay comparable.
    label: the same geometry (nearest) -> int64.
KITTI-STEP: full resolution, ToTensor -> ImageNet Normalize.

Everything goes through torchvision.transforms.functional on PIL images, so output sizes, rounding of
the long side (`int(320 * long / short)`) and crop offsets (`round((H - 320) / 2)`) are torchvision's.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from utils.normalisation import IMAGENET_MEAN, IMAGENET_STD

EVAL_SIZE = 320


def resize_center_crop(
    image: Image.Image, size: int = EVAL_SIZE, interpolation: InterpolationMode = InterpolationMode.NEAREST
) -> Image.Image:
    """Resize the shorter side to `size`, then centre-crop `size` x `size` (torchvision semantics)."""
    image = TF.resize(image, size, interpolation=interpolation)
    return TF.center_crop(image, [size, size])


def to_normalised_tensor(
    image: Image.Image, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """PIL RGB image -> float32 (3, H, W), ToTensor ([0, 1]) then Normalize(mean, std)."""
    return TF.normalize(TF.to_tensor(image), list(mean), list(std))


def eval_image_transform(image: Image.Image, size: int = EVAL_SIZE) -> torch.Tensor:
    """Cityscapes / COCO-Stuff evaluation image: PIL RGB -> float32 (3, size, size), ImageNet-normalised."""
    return to_normalised_tensor(resize_center_crop(image, size, InterpolationMode.NEAREST))


def eval_label_transform(label: np.ndarray, size: int = EVAL_SIZE) -> torch.Tensor:
    """Cityscapes / COCO-Stuff evaluation label: int (H, W) class ids (-1 = ignore) -> int64 (size, size).

    Nearest resize + centre crop as for the image. The ids go through a 32-bit integer PIL image
    (mode "I"), so -1 and every other value survive unchanged.
    """
    return torch.from_numpy(label_geometry(label, size).astype(np.int64))


def label_geometry(label: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """Nearest resize of the shorter side to `size` + centre crop of an integer (H, W) map -> int32."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be (H, W), got shape {label.shape}")
    if label.size and (label.min() < np.iinfo(np.int32).min or label.max() > np.iinfo(np.int32).max):
        raise ValueError("label values must fit in int32")
    image = Image.fromarray(np.ascontiguousarray(label, dtype=np.int32))
    return np.asarray(resize_center_crop(image, size, InterpolationMode.NEAREST), dtype=np.int32)


def full_resolution_image_transform(image: Image.Image) -> torch.Tensor:
    """KITTI-STEP evaluation image: PIL RGB -> float32 (3, H, W) at full resolution, ImageNet-normalised."""
    return to_normalised_tensor(image)
