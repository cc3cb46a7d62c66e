"""The eight open-vocabulary benchmarks, read from the layouts mmsegmentation's conversion scripts write.

    voc21, voc20        {root} = VOCdevkit/VOC2012: ImageSets/Segmentation/val.txt, JPEGImages/{id}.jpg,
                        SegmentationClass/{id}.png (palette indices; 0 background, 255 boundary)
    context60, context59  {root} = VOCdevkit/VOC2010: ImageSets/SegmentationContext/val.txt, JPEGImages/{id}.jpg,
                        SegmentationClassContext/{id}.png (0 background, 1..59 classes)
    coco_object         {root}: images/val2017/{id}.jpg, annotations/val2017/{id}_instanceTrainIds.png
    coco_stuff171       {root} = coco_stuff164k: images/val2017/{id}.jpg, annotations/val2017/{id}_labelTrainIds.png
    cityscapes19        {root} = cityscapes: leftImg8bit/val/{city}/{stem}_leftImg8bit.png,
                        gtFine/val/{city}/{stem}_gtFine_labelTrainIds.png
    ade20k150           {root} = ADEChallengeData2016: images/validation/{id}.jpg, annotations/validation/{id}.png

Images are returned at full resolution (the evaluation resizes them, entry/reco_ovss.py) and labels at
full resolution, as int64 class indices with -1 = ignore: 255 is ignored everywhere, and the "without
background" variants that share files with a "with background" one (voc20, context59, ade20k150) also
ignore 0 and shift the rest down by one (mmseg's reduce_zero_label). A label value beyond the class
list is an error naming the label file and the class-list file. Class lists: datasets/metadata/ovss_*.json.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .benchmarks import AnnotationMismatchError, BenchmarkDataset, check_split, load_array, require_directory, require_files
from .metadata import ovss_classes, ovss_metadata_path
from .ovss_layout import OvssLayout
from .registry import BENCHMARKS, BenchmarkSpec, get_benchmark

IGNORE_VALUE = 255


def ovss_layout(dataset_name: str) -> OvssLayout:
    """The layout of a registered open-vocabulary benchmark (its registry entry's `layout`)."""
    spec = get_benchmark(dataset_name)
    if spec.layout is None:
        names = BENCHMARKS.names(lambda s: s.layout is not None)
        raise ValueError(f"unknown open-vocabulary benchmark {dataset_name!r}; known: {', '.join(names)}")
    return spec.layout


def labels_to_classes(label: np.ndarray, n_classes: int, reduce_zero_label: bool) -> np.ndarray:
    """Label values (H, W) -> int64 class indices, -1 = ignore (255; and 0 with `reduce_zero_label`).

    Values that are no class index stay as they are (>= n_classes), for the caller to report.
    """
    ids = np.asarray(label).astype(np.int64)
    ignore = ids == IGNORE_VALUE
    if reduce_zero_label:
        ignore |= ids == 0
        ids = ids - 1
    ids[ignore] = -1
    return ids


class OvssBenchmark(BenchmarkDataset):
    """One of the eight open-vocabulary benchmarks, split 'val', full-resolution items (`resize` False)."""

    resize = False

    def __init__(self, spec: BenchmarkSpec, root: str | os.PathLike, split: str = "val") -> None:
        self.layout = ovss_layout(spec.name)
        check_split(spec, split, ("val",))
        self.n_classes = len(ovss_classes(spec.name))
        images, labels = list_ovss(spec.name, root)
        super().__init__(spec, root, split, images, labels, [p.relative_to(Path(root)).as_posix() for p in labels])

    def load_label(self, path: Path) -> np.ndarray:
        label = load_array(path)
        if label.ndim != 2:
            raise ValueError(f"{path}: expected a single-channel label PNG (class index per pixel), "
                             f"got shape {label.shape}")
        classes = labels_to_classes(label, self.n_classes, self.layout.reduce_zero_label)
        if classes.size and classes.max() >= self.n_classes:
            value = int(classes.max()) + (1 if self.layout.reduce_zero_label else 0)
            raise AnnotationMismatchError(
                f"{path} holds label value {value}, but the class list {ovss_metadata_path(self.dataset_name)} "
                f"has {self.n_classes} classes ({self._label_range()}): is this the {self.dataset_name} "
                "annotation, converted as described in the README?")
        return classes

    def _label_range(self) -> str:
        if self.layout.reduce_zero_label:
            return f"values 1..{self.n_classes}, 0 and {IGNORE_VALUE} ignored"
        return f"values 0..{self.n_classes - 1}, {IGNORE_VALUE} ignored"


def list_ovss(dataset_name: str, root: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """The val images of a benchmark and, paired by stem, their label files."""
    layout = ovss_layout(dataset_name)
    root = require_directory(Path(root), f"{dataset_name} root (dir_dataset)")
    expected = (f"{dataset_name}: dir_dataset must be the {layout.root_name} folder, holding "
                f"{layout.image_dir}/ and {layout.label_dir}/" + (f" and {layout.split_list}" if layout.split_list else ""))
    image_dir, label_dir = root / layout.image_dir, root / layout.label_dir
    for directory in (image_dir, label_dir):
        if not directory.is_dir():
            raise ValueError(f"{expected}; not found: {directory}")
    if layout.split_list is not None:
        list_file = root / layout.split_list
        if not list_file.is_file():
            raise ValueError(f"{expected}; split list not found: {list_file}")
        stems = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if not stems:
            raise ValueError(f"{dataset_name}: empty split list {list_file}")
        images = [image_dir / f"{stem}{layout.image_suffix}" for stem in stems]
        require_files(images, f"{dataset_name} images (listed in {list_file})")
    else:
        pattern = f"*/*{layout.image_suffix}" if layout.nested else f"*{layout.image_suffix}"
        images = sorted(image_dir.glob(pattern), key=lambda p: p.as_posix())
        if not images:
            raise ValueError(f"{expected}; no {pattern} files in {image_dir}")
    labels = [label_dir / image.parent.relative_to(image_dir) / (image.name[: -len(layout.image_suffix)]
                                                                  + layout.label_suffix) for image in images]
    require_files(labels, f"{dataset_name} label files (*{layout.label_suffix} in {label_dir}, paired with the "
                          "images by name)")
    return images, labels
