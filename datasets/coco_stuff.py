"""COCO-Stuff: 171 fine classes predicted, 27 coarse classes scored (SPEC 9.3, 10.2).

split 'val'   STEGO's curated evaluation split:
              {root}/curated/val2017/Coco164kFull_Stuff_Coarse.txt (one image id per line),
              {root}/images/val2017/{id}.jpg, {root}/annotations/val2017/{id}.png
              (0-based label ids 0..181, 255 = unlabeled).
split 'train' COCO-Stuff-10k (pseudo-mask generation) at the SIBLING directory f"{root}10k":
              {root}10k/imageLists/train.txt (file order kept), images/{name}.jpg,
              annotations/{name}.mat with key "S" (1-based ids, 0 = unlabeled).
The GT is mapped fine -> coarse with the 0-based 182-id table. A value outside 0..181 (other than
unlabeled) becomes coarse class 0 ("electronic"), as in the original (QUIRK, SPEC 15.13).
Item names are the label basenames with .png, e.g. 'COCO_train2014_000000000077.png' (SPEC 11).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .benchmarks import (BenchmarkDataset, UnreadableImageError, check_split, load_array, require_directory,
                         require_files)
from .metadata import coco_stuff_label_id_to_coarse
from .registry import BenchmarkSpec

CURATED_VAL_LIST = Path("curated") / "val2017" / "Coco164kFull_Stuff_Coarse.txt"
UNLABELED_PNG = 255


def coco_stuff_ids_to_coarse(label_ids: np.ndarray) -> np.ndarray:
    """0-based label ids (H, W), -1 = unlabeled -> int64 coarse class 0..26, -1 kept.

    Ids outside the 182-entry table map to 0 (the original zero-initialised its output; QUIRK).
    """
    ids = np.asarray(label_ids).astype(np.int64)
    lut = coco_stuff_label_id_to_coarse()
    coarse = np.zeros(ids.shape, dtype=np.int64)
    known = (ids >= 0) & (ids < len(lut))
    coarse[known] = lut[ids[known]]
    coarse[ids == -1] = -1
    return coarse


def coco_stuff_png_to_coarse(label: np.ndarray) -> np.ndarray:
    """COCO-Stuff-164k stuffthingmap (0-based ids, 255 = unlabeled) -> coarse ids, -1 = ignore."""
    ids = np.asarray(label).astype(np.int64)
    ids[ids == UNLABELED_PNG] = -1
    return coco_stuff_ids_to_coarse(ids)


def coco_stuff_10k_to_coarse(s: np.ndarray) -> np.ndarray:
    """COCO-Stuff-10k "S" (1-based ids, 0 = unlabeled; any numeric dtype) -> coarse ids, -1 = ignore.

    Cast to int64 BEFORE subtracting 1: the original relied on uint8 wrap-around (0 - 1 = 255), which
    would give 65535 -> coarse 0 for uint16 data (SPEC 10.2).
    """
    ids = np.asarray(s).astype(np.int64) - 1
    ids[ids < 0] = -1
    return coco_stuff_ids_to_coarse(ids)


def coco_stuff_10k_root(root: str | os.PathLike) -> Path:
    """The COCO-Stuff-10k directory: string concatenation f"{root}10k" ('/data/cocostuff' -> '/data/cocostuff10k')."""
    text = os.fspath(root)
    stripped = text.rstrip("/\\")
    return Path((stripped or text) + "10k")


def _read_id_list(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def load_mat_label(path: Path) -> np.ndarray:
    """The "S" array of a COCO-Stuff-10k annotation .mat file."""
    import scipy.io  # only the 10k split needs scipy

    try:
        content = scipy.io.loadmat(path, variable_names=["S"])
    except (OSError, ValueError, NotImplementedError, TypeError) as error:
        raise UnreadableImageError(path, f"{type(error).__name__}: {error}") from error
    if "S" not in content:
        raise UnreadableImageError(path, 'no variable "S" in the .mat file')
    s = np.asarray(content["S"])
    if s.ndim != 2:
        raise UnreadableImageError(path, f'"S" has shape {s.shape}, expected (H, W)')
    return s


class CocoStuffBenchmark(BenchmarkDataset):
    """COCO-Stuff 'val' (curated, 2,175 images) or 'train' (COCO-Stuff-10k train.txt, 9,000 images)."""

    resize = True

    def __init__(self, spec: BenchmarkSpec, root: str | os.PathLike, split: str = "val") -> None:
        check_split(spec, split)
        self.is_10k = split == "train"
        if self.is_10k:
            images, labels = self._list_10k(root)
        else:
            images, labels = self._list_curated_val(root)
        names = [p.with_suffix(".png").name for p in labels]
        super().__init__(spec, root, split, images, labels, names)

    @staticmethod
    def _list_curated_val(root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
        root = require_directory(Path(root), "coco_stuff root (dir_dataset)")
        list_file = root / CURATED_VAL_LIST
        if not list_file.is_file():
            raise ValueError(f"coco_stuff val: curated image list not found: {list_file}")
        ids = _read_id_list(list_file)
        if not ids:
            raise ValueError(f"coco_stuff val: empty image list {list_file}")
        image_dir = require_directory(root / "images" / "val2017", "coco_stuff val images")
        label_dir = require_directory(root / "annotations" / "val2017", "coco_stuff val labels")
        images = [image_dir / f"{i}.jpg" for i in ids]
        labels = [label_dir / f"{i}.png" for i in ids]
        require_files(images, f"coco_stuff val images (listed in {list_file})")
        require_files(labels, f"coco_stuff val labels (listed in {list_file})")
        return images, labels

    @staticmethod
    def _list_10k(root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
        root_10k = require_directory(coco_stuff_10k_root(root),
                                     f"coco_stuff train: COCO-Stuff-10k (sibling of dir_dataset {root})")
        list_file = root_10k / "imageLists" / "train.txt"
        if not list_file.is_file():
            raise ValueError(f"coco_stuff train: image list not found: {list_file}")
        names = _read_id_list(list_file)  # file order kept (SPEC 10.2)
        if not names:
            raise ValueError(f"coco_stuff train: empty image list {list_file}")
        images = [root_10k / "images" / f"{n}.jpg" for n in names]
        labels = [root_10k / "annotations" / f"{n}.mat" for n in names]
        require_files(images, f"COCO-Stuff-10k images (listed in {list_file})")
        require_files(labels, f"COCO-Stuff-10k .mat labels (listed in {list_file})")
        return images, labels

    def load_label(self, path: Path) -> np.ndarray:
        if self.is_10k:
            return coco_stuff_10k_to_coarse(load_mat_label(path))
        label = load_array(path)
        if label.ndim != 2:
            raise ValueError(f"{path}: expected a single-channel label PNG, got shape {label.shape}")
        return coco_stuff_png_to_coarse(label)
