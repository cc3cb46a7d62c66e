"""The benchmark registry: one `BenchmarkSpec` per `dataset_name`, so adding a benchmark is one entry.

A spec says where the reader is and where the class lists, palette and prediction -> scored-class
mapping come from; `datasets.metadata` and `datasets.benchmarks.build_benchmark` read only this table.
Readers and metadata are referenced lazily ("module:attribute" strings and JSON file names), because
the reader and metadata modules import this registry: it names them and never imports them.

To add a benchmark: write its reader (a `BenchmarkDataset` subclass taking `(spec, root, split)`), put its
class list and palette into `datasets/metadata/`, and add one `BenchmarkSpec(...)` to `_SPECS` below
(or call `register_benchmark(spec)` from a test or plugin).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import numpy as np

from utils.palette import voc_colormap
from utils.registry import Registry

from .ovss_layout import VOC2010_CONTEXT, VOC2012, OvssLayout

if TYPE_CHECKING:  # torch only for the annotations: listing the benchmarks needs no torch import
    from torch.utils.data import Dataset

# A reader is a callable (spec, root, split) -> BenchmarkDataset, or "module:attribute" naming one; it
# receives its own spec (name, splits, layout) rather than repeating its registry name.
Reader = Union[str, Callable[["BenchmarkSpec", Union[str, os.PathLike], str], "Dataset"]]
# Metadata is a JSON file name in datasets/metadata/, or a zero-argument loader returning the value.
Names = Union[str, Callable[[], Sequence[str]]]
Colours = Union[str, Callable[[], np.ndarray]]
Lut = Union[str, Callable[[], np.ndarray]]
PROTOCOLS = ("reco", "ovss")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything the pipeline needs to know about one benchmark.

    name: the config's `dataset_name` (also a run-directory component).
    reader: builds the dataset of one split from (this spec, root, split); it owns the file layout and the evaluation geometry
        (its class attribute `resize`: 320x320 shorter-side resize + centre crop, or full resolution).
    categories: prediction category names in index order (what ReCo retrieves references for).
    palette: RGB colours, at least one per scored class (extra rows are cut off).
    eval_categories: names of the scored classes; None: the prediction categories are scored.
    prediction_to_eval: int LUT (n_categories,) prediction index -> scored class; None: identity.
        A JSON file holds a mapping {"0": scored id, ...} with every prediction index as a key.
    splits: the splits the reader accepts ("val" is evaluated; "train" gives pseudo-masks for ReCo+).
    protocol: "reco": ReCo's evaluation (one reference per category, scored through prediction_to_eval);
        "ovss": the open-vocabulary protocol (datasets/ovss.py, reco/ovss.py: a class scores the max
        over its query names, background by threshold or synonyms, sliding windows).
    description: one line for listings (README, error messages).
    layout: where an "ovss" benchmark's images, labels and class list are (datasets/ovss_layout.py).
    pseudo_mask_glob: where the pseudo-masks of its train split lie below `dir_pseudo_masks` (SPEC 11: the
        names `main_reco.py --split train` writes and the authors' archives hold); None: no ReCo+ training.
    """

    name: str
    reader: Reader
    categories: Names
    palette: Colours
    eval_categories: Optional[Names] = None
    prediction_to_eval: Optional[Lut] = None
    splits: tuple[str, ...] = ("train", "val")
    protocol: str = "reco"
    description: str = ""
    layout: Optional[OvssLayout] = None
    pseudo_mask_glob: Optional[str] = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"BenchmarkSpec.name must be a non-empty string, got {self.name!r}")
        if not self.splits:
            raise ValueError(f"benchmark {self.name!r}: no splits declared")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"benchmark {self.name!r}: protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if (self.protocol == "ovss") != (self.layout is not None):
            raise ValueError(f"benchmark {self.name!r}: an 'ovss' benchmark needs a layout, and only it has one")

    def build(self, root: Union[str, os.PathLike], split: str) -> Dataset:
        """The reader of `split` under `root`; an undeclared split is a ValueError listing the declared ones."""
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; known: {', '.join(self.splits)}")
        return resolve_reader(self.reader)(self, root, split)


def resolve_reader(reader: Reader) -> Callable[["BenchmarkSpec", Union[str, os.PathLike], str], "Dataset"]:
    """A reader callable, importing "module:attribute" on first use."""
    if callable(reader):
        return reader
    return _named(reader)


def _named(target: str) -> Any:
    """The attribute that "module:attribute" names, its module imported on first use."""
    module, _, attribute = target.partition(":")
    if not module or not attribute:
        raise ValueError(f"reader {target!r} must be a callable or 'module:attribute'")
    return getattr(importlib.import_module(module), attribute)


_SPECS: tuple[BenchmarkSpec, ...] = (
    BenchmarkSpec(
        name="cityscapes",
        reader="datasets.cityscapes:CityscapesBenchmark",
        categories="cityscapes_categories.json",
        palette="cityscapes_palette.json",
        description="Cityscapes, 27 classes (labelIds 7..33), 320x320",
        pseudo_mask_glob="*_gtFine_labelIds.png",
    ),
    BenchmarkSpec(
        name="coco_stuff",
        reader="datasets.coco_stuff:CocoStuffBenchmark",
        categories="coco_stuff_fine_categories_171.json",
        eval_categories="coco_stuff_coarse_categories_27.json",
        palette="coco_stuff_palette_512.json",
        prediction_to_eval="coco_stuff_fine_171_to_coarse_27.json",
        description="COCO-Stuff, 171 categories predicted, 27 coarse classes scored, 320x320",
        pseudo_mask_glob="*.png",
    ),
    BenchmarkSpec(
        name="kitti_step",
        reader="datasets.kitti_step:KittiStepBenchmark",
        categories="kitti_step_categories.json",
        palette="kitti_step_palette.json",
        description="KITTI-STEP, 19 classes, full resolution",
        pseudo_mask_glob="*/*.png",
    ),
)



def _ovss(name: str, description: str, layout: OvssLayout) -> BenchmarkSpec:
    """An open-vocabulary benchmark: reader datasets.ovss.OvssBenchmark(name, ...) on `layout`, class list
    and query names from its JSON (layout.class_list, default datasets/metadata/ovss_{name}.json), the
    PASCAL VOC colour map. Adding one is one `_ovss(...)` entry plus its class-list JSON."""

    def read(spec: BenchmarkSpec, root: Union[str, os.PathLike], split: str) -> Dataset:
        return _named("datasets.ovss:OvssBenchmark")(spec, root, split)

    return BenchmarkSpec(
        name=name, reader=read, categories=lambda: _named("datasets.metadata:ovss_query_names")(name),
        eval_categories=lambda: _named("datasets.metadata:ovss_class_names")(name),
        palette=lambda: voc_colormap(256), splits=("val",), protocol="ovss", description=description, layout=layout,
    )


# With background first, then without (the order of the open-vocabulary results table).
_SPECS += (
    _ovss("voc21", "PASCAL VOC 2012 val, 20 classes + background", OvssLayout(**VOC2012)),
    _ovss("context60", "PASCAL Context val, 59 classes + background", OvssLayout(**VOC2010_CONTEXT)),
    _ovss("coco_object", "COCO-Object val2017, 80 things + background",
          OvssLayout("coco_object (written by cvt_coco_object.py)", "images/val2017", "annotations/val2017", ".jpg",
                     "_instanceTrainIds.png")),
    _ovss("voc20", "PASCAL VOC 2012 val, 20 classes, background ignored",
          OvssLayout(**VOC2012, reduce_zero_label=True)),
    _ovss("context59", "PASCAL Context val, 59 classes, background ignored",
          OvssLayout(**VOC2010_CONTEXT, reduce_zero_label=True)),
    _ovss("coco_stuff171", "COCO-Stuff-164k val2017, 171 classes",
          OvssLayout("coco_stuff164k", "images/val2017", "annotations/val2017", ".jpg", "_labelTrainIds.png")),
    _ovss("cityscapes19", "Cityscapes val, 19 train ids",
          OvssLayout("cityscapes", "leftImg8bit/val", "gtFine/val", "_leftImg8bit.png", "_gtFine_labelTrainIds.png",
                     nested=True)),
    _ovss("ade20k150", "ADE20K val, 150 classes",
          OvssLayout("ADEChallengeData2016", "images/validation", "annotations/validation", ".jpg", ".png",
                     reduce_zero_label=True)),
)

BENCHMARKS: Registry[BenchmarkSpec] = Registry("benchmark", "dataset_name")


def register_benchmark(spec: BenchmarkSpec, replace: bool = False) -> BenchmarkSpec:
    """Add `spec` to the registry under `spec.name` (a second spec of the same name needs `replace`)."""
    return BENCHMARKS.register(spec.name, spec, replace)


def unregister_benchmark(name: str) -> None:
    """Remove a registered benchmark (tests that register a temporary one clean up with this)."""
    BENCHMARKS.unregister(name)


def benchmark_names(protocol: Optional[str] = None) -> tuple[str, ...]:
    """The registered `dataset_name` values, in registration order (only those of `protocol`, if given:
    scripts/reco_ovss.sh takes its default list from benchmark_names("ovss"))."""
    return BENCHMARKS.names(None if protocol is None else lambda spec: spec.protocol == protocol)


def get_benchmark(name: str) -> BenchmarkSpec:
    """The spec of `name`, or a ValueError listing the known names."""
    return BENCHMARKS.lookup(name)


for _spec in _SPECS:
    register_benchmark(_spec)
