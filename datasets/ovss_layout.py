"""Where an open-vocabulary benchmark's val images, labels and class list are: the `layout` of its
registry entry (datasets/registry.py), read by datasets/ovss.py. Imports nothing from the project, so
the registry can build its entries from it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class OvssLayout:
    """Where a benchmark's val images and labels are, relative to `dir_dataset`."""

    root_name: str                      # what dir_dataset is usually called, for error messages
    image_dir: str
    label_dir: str
    image_suffix: str                   # image file = {stem}{image_suffix}
    label_suffix: str                   # label file = {stem}{label_suffix}, in the same sub-folder
    split_list: Optional[str] = None    # one stem per line; None: every image in image_dir
    nested: bool = False                # images one folder level down (Cityscapes cities)
    reduce_zero_label: bool = False     # 0 -> ignore, others - 1
    class_list: Optional[str] = None    # the class-list JSON; None: datasets/metadata/ovss_{name}.json


_VOC = dict(image_dir="JPEGImages", image_suffix=".jpg", label_suffix=".png")
VOC2012 = dict(root_name="VOCdevkit/VOC2012", label_dir="SegmentationClass",
               split_list="ImageSets/Segmentation/val.txt", **_VOC)
VOC2010_CONTEXT = dict(root_name="VOCdevkit/VOC2010", label_dir="SegmentationClassContext",
                       split_list="ImageSets/SegmentationContext/val.txt", **_VOC)
