"""Cityscapes, 27 classes (SPEC 10.1).

Layout: {root}/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png and
        {root}/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png.
Images are listed in sorted path order and each is paired with its label BY NAME (the original read the
images in os.listdir order but named outputs from a separately sorted list, SPEC 15.5). The item name is
the label's basename, e.g. 'aachen_000000_000019_gtFine_labelIds.png' (SPEC 11).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .benchmarks import BenchmarkDataset, check_split, load_array, require_directory, require_files
from .registry import BenchmarkSpec

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
FIRST_LABEL_ID = 7   # labelIds 7..33 are the 27 evaluated classes
N_CLASSES = 27


def cityscapes_label_ids_to_eval(label_ids: np.ndarray) -> np.ndarray:
    """labelIds (H, W) -> int64 class index: labelId - 7; labelIds < 7 (void) and > 33 -> -1."""
    index = np.asarray(label_ids).astype(np.int64) - FIRST_LABEL_ID
    index[(index < 0) | (index >= N_CLASSES)] = -1
    return index


def list_cityscapes(root: str | os.PathLike, split: str) -> tuple[list[Path], list[Path]]:
    """Sorted leftImg8bit images of `split` and, paired by name, their gtFine labelIds files."""
    root = Path(root)
    require_directory(root, "cityscapes root (dir_dataset)")
    image_dir = require_directory(root / "leftImg8bit" / split, f"cityscapes {split} images")
    label_dir = require_directory(root / "gtFine" / split, f"cityscapes {split} labels")
    # Sorted as strings, as sorted(glob(...)) would be.
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"), key=lambda p: p.as_posix())
    if not images:
        raise ValueError(f"cityscapes {split}: no */*{IMAGE_SUFFIX} files in {image_dir}")
    labels = [label_dir / p.parent.name / (p.name[: -len(IMAGE_SUFFIX)] + LABEL_SUFFIX) for p in images]
    require_files(labels, f"cityscapes {split} label files (*{LABEL_SUFFIX} paired by name with the images)")
    return images, labels


class CityscapesBenchmark(BenchmarkDataset):
    """Cityscapes split 'val' (evaluation, 500 images) or 'train' (pseudo-masks, 2,975 images)."""

    resize = True

    def __init__(self, spec: BenchmarkSpec, root: str | os.PathLike, split: str = "val") -> None:
        check_split(spec, split)
        images, labels = list_cityscapes(root, split)
        super().__init__(spec, root, split, images, labels, [p.name for p in labels])

    def load_label(self, path: Path) -> np.ndarray:
        label_ids = load_array(path)
        if label_ids.ndim != 2:
            raise ValueError(f"{path}: expected a single-channel labelIds PNG, got shape {label_ids.shape}")
        return cityscapes_label_ids_to_eval(label_ids)
