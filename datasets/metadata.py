"""Class lists, palettes and label mappings of the benchmarks (SPEC 9.3, 10, 14.1).

Which file (or loader) holds what for each benchmark is declared by its spec in `datasets.registry`.
The JSON files live in `datasets/metadata/` beside this module (docs/SPEC.md 14.1 describes them). Every function returns a fresh copy, so callers
may modify what they get without corrupting the cache.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from utils.contexts import PAPER_CONTEXT_CATEGORIES, PAPER_REFERENCE_ALIASES

from .registry import BENCHMARKS, BenchmarkSpec, get_benchmark

METADATA_DIR = Path(__file__).resolve().parent / "metadata"

N_COCO_STUFF_LABEL_IDS = 182  # 0-based ids in the COCO-Stuff PNG labels (11 of them unused)


@lru_cache(maxsize=None)
def _load(filename: str) -> Any:
    path = METADATA_DIR / filename  # an absolute path (a registered benchmark's own class list) stays itself
    if not path.is_file():
        raise FileNotFoundError(f"metadata file missing from the package: {path}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _value(source: Union[str, Callable[[], Any]]) -> Any:
    """A spec's metadata: a JSON file name in METADATA_DIR (cached) or a zero-argument loader."""
    return _load(source) if isinstance(source, str) else source()


def categories(dataset_name: str) -> list[str]:
    """Prediction category names in index order (cityscapes 27, coco_stuff 171 fine, kitti_step 19).

    Open-vocabulary benchmarks: every query name of every class, each once, in class order.
    """
    return [str(name) for name in _value(get_benchmark(dataset_name).categories)]


def eval_categories(dataset_name: str) -> list[str]:
    """Names of the scored classes: coco_stuff the 27 coarse classes, otherwise `categories`;
    open-vocabulary benchmarks: the dataset's class names in label order."""
    spec = get_benchmark(dataset_name)
    if spec.eval_categories is None:
        return categories(dataset_name)
    return [str(name) for name in _value(spec.eval_categories)]


def n_eval_classes(dataset_name: str) -> int:
    """Number of scored classes (27, 27, 19): the `n_classes` of RunningScore."""
    return len(eval_categories(dataset_name))


def palette(dataset_name: str) -> np.ndarray:
    """RGB colour of each scored class, uint8 (n_eval, 3).

    coco_stuff: the first 27 entries of the 512-entry PASCAL VOC colormap (index = coarse label),
    which equals `utils.palette.voc_colormap(27)`; the open-vocabulary benchmarks use that colormap too.
    """
    colours = np.asarray(_value(get_benchmark(dataset_name).palette), dtype=np.uint8)
    n = n_eval_classes(dataset_name)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) < n:
        raise ValueError(f"{dataset_name}: palette of shape {colours.shape} has no RGB colour for each of {n} classes")
    return colours[:n].copy()


def prediction_to_eval(dataset_name: str) -> Optional[np.ndarray]:
    """LUT mapping prediction indices to scored classes: coco_stuff int64 (171,) fine -> coarse, else None.

    Apply as `lut[prediction]` to both the plain and the CRF argmax maps (SPEC 9.3). The open-vocabulary
    benchmarks have none: their queries are mapped to classes by score (reco/ovss.py).
    """
    spec = get_benchmark(dataset_name)
    if spec.prediction_to_eval is None:
        return None
    return _prediction_lut(spec)


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
    """The paper's context categories, in elimination order (SPEC 7.4): tree, sky, building, road, person."""
    return list(PAPER_CONTEXT_CATEGORIES)


def categories_reusing_context_features(dataset_name: str) -> dict[str, str]:
    """Benchmark category -> the paper's context category whose reference it reuses (SPEC 7.4, 15.9):
    a category named like a context, or aliased to one (vegetation -> tree)."""
    contexts = set(PAPER_CONTEXT_CATEGORIES)
    reused = {name: name if name in contexts else PAPER_REFERENCE_ALIASES.get(name)
              for name in categories(dataset_name)}
    return {name: context for name, context in reused.items() if context in contexts}


def _prediction_lut(spec: BenchmarkSpec) -> np.ndarray:
    """The spec's prediction -> scored-class LUT, int64 (n_categories,), checked against both class lists."""
    n_predicted, n_scored = len(categories(spec.name)), n_eval_classes(spec.name)
    source = spec.prediction_to_eval
    if isinstance(source, str):
        lut = _dense_lut(_load(source), n_predicted, source)
    else:
        lut = np.asarray(source(), dtype=np.int64)
    if lut.shape != (n_predicted,) or lut.min() < 0 or lut.max() >= n_scored:
        raise ValueError(f"{spec.name}: prediction_to_eval must map {n_predicted} categories to 0..{n_scored - 1}")
    return lut.copy()


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


def ovss_query_names(dataset_name: str) -> list[str]:
    """Every query name of every class of an open-vocabulary benchmark, each once, in class order."""
    return list(dict.fromkeys(q for c in ovss_classes(dataset_name) for q in c.queries))


def ovss_class_names(dataset_name: str) -> list[str]:
    """The class names of an open-vocabulary benchmark in label order."""
    return [c.name for c in ovss_classes(dataset_name)]


def ovss_metadata_path(dataset_name: str) -> Path:
    """The class-list JSON of a registered open-vocabulary benchmark (its layout's `class_list`, default
    datasets/metadata/ovss_{dataset_name}.json): class list, queries, label convention, source."""
    spec = BENCHMARKS.get(dataset_name)
    if spec is None or spec.layout is None:
        known = BENCHMARKS.names(lambda s: s.layout is not None)
        raise ValueError(f"not an open-vocabulary benchmark: {dataset_name!r}; known: {', '.join(known)}")
    if spec.layout.class_list is not None:
        return Path(spec.layout.class_list)
    return METADATA_DIR / f"ovss_{dataset_name}.json"


def ovss_classes(dataset_name: str) -> list[OvssClass]:
    """The benchmark's classes in label order, each with its query names (the peers' lists)."""
    path = ovss_metadata_path(dataset_name)
    entries = _load(str(path)).get("classes")
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
        raise ValueError(f"{path}: duplicate class names {sorted(n for n, k in Counter(names).items() if k > 1)}")
    return classes


def ovss_background(dataset_name: str) -> Optional[str]:
    """Name of the benchmark's background class (voc21, context60, coco_object), else None."""
    path = ovss_metadata_path(dataset_name)
    background = _load(str(path)).get("background")
    if background is not None and background not in [c.name for c in ovss_classes(dataset_name)]:
        raise ValueError(f"{path}: background {background!r} is not one of its classes")
    return background
