"""Benchmark datasets (SPEC 10): the common base class, file helpers, batching, and `build_benchmark`.

Every item is a dict
    {"image": float32 (3, H, W) ImageNet-normalised, "label": int64 (H, W) scored-class ids (-1 = ignore),
     "name": relative pseudo-mask path (SPEC 11), "image_path": str}.
Images and labels are always paired by file name, never by position in two separately sorted lists
(SPEC 15.5), and `name` is derived from the files actually loaded.

The concrete readers live in cityscapes.py, coco_stuff.py, kitti_step.py and (the eight open-vocabulary
benchmarks) ovss.py.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .registry import BenchmarkSpec, get_benchmark
from .transforms import EVAL_SIZE, eval_image_transform, eval_label_transform, full_resolution_image_transform


class UnreadableImageError(ValueError):
    """An image or label file exists but cannot be decoded; `.path` names it (the caller may skip it)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        super().__init__(f"cannot read {self.path}: {reason}")


class AnnotationMismatchError(ValueError):
    """A label file does not fit its image or its class list (a broken dataset, not one bad file)."""


def require_directory(path: Path, what: str) -> Path:
    """`path` if it is a directory, else a ValueError naming what was expected and where."""
    if not path.is_dir():
        raise ValueError(f"{what}: directory not found: {path}")
    return path


def require_files(paths: Sequence[Path], what: str) -> None:
    """ValueError listing (up to 5) of `paths` that do not exist."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        examples = "\n  ".join(str(p) for p in missing[:5])
        raise ValueError(f"{len(missing)} {what} missing, e.g.:\n  {examples}")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image fully and convert it to RGB (grayscale/CMYK COCO images included)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert() forces the full decode inside the try
    except (OSError, ValueError, SyntaxError) as error:  # PIL raises all three for broken files
        raise UnreadableImageError(path, f"{type(error).__name__}: {error}") from error


def load_array(path: str | os.PathLike, mode: str | None = None) -> np.ndarray:
    """Decode a label image into a numpy array (optionally converted to `mode`, e.g. "RGB")."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert(mode) if mode else image)
    except (OSError, ValueError, SyntaxError) as error:
        raise UnreadableImageError(path, f"{type(error).__name__}: {error}") from error


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image from its header only (no pixel decoding)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError) as error:
        raise UnreadableImageError(path, f"{type(error).__name__}: {error}") from error
    return height, width


def _size_or(path: str | os.PathLike, unreadable: Optional[tuple[int, int]]) -> tuple[int, int]:
    try:
        return read_image_size(path)
    except UnreadableImageError:
        if unreadable is None:
            raise
        return unreadable


class BenchmarkDataset(Dataset):
    """Base class: subclasses fill the three lists and implement `load_label` (full-resolution ids).

    Attributes: spec (the registry entry it was built from), dataset_name (the spec's name), split, root,
    image_paths, label_paths, names (relative pseudo-mask paths), resize (True: SPEC 10 320x320 evaluation
    geometry; False: full resolution).
    """

    resize: bool = True

    def __init__(self, spec: BenchmarkSpec, root: str | os.PathLike, split: str, image_paths: list[Path],
                 label_paths: list[Path], names: list[str]) -> None:
        self.spec = spec
        self.dataset_name = spec.name
        if not (len(image_paths) == len(label_paths) == len(names)):
            raise ValueError("image_paths, label_paths and names must have equal lengths")
        if not image_paths:
            raise ValueError(f"{self.dataset_name} split {split!r} under {root}: no images found")
        self.root = Path(root)
        self.split = split
        self.image_paths = image_paths
        self.label_paths = label_paths
        self.names = names

    def __len__(self) -> int:
        return len(self.image_paths)

    def load_label(self, path: Path) -> np.ndarray:
        """Full-resolution int64 (H, W) scored-class ids, -1 = ignore."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path = self.image_paths[index]
        image = load_rgb(image_path)
        label = self.load_label(self.label_paths[index])
        if label.shape != (image.height, image.width):
            raise AnnotationMismatchError(f"label {self.label_paths[index]} is {label.shape[1]}x{label.shape[0]} but "
                             f"image {image_path} is {image.width}x{image.height}")
        if self.resize:
            image_t, label_t = eval_image_transform(image), eval_label_transform(label)
        else:
            image_t, label_t = full_resolution_image_transform(image), torch.from_numpy(label.astype(np.int64))
        return {"image": image_t, "label": label_t, "name": self.names[index], "image_path": str(image_path)}

    def image_sizes(self, unreadable: Optional[tuple[int, int]] = None) -> list[tuple[int, int]]:
        """(H, W) of each item's image as returned; full-resolution datasets read image headers only.

        An image whose header cannot be read raises UnreadableImageError, or, with `unreadable` given,
        gets that size (so a caller that skips unreadable items can still group the others by size).
        """
        if self.resize:
            return [(EVAL_SIZE, EVAL_SIZE)] * len(self)
        return [_size_or(p, unreadable) for p in self.image_paths]


def size_grouped_batches(dataset_sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of indices whose images all have the same size (for full-resolution KITTI-STEP).

    Indices of one size keep their order and are cut into chunks of `batch_size`; the batches are
    ordered by their first index, so equal-size datasets give plain consecutive batches.
    Usable as `DataLoader(dataset, batch_sampler=size_grouped_batches(dataset.image_sizes(), bs))`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(dataset_sizes):
        groups.setdefault(tuple(size), []).append(index)
    batches = [indices[i:i + batch_size] for indices in groups.values() for i in range(0, len(indices), batch_size)]
    return sorted(batches, key=lambda batch: batch[0])


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (B, 3, H, W) and labels (B, H, W); names and image paths stay lists."""
    if not items:
        raise ValueError("collate: empty batch")
    sizes = {tuple(item["image"].shape[-2:]) for item in items}
    if len(sizes) > 1:
        raise ValueError(f"collate: images of different sizes {sorted(sizes)} in one batch; "
                         "batch with size_grouped_batches(dataset.image_sizes(), batch_size)")
    return {
        "image": torch.stack([item["image"] for item in items]),
        "label": torch.stack([item["label"] for item in items]),
        "name": [item["name"] for item in items],
        "image_path": [item["image_path"] for item in items],
    }


def build_benchmark(dataset_name: str, root: str | os.PathLike, split: str) -> BenchmarkDataset:
    """The benchmark reader of SPEC 10, as registered in `datasets.registry`: split "val" (evaluation)
    or "train" (pseudo-mask generation: cityscapes train, coco_stuff COCO-Stuff-10k train at
    f"{root}10k", kitti_step train). An unknown name or split is a ValueError listing the known ones."""
    return get_benchmark(dataset_name).build(root, split)


def check_split(spec: BenchmarkSpec, split: str, known: Optional[Sequence[str]] = None) -> None:
    """ValueError unless `split` is in `known`, by default the splits `spec` declares (readers call this,
    so building a reader directly is checked as well)."""
    splits = tuple(spec.splits if known is None else known)
    if split not in splits:
        raise ValueError(f"{spec.name}: unknown split {split!r}; known: {', '.join(splits)}")
