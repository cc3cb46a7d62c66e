"""Your own images: every file PIL can read in a folder, recursively, at any size."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from utils.normalisation import IMAGENET_MEAN, IMAGENET_STD


def image_extensions() -> set[str]:
    """Lower-case file extensions PIL can open (".jpg", ".png", ".webp", ...)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def list_images(directory: str | os.PathLike) -> list[Path]:
    """Sorted image files under `directory` (recursively); a clear error if none or no such folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"--images: folder not found: {directory}")
    extensions = image_extensions()
    paths = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not paths:
        raise FileNotFoundError(f"--images: no images found in {directory} (looked for {', '.join(sorted(extensions)[:8])}, ...)")
    return paths


def output_stems(paths: list[Path], root: str | os.PathLike) -> list[str]:
    """Output name of each image: its path relative to `root` without the extension ("sub/photo").

    Two files differing only in extension ("a.jpg", "a.png") keep the extension in the name ("a_png").
    """
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in paths]
    counts = {s: stems.count(s) for s in stems}
    return [s if counts[s] == 1 else f"{s}_{p.suffix.lstrip('.').lower()}" for s, p in zip(stems, paths)]


def load_image(path: str | os.PathLike) -> Image.Image:
    """The image as RGB; an unreadable file raises OSError naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot read image {path}: {e}") from None


def inference_tensor(image: Image.Image, short_side: int | None) -> torch.Tensor:
    """(3, h, w) ImageNet-normalised; the shorter side resized (bilinear) to `short_side` when given."""
    if short_side is not None and min(image.size) != short_side:
        image = TF.resize(image, short_side, interpolation=TF.InterpolationMode.BILINEAR)
    return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)
