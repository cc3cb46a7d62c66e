"""Synthetic trees of the eight open-vocabulary benchmarks, in their real layouts (datasets/ovss.py).

The scenes are those of synthetic.py (sky, building / vegetation, road, a car, an ignored patch), painted
in the class colours; each benchmark names the scene classes with its own classes (`SCENE_CLASS_NAMES`;
None = the benchmark's background label, which the "without background" variants ignore). Images of one
tree have different sizes, so the evaluation meets variable-size images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from datasets.metadata import ovss_classes
from datasets.ovss import IGNORE_VALUE, ovss_layout
from synthetic import SCENE_CLASSES, SyntheticSplit, _save, _write_lines, draw_scene, render

_CONTEXT = {"road": "road", "building": "building", "vegetation": "tree", "sky": "sky", "car": "car"}
SCENE_CLASS_NAMES: dict[str, dict[str, Optional[str]]] = {
    "voc21": {"road": "background", "building": "background", "vegetation": "background", "sky": "background",
              "car": "car"},
    "voc20": {"road": None, "building": None, "vegetation": None, "sky": None, "car": "car"},
    "context60": _CONTEXT,
    "context59": _CONTEXT,
    "coco_object": {"road": "background", "building": "background", "vegetation": "background",
                    "sky": "background", "car": "car"},
    "coco_stuff171": {"road": "road", "building": "building-other", "vegetation": "tree", "sky": "sky-other",
                      "car": "car"},
    "cityscapes19": {"road": "road", "building": "building", "vegetation": "vegetation", "sky": "sky", "car": "car"},
    "ade20k150": {"road": "road", "building": "building", "vegetation": "tree", "sky": "sky", "car": "car"},
}
DEFAULT_SIZES = ((96, 128), (104, 136))


def label_values(dataset_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(raw label value, expected class index) of each scene class, then of the ignored patch (last)."""
    layout = ovss_layout(dataset_name)
    names = [c.name for c in ovss_classes(dataset_name)]
    shift = 1 if layout.reduce_zero_label else 0
    raw, expected = [], []
    for scene_class in SCENE_CLASSES:
        name = SCENE_CLASS_NAMES[dataset_name][scene_class]
        raw.append(0 if name is None else names.index(name) + shift)
        expected.append(-1 if name is None else names.index(name))
    return np.array(raw + [IGNORE_VALUE]), np.array(expected + [-1])


def write_ovss(dataset_name: str, root: str | Path, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
               seed: int = 0) -> SyntheticSplit:
    """One image per entry of `sizes`, in the benchmark's layout under `root`; labels are expected classes."""
    layout = ovss_layout(dataset_name)
    root, rng = Path(root), np.random.default_rng(seed)
    raw_lut, expected_lut = label_values(dataset_name)
    out = SyntheticSplit(root, "val", classes=[c.name for c in ovss_classes(dataset_name)])
    stems = []
    for i, size in enumerate(sizes):
        stem = f"2008_{i:06d}"
        if dataset_name == "cityscapes19":
            stem = f"{('frankfurt', 'lindau')[i % 2]}/{('frankfurt', 'lindau')[i % 2]}_{i:06d}_000019"
        scene = draw_scene(*size, rng)
        image = root / layout.image_dir / f"{stem}{layout.image_suffix}"
        label = root / layout.label_dir / f"{stem}{layout.label_suffix}"
        _save(image, render(scene))
        _save(label, raw_lut[scene].astype(np.uint8))
        stems.append(stem)
        out.pairs.append((image, label))
        out.names.append(label.relative_to(root).as_posix())
        out.labels.append(expected_lut[scene])
    if layout.split_list is not None:
        _write_lines(root / layout.split_list, stems[::-1])  # the list's order is kept
        out.pairs.reverse()
        out.names.reverse()
        out.labels.reverse()
    return out
