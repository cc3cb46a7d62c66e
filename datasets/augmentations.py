"""ReCo+ training augmentations (SPEC 12.3), driven by an explicit random generator.

The original drew from the global `random`, `numpy.random` and torch generators; here every random
choice of one sample comes from a `numpy.random.Generator` seeded with (seed, epoch, index), so the
augmentation of a sample does not depend on worker processes or on where a run was resumed.

Order per sample: shorter side -> crop_size (image bilinear, mask nearest only when it is not already
crop_size x crop_size) + centre crop; random scale U(0.5, 2.0); random crop (right/bottom padding with
the image's mean colour / 255); horizontal flip p=0.5; colour jitter (0.8, 0.8, 0.8, 0.2) p=0.8; Gaussian
blur (cv2, kernel 0.1 * min side, sigma U[0.1, 2.0)) p=0.5; ToTensor + ImageNet normalisation.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from utils.device import seed_sequence
from utils.normalisation import IMAGENET_MEAN, IMAGENET_STD

IGNORE_INDEX = 255
SCALE_RANGE = (0.5, 2.0)
JITTER = (0.8, 0.8, 0.8, 0.2)   # brightness, contrast, saturation, hue
JITTER_P = 0.8
BLUR_P = 0.5
BLUR_SIGMA = (0.1, 2.0)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's augmentation, a pure function of (seed, epoch, index)."""
    return np.random.default_rng(seed_sequence(seed, epoch, index))


def base_geometry(image: Image.Image, mask: Image.Image, size: int) -> tuple[Image.Image, Image.Image]:
    """Shorter side -> size (image bilinear) + centre crop. A mask already size x size (Cityscapes/COCO
    pseudo-masks, saved at the evaluation crop) is kept; others (KITTI, full resolution) get the same
    geometry with nearest-neighbour resizing."""
    image = TF.center_crop(TF.resize(image, size, interpolation=InterpolationMode.BILINEAR), [size, size])
    if mask.size != (size, size):
        mask = TF.center_crop(TF.resize(mask, size, interpolation=InterpolationMode.NEAREST), [size, size])
    return image, mask


def random_scale(image: Image.Image, mask: Image.Image, rng: np.random.Generator,
                 scale_range: tuple[float, float] = SCALE_RANGE) -> tuple[Image.Image, Image.Image]:
    """Resize both by s ~ U(scale_range) to (int(h*s), int(w*s)); image bilinear, mask nearest."""
    s = rng.uniform(*scale_range)
    size = [int(image.height * s), int(image.width * s)]
    return (TF.resize(image, size, interpolation=InterpolationMode.BILINEAR),
            TF.resize(mask, size, interpolation=InterpolationMode.NEAREST))


def random_crop(image: Image.Image, mask: Image.Image, size: int,
                rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """size x size crop at a uniform offset; smaller inputs are first padded on the right/bottom only
    (image with its per-channel mean colour cast to uint8, mask with the ignore index 255)."""
    w, h = image.size
    if h < size or w < size:
        mean = tuple(int(v) for v in np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0))
        padding = [0, 0, max(size - w, 0), max(size - h, 0)]  # left, top, right, bottom
        image = TF.pad(image, padding, fill=mean)
        mask = TF.pad(mask, padding, fill=IGNORE_INDEX)
        w, h = image.size
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return TF.crop(image, top, left, size, size), TF.crop(mask, top, left, size, size)


def colour_jitter(image: Image.Image, rng: np.random.Generator,
                  strength: tuple[float, float, float, float] = JITTER) -> Image.Image:
    """torchvision ColorJitter semantics (factors U[1-s, 1+s], hue U[-h, h], random order), own RNG."""
    b, c, s, h = strength
    factors = [rng.uniform(max(0.0, 1 - b), 1 + b), rng.uniform(max(0.0, 1 - c), 1 + c),
               rng.uniform(max(0.0, 1 - s), 1 + s), rng.uniform(-h, h)]
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in rng.permutation(4):
        image = ops[i](image, factors[i])
    return image


def gaussian_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """cv2 Gaussian blur of an (H, W, 3) uint8 array, kernel int((0.1 * min(H, W)) // 2 * 2 + 1)."""
    sigma = rng.uniform(*BLUR_SIGMA)
    k = int((0.1 * min(image.shape[:2])) // 2 * 2 + 1)
    return cv2.GaussianBlur(image, (k, k), sigma)


def to_tensors(image: np.ndarray | Image.Image, mask: np.ndarray | Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """-> image float32 (3, H, W) ImageNet-normalised, mask int64 (H, W)."""
    image_t = TF.normalize(TF.to_tensor(np.array(image, dtype=np.uint8)), list(IMAGENET_MEAN),
                           list(IMAGENET_STD))
    return image_t, torch.from_numpy(np.array(mask, dtype=np.int64))


def augment(image: Image.Image, mask: Image.Image, rng: np.random.Generator,
            crop_size: int = 320) -> tuple[torch.Tensor, torch.Tensor]:
    """The full training transform of SPEC 12.3: PIL RGB image + PIL "L" mask -> tensors (crop_size^2)."""
    image, mask = base_geometry(image, mask, crop_size)
    image, mask = random_scale(image, mask, rng)
    image, mask = random_crop(image, mask, crop_size, rng)
    if rng.random() > 0.5:
        image, mask = TF.hflip(image), TF.hflip(mask)
    if rng.random() < JITTER_P:
        image = colour_jitter(image, rng)
    array = np.array(image)
    if rng.random() < BLUR_P:
        array = gaussian_blur(array, rng)
    return to_tensors(array, mask)


def no_augment(image: Image.Image, mask: Image.Image, crop_size: int = 320) -> tuple[torch.Tensor, torch.Tensor]:
    """Only the deterministic geometry (shorter side + centre crop) and tensor conversion."""
    image, mask = base_geometry(image, mask, crop_size)
    return to_tensors(image, mask)
