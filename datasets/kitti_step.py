"""KITTI-STEP, 19 classes, full resolution (SPEC 10.3).

Layout: {root}/{split}/<seq>/<frame>.png (images) and {root}/panoptic_maps/{split}/<seq>/<frame>.png
(RGB panoptic maps: red = semantic id 0..18, 255 = ignore; green/blue = instance). Images are sorted
by (sequence, file name) and paired with their panoptic map by that same key. Item name: '<seq>/<frame>.png'.
Frames are not resized, so sizes vary between sequences: batch with `size_grouped_batches`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .benchmarks import BenchmarkDataset, check_split, load_array, require_directory
from .registry import BenchmarkSpec

N_CLASSES = 19


def kitti_step_panoptic_to_eval(panoptic_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) panoptic map -> int64 (H, W) semantic ids from the red channel; 255 -> -1.

    Other values >= 19 (not produced by the dataset) are also set to -1, so the label holds only
    scored ids or -1 (the metrics ignore both alike).
    """
    panoptic_rgb = np.asarray(panoptic_rgb)
    if panoptic_rgb.ndim != 3 or panoptic_rgb.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) panoptic map, got shape {panoptic_rgb.shape}")
    semantic = panoptic_rgb[..., 0].astype(np.int64)
    semantic[semantic >= N_CLASSES] = -1
    return semantic


def _frames(directory: Path) -> dict[tuple[str, str], Path]:
    return {(p.parent.name, p.name): p for p in directory.glob("*/*.png")}


def list_kitti_step(root: str | os.PathLike, split: str) -> tuple[list[Path], list[Path]]:
    """Images of `split` sorted by (sequence, frame) and their panoptic maps paired by that key."""
    root = require_directory(Path(root), "kitti_step root (dir_dataset)")
    image_dir = require_directory(root / split, f"kitti_step {split} images")
    label_dir = require_directory(root / "panoptic_maps" / split, f"kitti_step {split} panoptic maps")
    images, labels = _frames(image_dir), _frames(label_dir)
    if not images:
        raise ValueError(f"kitti_step {split}: no <seq>/*.png images in {image_dir}")
    for what, missing in (("panoptic maps missing for images", sorted(set(images) - set(labels))),
                          ("images missing for panoptic maps", sorted(set(labels) - set(images)))):
        if missing:
            examples = ", ".join(f"{seq}/{frame}" for seq, frame in missing[:5])
            raise ValueError(f"kitti_step {split}: {len(missing)} {what} "
                             f"(images {image_dir}, maps {label_dir}), e.g. {examples}")
    keys = sorted(images)
    return [images[k] for k in keys], [labels[k] for k in keys]


class KittiStepBenchmark(BenchmarkDataset):
    """KITTI-STEP split 'val' (evaluation, 2,981 frames) or 'train' (pseudo-masks, 5,027 frames)."""

    resize = False

    def __init__(self, spec: BenchmarkSpec, root: str | os.PathLike, split: str = "val") -> None:
        check_split(spec, split)
        images, labels = list_kitti_step(root, split)
        names = [f"{p.parent.name}/{p.name}" for p in labels]
        super().__init__(spec, root, split, images, labels, names)

    def load_label(self, path: Path) -> np.ndarray:
        return kitti_step_panoptic_to_eval(load_array(path, mode="RGB"))
