"""Image normalisation constants and their inverse: the one place they are defined.

ImageNet statistics normalise every image the dense encoder, DenseCLIP, DeepLabv3+ and the CRF see
(SPEC 10); CLIP statistics normalise the images of the retrieval index (SPEC 2).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def denormalise(image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Invert Normalize(mean, std): (..., 3, H, W) normalised -> values in [0, 1] (not clamped)."""
    mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return image * std_t + mean_t  # the original's t.mul_(s).add_(m), the same float operations


def denormalise_image(image: Tensor) -> np.ndarray:
    """ImageNet-normalised (3, H, W) or (B, 3, H, W) float tensor -> uint8 RGB (H, W, 3) / (B, H, W, 3).

    x * std + mean per channel, then exactly torchvision's to_pil_image conversion of a float
    image, ``(x * 255).astype(np.uint8)``: truncation toward zero. Out-of-range values (never
    produced by a real normalised image) follow the same NumPy cast as the original, no clamping.
    """
    if not isinstance(image, Tensor) or not image.is_floating_point():
        raise ValueError("denormalise_image expects a floating-point torch tensor")
    if image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"denormalise_image expects (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
    x = denormalise(image.detach().cpu())
    return (x.movedim(-3, -1).numpy() * 255).astype(np.uint8)
