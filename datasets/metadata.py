"""Class lists, palettes and label mappings of the benchmarks (SPEC 9.3, 10, 14.1).

The JSON files live in `datasets/metadata/` beside this module (copied from the specification's data
folder; the project never reads ../shared at run time). Every function returns a fresh copy, so callers
may modify what they get without corrupting the cache.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np

METADATA_DIR = Path(__file__).resolve().parent / "metadata"

# The open-vocabulary benchmarks (datasets/ovss.py): with background first, then without.
OVSS_DATASET_NAMES: tuple[str, ...] = (
    "voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff171", "cityscapes19", "ade20k150")
# The benchmarks ReCo evaluates on (config key `dataset_name`).
DATASET_NAMES: tuple[str, ...] = ("cityscapes", "coco_stuff", "kitti_step") + OVSS_DATASET_NAMES

# Per benchmark: the file with the prediction categories, and the one with the palette.
_CATEGORY_FILES = {
    "cityscapes": "cityscapes_categories.json",
    "coco_stuff": "coco_stuff_fine_categories_171.json",
    "kitti_step": "kitti_step_categories.json",
}
_PALETTE_FILES = {
    "cityscapes": "cityscapes_palette.json",
    "coco_stuff": "coco_stuff_palette_512.json",
    "kitti_step": "kitti_step_palette.json",
}
N_COCO_STUFF_FINE = 171
N_COCO_STUFF_COARSE = 27
N_COCO_STUFF_LABEL_IDS = 182  # 0-based ids in the COCO-Stuff PNG labels (11 of them unused)


@lru_cache(maxsize=None)
def _load(filename: str) -> Any:
    path = METADATA_DIR / filename
    if not path.is_file():
        raise FileNotFoundError(f"metadata file missing from the package: {path}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _check_name(dataset_name: str) -> str:
    if dataset_name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset_name {dataset_name!r}; known: {', '.join(DATASET_NAMES)}")
    return dataset_name


def categories(dataset_name: str) -> list[str]:
    """Prediction category names in index order (cityscapes 27, coco_stuff 171 fine, kitti_step 19).

    Open-vocabulary benchmarks: every query name of every class, each once, in class order.
    """
    if _check_name(dataset_name) in OVSS_DATASET_NAMES:
        return list(dict.fromkeys(q for c in ovss_classes(dataset_name) for q in c.queries))
    return list(_load(_CATEGORY_FILES[dataset_name]))


def eval_categories(dataset_name: str) -> list[str]:
    """Names of the scored classes: coco_stuff the 27 coarse classes, otherwise `categories`;
    open-vocabulary benchmarks: the dataset's class names in label order."""
    if _check_name(dataset_name) == "coco_stuff":
        return list(_load("coco_stuff_coarse_categories_27.json"))
    if dataset_name in OVSS_DATASET_NAMES:
        return [c.name for c in ovss_classes(dataset_name)]
    return categories(dataset_name)


def n_eval_classes(dataset_name: str) -> int:
    """Number of scored classes (27, 27, 19): the `n_classes` of RunningScore."""
    return len(eval_categories(dataset_name))


def palette(dataset_name: str) -> np.ndarray:
    """RGB colour of each scored class, uint8 (n_eval, 3).

    coco_stuff: the first 27 entries of the 512-entry PASCAL VOC colormap (index = coarse label),
    which equals `utils.palette.voc_colormap(27)`; the open-vocabulary benchmarks use that colormap too.
    """
    if _check_name(dataset_name) in OVSS_DATASET_NAMES:
        from utils.palette import voc_colormap

        return voc_colormap(n_eval_classes(dataset_name))
    colours = np.asarray(_load(_PALETTE_FILES[_check_name(dataset_name)]), dtype=np.uint8)
    return colours[: n_eval_classes(dataset_name)].copy()


def prediction_to_eval(dataset_name: str) -> Optional[np.ndarray]:
    """LUT mapping prediction indices to scored classes: coco_stuff int64 (171,) fine -> coarse, else None.

    Apply as `lut[prediction]` to both the plain and the CRF argmax maps (SPEC 9.3).
    """
    if _check_name(dataset_name) != "coco_stuff":
        return None  # open-vocabulary benchmarks map queries to classes by score (reco/ovss.py)
    table = _load("coco_stuff_fine_171_to_coarse_27.json")
    return _dense_lut(table, N_COCO_STUFF_FINE, "coco_stuff_fine_171_to_coarse_27.json")


def coco_stuff_label_id_to_coarse() -> np.ndarray:
    """int64 (182,) LUT: 0-based COCO-Stuff label id (as in the PNG/.mat GT) -> coarse class 0..26."""
    table = _load("coco_stuff_label_id_0based_182_to_coarse_27.json")
    return _dense_lut(table, N_COCO_STUFF_LABEL_IDS, "coco_stuff_label_id_0based_182_to_coarse_27.json")


def coco_stuff_label_id_to_fine() -> np.ndarray:
    """int64 (182,) LUT: 0-based COCO-Stuff label id -> fine index 0..170; the 11 unused ids -> -1."""
    table = _load("coco_stuff_label_id_0based_182_to_fine_171.json")
    lut = np.full(N_COCO_STUFF_LABEL_IDS, -1, dtype=np.int64)
    for key, value in table.items():
        lut[int(key)] = int(value)
    return lut


def context_categories() -> list[str]:
    """The default context categories (SPEC 7.4): tree, sky, building, road, person."""
    return list(_load("context_categories.json"))


def categories_reusing_context_features(dataset_name: str) -> dict[str, str]:
    """Benchmark category -> context category whose reference feature it reuses (SPEC 7.4, 15.9)."""
    return dict(_load("benchmark_categories_reusing_context_features.json")[_check_name(dataset_name)])


def _dense_lut(table: dict[str, int], n: int, filename: str) -> np.ndarray:
    keys = sorted(int(k) for k in table)
    if keys != list(range(n)):
        raise ValueError(f"{filename}: expected keys 0..{n - 1}, got {len(keys)} keys")
    lut = np.empty(n, dtype=np.int64)
    for key, value in table.items():
        lut[int(key)] = int(value)
    return lut


@dataclass(frozen=True)
class OvssClass:
    """A class of an open-vocabulary benchmark and the names queried for it (its score is their max)."""

    name: str
    queries: tuple[str, ...]


def ovss_metadata_path(dataset_name: str) -> Path:
    """datasets/metadata/ovss_{dataset_name}.json: class list, queries, label convention, source."""
    if dataset_name not in OVSS_DATASET_NAMES:
        raise ValueError(f"not an open-vocabulary benchmark: {dataset_name!r}; known: {', '.join(OVSS_DATASET_NAMES)}")
    return METADATA_DIR / f"ovss_{dataset_name}.json"


def ovss_classes(dataset_name: str) -> list[OvssClass]:
    """The benchmark's classes in label order, each with its query names (the peers' lists)."""
    path = ovss_metadata_path(dataset_name)
    entries = _load(path.name).get("classes")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: 'classes' must be a non-empty list")
    classes = []
    for i, entry in enumerate(entries):
        queries = entry.get("queries") if isinstance(entry, dict) else None
        if (not isinstance(entry.get("name"), str) or not entry["name"] or not isinstance(queries, list)
                or not queries or not all(isinstance(q, str) and q.strip() for q in queries)):
            raise ValueError(f"{path}: class {i} must have a name and a non-empty list of query names")
        classes.append(OvssClass(entry["name"], tuple(q.strip() for q in queries)))
    names = [c.name for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate class names {sorted({n for n in names if names.count(n) > 1})}")
    return classes


def ovss_background(dataset_name: str) -> Optional[str]:
    """Name of the benchmark's background class (voc21, context60, coco_object), else None."""
    path = ovss_metadata_path(dataset_name)
    background = _load(path.name).get("background")
    if background is not None and background not in [c.name for c in ovss_classes(dataset_name)]:
        raise ValueError(f"{path}: background {background!r} is not one of its classes")
    return background
