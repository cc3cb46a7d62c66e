"""Your own images: a file or every file PIL can read in a folder (recursively), at any size.

Size limits, applied to every own image (command line, Python API and web demo):
* An image of more than `MAX_IMAGE_PIXELS` pixels is refused with `ImageTooLargeError` before it is
  decoded (a small compressed file can expand to gigabytes: a "decompression bomb").
* Inference runs with the shorter side resized to `image_short_side`, and then, if the result has more
  than `MAX_INFERENCE_PIXELS` pixels (very elongated or full-size images), scaled down further to fit.
  Masks are resized back to the input size, so only the resolution of the prediction is affected.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from utils.normalisation import IMAGENET_MEAN, IMAGENET_STD

MAX_IMAGE_PIXELS = 100_000_000  # e.g. 20,000 x 5,000; PIL's own guard refuses files above ~179M pixels
MAX_INFERENCE_PIXELS = 1_048_576  # 1024 x 1024: memory of the encoder's attention stays bounded

ImageInput = Union[Image.Image, np.ndarray, str, os.PathLike]


class ImageTooLargeError(ValueError):
    """An image has more pixels than the configured limit."""


def image_extensions() -> set[str]:
    """Lower-case file extensions PIL can open (".jpg", ".png", ".webp", ...)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def list_images(location: str | os.PathLike) -> list[Path]:
    """[location] if it is a file; else the sorted image files under the folder `location` (recursively).

    A missing path or a folder without images is a clear error.
    """
    location = Path(location)
    if location.is_file():
        return [location]
    if not location.is_dir():
        raise FileNotFoundError(f"--images: file or folder not found: {location}")
    extensions = image_extensions()
    paths = sorted(p for p in location.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not paths:
        raise FileNotFoundError(f"--images: no images found in {location} (looked for {', '.join(sorted(extensions)[:8])}, ...)")
    return paths


def output_stems(paths: list[Path], root: str | os.PathLike) -> list[str]:
    """Output name of each image: its path relative to `root` without the extension ("sub/photo").

    `root` may be the single image file itself: its stem is then the file's name without extension.
    Two files differing only in extension ("a.jpg", "a.png") keep the extension in the name ("a_png").
    A name that is still not unique ("a.jpg" and "a.JPG"; "a.png" beside "a_png.jpg") gets "_2", "_3", ...
    after its first use, in the order of `paths`. Linear in the number of paths.
    """
    root = Path(root)
    if root.is_file():
        root = root.parent
    stems = [p.relative_to(root).with_suffix("").as_posix() for p in paths]
    counts = Counter(stems)
    names = [s if counts[s] == 1 else f"{s}_{p.suffix.lstrip('.').lower()}" for s, p in zip(stems, paths)]
    return _numbered_repeats(names)


def _numbered_repeats(names: list[str]) -> list[str]:
    """names with every repeat after the first renamed "{name}_{n}" (n = 2, 3, ...), avoiding all names."""
    taken = set(names)
    if len(taken) == len(names):
        return names
    used: set[str] = set()
    next_number: dict[str, int] = {}
    unique = []
    for name in names:
        if name in used:
            number = next_number.get(name, 2)
            while f"{name}_{number}" in taken:
                number += 1
            next_number[name] = number + 1
            name = f"{name}_{number}"
            taken.add(name)
        used.add(name)
        unique.append(name)
    return unique


def check_pixels(width: int, height: int, max_pixels: int | None, what: str = "image") -> None:
    """ImageTooLargeError if width x height exceeds `max_pixels` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width} x {height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}; downscale it first"
        )


def load_image(path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """The image as RGB; an unreadable file raises OSError naming it, a huge one ImageTooLargeError."""
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before decoding
            check_pixels(image.width, image.height, max_pixels, what=f"image {path}")
            return image.convert("RGB")
    except Image.DecompressionBombError as e:  # PIL's own, stricter-than-ours guard fired first
        raise ImageTooLargeError(f"image {path} is too large to decode safely: {e}") from None
    except ImageTooLargeError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise OSError(f"cannot read image {path}: {e}") from None


def to_rgb_image(image: ImageInput, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """A PIL image, a uint8 array (H, W, 3), (H, W, 4) or (H, W), or an image file path -> RGB PIL image."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_pixels)
    if isinstance(image, Image.Image):
        check_pixels(image.width, image.height, max_pixels)
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 (0..255), got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(f"image arrays must be (H, W, 3), (H, W, 4) or (H, W), got shape {image.shape}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"empty image array of shape {image.shape}")
        check_pixels(image.shape[1], image.shape[0], max_pixels)
        return Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    raise TypeError(f"expected a PIL image, a uint8 numpy array or a file path, got {type(image).__name__}")


def inference_size(width: int, height: int, short_side: int | None,
                   max_pixels: int | None = MAX_INFERENCE_PIXELS) -> tuple[int, int]:
    """(width, height) for inference: shorter side to `short_side` (as torchvision's resize rounds it),
    then scaled down uniformly to at most `max_pixels` pixels."""
    if short_side is not None and min(width, height) != short_side:
        long_side = int(short_side * max(width, height) / min(width, height))
        width, height = (short_side, long_side) if width <= height else (long_side, short_side)
    if max_pixels is not None and width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    return width, height


def inference_tensor(image: Image.Image, short_side: int | None,
                     max_pixels: int | None = MAX_INFERENCE_PIXELS) -> torch.Tensor:
    """(3, h, w) ImageNet-normalised, resized (bilinear) to `inference_size`."""
    width, height = inference_size(image.width, image.height, short_side, max_pixels)
    if (width, height) != image.size:
        image = TF.resize(image, [height, width], interpolation=TF.InterpolationMode.BILINEAR)
    return TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)
