"""ReCo+ training data: benchmark train images paired BY FILE NAME with ReCo pseudo-masks (SPEC 12.3).

Pseudo-mask names (SPEC 11) are those our `main_reco.py --split train` writes into dt_crf/ and those of
the authors' published archives:
    cityscapes  {dir_pseudo_masks}/<city>_<seq>_<frame>_gtFine_labelIds.png   (flat)
    coco_stuff  {dir_pseudo_masks}/COCO_train2014_<id>.png                    (flat)
    kitti_step  {dir_pseudo_masks}/<seq>/<frame>.png
The original paired two separately sorted lists by position (SPEC 15.5); here every image looks up
its own mask, and a mask missing for an image or a mask without an image is an error listing examples.
Masks are uint8 class indices (0..C-1; 255 = ignore).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from .augmentations import IGNORE_INDEX, augment, no_augment, sample_rng
from .benchmarks import build_benchmark, load_rgb
from .registry import BENCHMARKS, get_benchmark


class PseudoMaskError(ValueError):
    """The pseudo-mask directory does not match the training images."""


def mask_glob(dataset_name: str) -> str:
    """Where the pseudo-masks of `dataset_name` lie below dir_pseudo_masks (its registry entry's
    pseudo_mask_glob); a ValueError naming the benchmarks that have one otherwise."""
    glob = get_benchmark(dataset_name).pseudo_mask_glob
    if glob is None:
        known = BENCHMARKS.names(lambda spec: spec.pseudo_mask_glob is not None)
        raise ValueError(f"dataset_name {dataset_name!r} has no pseudo-masks for ReCo+; known: {', '.join(known)}")
    return glob


def list_pseudo_masks(dir_pseudo_masks: str | os.PathLike, dataset_name: str) -> set[str]:
    """Relative paths ('a.png' or 'seq/a.png') of the pseudo-masks present for `dataset_name`."""
    glob = mask_glob(dataset_name)
    root = Path(dir_pseudo_masks)
    if not root.is_dir():
        raise PseudoMaskError(f"dir_pseudo_masks: directory not found: {root}")
    return {p.relative_to(root).as_posix() for p in root.glob(glob) if p.is_file()}


def pair_pseudo_masks(names: Sequence[str], dir_pseudo_masks: str | os.PathLike, dataset_name: str) -> list[Path]:
    """`{dir_pseudo_masks}/{name}` for every image name; PseudoMaskError when the sets differ."""
    present = list_pseudo_masks(dir_pseudo_masks, dataset_name)
    expected = set(names)
    missing, extra = sorted(expected - present), sorted(present - expected)
    if missing or extra:
        lines = [f"dir_pseudo_masks {dir_pseudo_masks} does not match the {len(expected)} {dataset_name} "
                 f"training images ({len(present)} masks '{mask_glob(dataset_name)}' found):"]
        if missing:
            lines.append(f"  {len(missing)} image(s) without a pseudo-mask, e.g. " + ", ".join(missing[:5]))
        if extra:
            lines.append(f"  {len(extra)} pseudo-mask(s) without an image, e.g. " + ", ".join(extra[:5]))
        lines.append("  (masks are matched by file name: the dt_crf/ output of `main_reco.py --split train` "
                     "or the authors' unpacked archive for the same dataset)")
        raise PseudoMaskError("\n".join(lines))
    root = Path(dir_pseudo_masks)
    return [root / name for name in names]


def load_mask(path: str | os.PathLike) -> Image.Image:
    """A pseudo-mask as a PIL "L" image (uint8 class indices)."""
    with Image.open(path) as mask:
        if mask.mode not in ("L", "P"):
            raise PseudoMaskError(f"{path}: expected a single-channel uint8 PNG of class indices, got mode {mask.mode}")
        return Image.fromarray(np.array(mask, dtype=np.uint8))


class PseudoMaskDataset(Dataset):
    """Items {"image": float32 (3, S, S) ImageNet-normalised, "mask": int64 (S, S), "name": str}.

    Index with an int (epoch 0) or an (index, epoch) pair: the augmentation of a sample is drawn from
    a generator seeded with (seed, epoch, index) (see reco_plus.sampling.ResumableBatchSampler).
    Mask values must be < n_classes or 255.
    """

    def __init__(self, image_paths: Sequence[Path], mask_paths: Sequence[Path], names: Sequence[str],
                 n_classes: int, crop_size: int = 320, seed: int = 0, augment: bool = True) -> None:
        if not (len(image_paths) == len(mask_paths) == len(names)):
            raise ValueError("image_paths, mask_paths and names must have equal lengths")
        if not image_paths:
            raise ValueError("no training images")
        self.image_paths, self.mask_paths, self.names = list(image_paths), list(mask_paths), list(names)
        self.n_classes, self.crop_size, self.seed, self.augment = n_classes, crop_size, seed, augment

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        image = load_rgb(self.image_paths[index])
        mask = load_mask(self.mask_paths[index])
        if self.augment:
            image_t, mask_t = augment(image, mask, sample_rng(self.seed, epoch, index), self.crop_size)
        else:
            image_t, mask_t = no_augment(image, mask, self.crop_size)
        bad = (mask_t >= self.n_classes) & (mask_t != IGNORE_INDEX)
        if bool(bad.any()):
            raise PseudoMaskError(f"{self.mask_paths[index]}: value {int(mask_t[bad].max())} is not a class index "
                                  f"(0..{self.n_classes - 1}) or 255; pseudo-masks of another dataset?")
        return {"image": image_t, "mask": mask_t, "name": self.names[index]}


def build_pseudo_mask_dataset(dataset_name: str, dir_dataset: str | os.PathLike,
                              dir_pseudo_masks: str | os.PathLike, n_classes: int, crop_size: int = 320,
                              seed: int = 0, augment: bool = True) -> PseudoMaskDataset:
    """The benchmark's pseudo-mask split (cityscapes train, COCO-Stuff-10k train at f"{dir_dataset}10k",
    kitti_step train) paired with the masks in `dir_pseudo_masks`."""
    benchmark = build_benchmark(dataset_name, dir_dataset, "train")
    masks = pair_pseudo_masks(benchmark.names, dir_pseudo_masks, dataset_name)
    return PseudoMaskDataset(benchmark.image_paths, masks, benchmark.names, n_classes, crop_size, seed, augment)
