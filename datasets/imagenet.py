"""ImageNet-2012 as ReCo uses it: the image list of the index, index-time CLIP preprocessing (SPEC 2),
basename -> path look-up and co-segmentation preprocessing of retrieved images (SPEC 4).

Layout (SPEC 2, 10.4): `{dir_imagenet}/{split}/<folder>/<file>.JPEG`, exactly one sub-folder level,
for val too (val must be arranged in class sub-folders, as in the original).
"""
from __future__ import annotations

import functools
import glob
import os
from pathlib import Path
from typing import Sequence

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from .benchmarks import UnreadableImageError
from utils.normalisation import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD

RETRIEVED_IMAGE_SIZE = 224


def list_imagenet_images(dir_imagenet: str | os.PathLike, split: str) -> list[Path]:
    """Sorted `{dir_imagenet}/{split}/<folder>/*.JPEG` (one folder level, as the original's glob).

    Sorted as strings of the full path, so the order (and hence the index row order) is the original's.
    """
    root = Path(dir_imagenet).expanduser() / split
    if not root.is_dir():
        raise ValueError(f"ImageNet {split} directory not found: {root} (expected {root}/<wnid>/<file>.JPEG; "
                         "check dir_imagenet / imagenet_split in the config)")
    pattern = os.path.join(glob.escape(str(root)), "*", "*.JPEG")
    return [Path(p) for p in sorted(p for p in glob.glob(pattern) if os.path.isfile(p))]


@functools.lru_cache(maxsize=4)
def _val_path_map(root: str) -> dict[str, Path]:
    paths = list_imagenet_images(root, "val")
    mapping = {p.name: p for p in paths}
    if len(mapping) != len(paths):
        raise ValueError(f"duplicate image basenames under {root}/val: cannot map index filenames to paths")
    return mapping


def imagenet_path(dir_imagenet: str | os.PathLike, split: str, basename: str) -> Path:
    """Path of an index filename (basename) on disk.

    train: `{dir}/train/{wnid}/{basename}` with wnid = basename.split('_')[0] (no 'Net2012' string hack).
    val: looked up in a basename -> path map of the val folders, built once per directory.
    """
    root = Path(dir_imagenet).expanduser()
    if split == "train":
        return root / "train" / basename.split("_")[0] / basename
    if split == "val":
        mapping = _val_path_map(str(root))
        if basename not in mapping:
            raise ValueError(f"index filename {basename!r} not found under {root}/val/<folder>/ "
                             "(was the index built from another copy of ImageNet?)")
        return mapping[basename]
    raise ValueError(f"imagenet split must be 'train' or 'val', got {split!r}")


def clip_preprocess(image: Image.Image, image_size: int) -> torch.Tensor:
    """SPEC 2: Resize(size, BICUBIC) shorter side -> CenterCrop(size) -> RGB (after the geometry, as the
    original; matters for greyscale/CMYK JPEGs) -> ToTensor -> CLIP Normalize. -> float32 (3, size, size)."""
    return clip_normalise(clip_crop(image, image_size))


def clip_squash(image: Image.Image, image_size: int) -> torch.Tensor:
    """The pixel part of SigLIP-style preprocessing: the whole image resized (bicubic) to size x size, aspect
    ratio not kept, RGB -> uint8 (3, size, size). clip_normalise finishes it."""
    image = TF.resize(image, [image_size, image_size], interpolation=InterpolationMode.BICUBIC)
    return TF.pil_to_tensor(image.convert("RGB"))


def clip_crop(image: Image.Image, image_size: int) -> torch.Tensor:
    """The pixel part of SPEC 2 (PIL, as the original): bicubic resize of the shorter side, centre crop,
    RGB conversion -> uint8 (3, size, size). clip_normalise finishes it, on any device."""
    image = TF.resize(image, image_size, interpolation=InterpolationMode.BICUBIC)
    image = TF.center_crop(image, [image_size, image_size])
    return TF.pil_to_tensor(image.convert("RGB"))


@functools.lru_cache(maxsize=1)
def _clip_value_table() -> torch.Tensor:
    """(3, 256) float32: channel c, byte v -> ToTensor + CLIP Normalize of v, computed on the CPU with the
    very operations of the original (v / 255, then (x - mean) / std), so a look-up gives its exact bits
    on every device (a GPU divides by the scalar 255 as a multiplication by its reciprocal)."""
    values = torch.arange(256, dtype=torch.uint8).expand(3, 1, 256)
    return TF.normalize(values.float().div(255), list(CLIP_MEAN), list(CLIP_STD))[:, 0].contiguous()


def clip_normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, S, S) from clip_crop -> float32 ToTensor + CLIP Normalize, bit-identical to
    clip_preprocess, on the images' device (the index build sends uint8, 4x fewer bytes, and
    normalises on the GPU)."""
    if images.dtype != torch.uint8 or images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"clip_normalise expects uint8 (..., 3, S, S), got {images.dtype} {tuple(images.shape)}")
    table = _clip_value_table().to(images.device)
    offsets = torch.tensor([0, 256, 512], dtype=torch.int32, device=images.device).view(3, 1, 1)
    index = images.to(torch.int32) + offsets  # row-major (channel, byte) positions in the table
    return table.view(-1)[index.reshape(-1)].view(images.shape)


class IndexBuildDataset(Dataset):
    """Images of the index with SPEC 2 preprocessing. Item i -> (i, image (3, S, S) float32, ok).

    resize: "crop" (SPEC 2, OpenAI CLIP) or "squash" (the whole image to S x S, SigLIP's preprocessing).
    normalise=False: the image is clip_crop's uint8 (3, S, S) instead, and the consumer applies
    clip_normalise (on the GPU: 4x fewer bytes through worker queues, pinning and the host-device copy).
    An unreadable or corrupt image never raises: it yields a zero image and ok=False, so the builder
    can exclude it from the index, count it and list it in its report.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], image_size: int, normalise: bool = True,
                 resize: str = "crop") -> None:
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if resize not in ("crop", "squash"):
            raise ValueError(f"resize must be 'crop' (shorter side + centre crop, SPEC 2) or 'squash', got {resize!r}")
        self.resize = clip_crop if resize == "crop" else clip_squash
        self.paths = [str(p) for p in paths]
        self.image_size = int(image_size)
        self.normalise = normalise

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, bool]:
        try:
            with Image.open(self.paths[i]) as image:
                pixels = self.resize(image, self.image_size)
            return i, clip_normalise(pixels) if self.normalise else pixels, True
        except Exception:  # corrupt/truncated/unreadable: reported by the builder, never a crash
            zeros = torch.zeros(3, self.image_size, self.image_size,
                                dtype=torch.float32 if self.normalise else torch.uint8)
            return i, zeros, False


def load_retrieved_image(path: str | os.PathLike) -> torch.Tensor:
    """SPEC 4: RGB -> resize shorter side 224 (bilinear) -> centre crop 224 -> ToTensor -> ImageNet
    Normalize. -> float32 (3, 224, 224). A corrupt file raises UnreadableImageError (a ValueError)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image = TF.resize(image, RETRIEVED_IMAGE_SIZE, interpolation=InterpolationMode.BILINEAR)
            image = TF.center_crop(image, [RETRIEVED_IMAGE_SIZE, RETRIEVED_IMAGE_SIZE])
            return TF.normalize(TF.to_tensor(image), list(IMAGENET_MEAN), list(IMAGENET_STD))
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for missing/corrupt files
        raise UnreadableImageError(path, f"{type(e).__name__}: {e}") from None


def load_retrieved_images(paths: Sequence[str | os.PathLike]) -> torch.Tensor:
    """The k retrieved images for co-segmentation -> float32 (k, 3, 224, 224) (SPEC 4)."""
    if len(paths) == 0:
        return torch.zeros(0, 3, RETRIEVED_IMAGE_SIZE, RETRIEVED_IMAGE_SIZE)
    return torch.stack([load_retrieved_image(p) for p in paths])
