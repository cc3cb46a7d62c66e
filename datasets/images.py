"""Your own images: a file or every file PIL can read in a folder (recursively), at any size.

Size limits, applied to every own image (command line, Python API and web demo):
* An image of more than `MAX_IMAGE_PIXELS` pixels is refused with `ImageTooLargeError` before it is
  decoded (a small compressed file can expand to gigabytes: a "decompression bomb").
* Inference runs with the shorter side resized to `image_short_side`, and then, if the result has more
  than `MAX_INFERENCE_PIXELS` pixels (very elongated or full-size images), scaled down further to fit.
  Masks are resized back to the input size, so only the resolution of the prediction is affected.
  An image so elongated that its shorter side would end below `MIN_INFERENCE_SIDE` pixels is refused
  with `ImageTooThinError` (the own-images run counts it as a skipped image).

Images are read as they are meant to be seen: the EXIF orientation is applied (masks line up with the
picture a viewer shows), 16-bit data (PNG, TIFF or a uint16 array) is scaled 0..65535 -> 0..255, and
float data (a float TIFF or array) in 0..1 is scaled to 0..255 (float data in 0..255 is taken as it is;
other ranges are refused). Files, PIL images and arrays follow the same rules.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps

from utils.folder_swap import old_prefix, staging_prefix
from utils.normalisation import IMAGENET_MEAN, IMAGENET_STD

MAX_IMAGE_PIXELS = 100_000_000  # e.g. 20,000 x 5,000; PIL's own guard refuses files above ~179M pixels
MAX_INFERENCE_PIXELS = 1_048_576  # 1024 x 1024: memory of the encoder's attention stays bounded
MIN_INFERENCE_SIDE = 32  # DenseCLIP's output stride: a thinner input has no feature row left

ImageInput = Union[Image.Image, np.ndarray, str, os.PathLike]


class ImageTooLargeError(ValueError):
    """An image has more pixels than the configured limit."""


class ImageTooThinError(ValueError):
    """An image is too elongated: at inference size its shorter side would be below MIN_INFERENCE_SIDE."""


def image_extensions() -> set[str]:
    """Lower-case file extensions PIL can open (".jpg", ".png", ".webp", ...)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def list_images(location: str | os.PathLike, exclude: Optional[str | os.PathLike] = None) -> list[Path]:
    """[location] if it is a file; else the sorted image files under the folder `location` (recursively),
    leaving out the folder `exclude` (the run's output folder, when it lies inside `location`) and the
    hidden staging folders a run writes beside it.

    A missing path or a folder without images is a clear error.
    """
    location = Path(location)
    if location.is_file():
        return [location]
    if not location.is_dir():
        raise FileNotFoundError(f"--images: file or folder not found: {location}")
    extensions = image_extensions()
    paths = sorted(p for p in location.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if exclude is not None:
        paths = [p for p in paths if not _is_output(p, Path(exclude))]
    if not paths:
        raise FileNotFoundError(f"--images: no images found in {location} (looked for {', '.join(sorted(extensions)[:8])}, ...)")
    return paths


def _is_output(path: Path, out_dir: Path) -> bool:
    """Whether `path` lies in `out_dir` or in a folder a run of it stages in (`.{name}.partial-*`, `.{name}.old-*`)."""
    out_dir = out_dir.absolute()
    path = path.absolute()
    if path.is_relative_to(out_dir):
        return True
    prefixes = (staging_prefix(out_dir), old_prefix(out_dir))
    return path.is_relative_to(out_dir.parent) and any(
        part.startswith(prefixes) for part in path.relative_to(out_dir.parent).parts[:1])


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
    """The image as RGB, as a viewer shows it (EXIF orientation applied, 16-bit and float data scaled);
    an unreadable file raises OSError naming it, a huge one ImageTooLargeError."""
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before decoding
            check_pixels(image.width, image.height, max_pixels, what=f"image {path}")
            return rgb_as_meant(image, what=f"image {path}")
    except Image.DecompressionBombError as e:  # PIL's own, stricter-than-ours guard fired first
        raise ImageTooLargeError(f"image {path} is too large to decode safely: {e}") from None
    except ValueError:  # ImageTooLargeError, or pixel values outside every known range
        raise
    except (OSError, SyntaxError) as e:
        raise OSError(f"cannot read image {path}: {e}") from None


def rgb_as_meant(image: Image.Image, what: str = "image") -> Image.Image:
    """RGB PIL image from any PIL image: EXIF orientation applied, then high bit depths scaled to 8 bits.

    PIL's own convert("RGB") clips 16-bit values at 255 (a 16-bit photo turns white) and float values
    in 0..1 to 0 or 1 (a float photo turns black); here they are scaled instead.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return image if image.mode == "RGB" else image.convert("RGB")
    return Image.fromarray(scaled_to_uint8(np.asarray(image), what)).convert("RGB")


def scaled_to_uint8(values: np.ndarray, what: str = "image") -> np.ndarray:
    """uint8 array from uint8, 16-bit (0..65535 -> 0..255) or float (0..1 -> 0..255, or 0..255) pixels."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if np.issubdtype(values.dtype, np.integer):
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if low < 0 or high > 65535:
            raise ValueError(f"{what}: integer pixel values {low}..{high} are outside 0..65535 (16 bits)")
        # 16-bit data (PIL's "I;16" and "I" modes, uint16 arrays): 65535 is white, as a viewer shows it
        return np.round(values.astype(np.float64) / 257.0).astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if not finite.all():
            raise ValueError(f"{what}: float pixels include NaN or infinity")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0.0 or high > 255.0:
            raise ValueError(f"{what}: float pixel values {low:g}..{high:g} are outside 0..1 and 0..255")
        scale = 255.0 if high <= 1.0 else 1.0  # float images are 0..1 by convention; 0..255 also accepted
        return np.clip(np.round(values.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    raise ValueError(f"{what}: unsupported pixel type {values.dtype}")


def to_rgb_image(image: ImageInput, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """A PIL image, an array (H, W, 3), (H, W, 4) or (H, W) of uint8, uint16 or float pixels, or an image
    file path -> RGB PIL image, read by the same rules whatever the form (see the module's docstring)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_pixels)
    if isinstance(image, Image.Image):
        check_pixels(image.width, image.height, max_pixels)
        return rgb_as_meant(image)
    if isinstance(image, np.ndarray):
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(f"image arrays must be (H, W, 3), (H, W, 4) or (H, W), got shape {image.shape}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"empty image array of shape {image.shape}")
        check_pixels(image.shape[1], image.shape[0], max_pixels)
        return Image.fromarray(np.ascontiguousarray(scaled_to_uint8(image, "image array"))).convert("RGB")
    raise TypeError(f"expected a PIL image, a numpy array or a file path, got {type(image).__name__}")


def inference_size(width: int, height: int, short_side: int | None,
                   max_pixels: int | None = MAX_INFERENCE_PIXELS) -> tuple[int, int]:
    """(width, height) for inference: shorter side to `short_side` (as torchvision's resize rounds it),
    then scaled down uniformly to at most `max_pixels` pixels. ImageTooThinError if the shorter side
    ends below MIN_INFERENCE_SIDE."""
    original = (width, height)
    if short_side is not None and min(width, height) != short_side:
        long_side = int(short_side * max(width, height) / min(width, height))
        width, height = (short_side, long_side) if width <= height else (long_side, short_side)
    if max_pixels is not None and width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    if min(width, height) < MIN_INFERENCE_SIDE:
        raise ImageTooThinError(
            f"image of {original[0]} x {original[1]} pixels is too elongated to segment: at inference size "
            f"{width} x {height} its shorter side is below {MIN_INFERENCE_SIDE} pixels"
        )
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
