"""YAML -> typed, validated config objects.

`load_reco_config` and `load_reco_plus_config` read a YAML file into frozen dataclasses. An unknown key,
a missing required key or a value of the wrong type raises `ConfigError` naming the key. The keys of the
original ReCo YAML files keep their names and meanings; new keys have defaults. The generic type coercion
(and `ConfigError`, importable from here as before) is in utils/config_schema.py.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from utils.contexts import PAPER_CONTEXT_CATEGORIES, PAPER_REFERENCE_ALIASES
from utils.config_schema import ConfigError, build_dataclass, load_yaml_dataclass
from utils.naming import slug


# Allowed ranges of numeric keys, where a wrong value would otherwise fail deep inside a run (or run
# zero iterations). "> 0" / ">= 1" ...; a None value (where the key allows one) is not checked.
RANGES: dict[str, dict[str, str]] = {
    "RecoConfig": {
        "n_imgs": ">= 1", "batch_size": ">= 1", "patch_size": ">= 1", "n_workers": ">= 0", "crf_workers": ">= 0",
        "n_visualisations": ">= 0", "index_batch_size": ">= 1", "index_shard_size": ">= 1", "index_workers": ">= 0",
        "image_short_side": ">= 1", "eval_short_side": ">= 1", "eval_long_side_max": ">= 1", "slide_window": ">= 1",
        "slide_stride": ">= 1",
    },
    "RecoPlusConfig": {
        "batch_size": ">= 1", "iter_val": ">= 1", "n_workers": ">= 0", "iter_train": ">= 1", "crf_workers": ">= 0",
        "eval_batch_size": ">= 1", "lr": "> 0", "backbone_lr_ratio": ">= 0", "weight_decay": ">= 0", "min_lr": ">= 0",
        "crop_size": ">= 1", "n_visualisations": ">= 0", "log_every": ">= 1",
    },
}
_COMPARISONS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b}


def _check_ranges(config: Any) -> None:
    for key, rule in RANGES[type(config).__name__].items():
        value = getattr(config, key)
        operator, bound = rule.split()
        if isinstance(value, (int, float)) and not _COMPARISONS[operator](value, float(bound)):  # not 'auto'
            raise ConfigError(f"'{key}' must be {rule}, got {value}")


@dataclass(frozen=True)
class RecoWeights:
    """Where each ReCo model's weights come from: a local file, a library tag (online only) or 'random'."""

    clip: Optional[str] = None          # retrieval CLIP, e.g. ViT-L-14-336px.pt (OpenAI TorchScript archive)
    dense_clip: Optional[str] = None    # DenseCLIP + text-attention CLIP, e.g. RN50x16.pt
    encoder: Optional[str] = None       # dense encoder, e.g. deit_s_sin_dist.pth ({"model": state_dict})


@dataclass(frozen=True)
class BackgroundConfig:
    """How the background class of voc21, context60 and coco_object is scored (the other benchmarks: none)."""

    mode: Literal["none", "threshold", "synonyms", "probability"] = "none"
    threshold: float = 0.5              # mode threshold: background where no class scores above this
    synonyms: Optional[list[str]] = None  # modes synonyms, probability: names queried for the background;
                                          # None: the class list's
    # mode probability, the peers' rule (reco/ovss.py): softmax(logit_scale * scores) over all names, the max
    # per class; background where the best class probability is < prob_thd; area_thd: before that, classes
    # predicted on at most this fraction of the non-background pixels are zeroed (None: no area rule)
    logit_scale: float = 40.0
    prob_thd: float = 0.1
    area_thd: Optional[float] = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"'background.threshold' must be in [0, 1] (ReCo scores are), got {self.threshold}")
        if not 0.0 < self.logit_scale < float("inf"):
            raise ConfigError(f"'background.logit_scale' must be > 0 and finite, got {self.logit_scale}")
        if not 0.0 <= self.prob_thd <= 1.0:
            raise ConfigError(f"'background.prob_thd' must be in [0, 1] (a probability), got {self.prob_thd}")
        if self.area_thd is not None and not 0.0 <= self.area_thd <= 1.0:
            raise ConfigError(f"'background.area_thd' must be in [0, 1] (a fraction of pixels) or null, "
                              f"got {self.area_thd}")
        if self.synonyms is not None:
            if not self.synonyms or any(not s.strip() for s in self.synonyms):
                raise ConfigError("'background.synonyms' must be a non-empty list of non-empty names")
            if len(set(self.synonyms)) != len(self.synonyms):
                raise ConfigError(f"'background.synonyms' repeats names: {self.synonyms}")


@dataclass(frozen=True)
class RecoConfig:
    # --- keys of the original ReCo YAML files
    dir_ckpt: str
    dir_dataset: Optional[str] = None
    dir_imagenet: Optional[str] = None
    imagenet_split: Literal["train", "val"] = "train"
    collection_dir: Optional[str] = None   # retrieve from any image folder instead of ImageNet
    collection_name: Optional[str] = None  # names its index and experiment; None -> the folder's name
    dataset_name: Optional[str] = None  # a name in datasets.registry (checked by entry.validation)
    clip_arch: str = "ViT-L/14@336px"
    dense_clip_arch: str = "RN50x16"
    dense_clip_inference: bool = True
    encoder_arch: str = "DeiT-S/16-SIN"
    patch_size: int = 16                # read for compatibility; the encoder's own patch size is used
    batch_size: int = 16
    context_categories: list[str] = field(default_factory=lambda: list(PAPER_CONTEXT_CATEGORIES))
    context_elimination: bool = True
    n_imgs: int = 50
    n_workers: int = 4
    text_attention: bool = True
    # --- added keys
    weights: RecoWeights = field(default_factory=RecoWeights)
    device: str = "auto"                # auto | cpu | cuda | cuda:N (checked when the config loads)
    seed: int = 0
    suffix: str = ""                    # appended to the experiment name after one '_' ('_try' and 'try' alike)
    crf_backend: str = "auto"           # 'auto' or a backend in utils.crf.CRF_BACKENDS (checked by entry.validation)
    crf_workers: Optional[int] = None   # processes of the pydensecrf pool; None -> n_workers
    crf: bool = True                    # own images: refine with the dense CRF
    reproduce_seed_slice_bug: bool = False
    reference_aliases: dict[str, str] = field(default_factory=lambda: dict(PAPER_REFERENCE_ALIASES))
    n_visualisations: int = 10
    clip_precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    index_batch_size: Union[Literal["auto"], int] = "auto"  # auto: 256 on CUDA, 32 on a CPU (utils/device.py)
    index_shard_size: int = 8192
    index_workers: Optional[int] = None  # DataLoader workers of the index build; None -> see entry/reco_index.py
    categories: Optional[list[str]] = None      # own images: class names (also --categories)
    reference_cache_dir: Optional[str] = None   # per-category reference cache; None -> {dir_ckpt}/references
    image_short_side: Optional[int] = 320       # own images: shorter side for inference; None -> full size
    # --- open-vocabulary benchmarks (voc21 ... ade20k150); the original three keep their own geometry
    eval_short_side: int = 336                  # shorter side the image is resized to for inference
    eval_long_side_max: int = 2048              # ... unless the long side would exceed this
    slide_window: Optional[int] = None          # sliding-window size in pixels; None: one pass (any benchmark)
    slide_stride: int = 112                     # step between windows
    background: BackgroundConfig = field(default_factory=BackgroundConfig)

    def __post_init__(self) -> None:
        _check_ranges(self)
        if self.slide_window is not None and not 1 <= self.slide_stride <= self.slide_window:
            raise ConfigError(f"'slide_stride' must be between 1 and slide_window ({self.slide_window}), "
                              f"got {self.slide_stride}: windows would leave pixels uncovered")

    @property
    def collection_label(self) -> str:
        """The retrieval collection's name in index directories: imagenet_split for ImageNet, else
        `collection_name` or the folder's name, reduced to letters, digits, '-' and '_'."""
        if self.collection_dir is None:
            return self.imagenet_split
        name = self.collection_name or Path(self.collection_dir).expanduser().resolve().name
        return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "collection"

    @property
    def retrieval_tag(self) -> str:
        """The collection in experiment names: in_{split} for ImageNet (the original's), col_{name} else."""
        return f"in_{self.imagenet_split}" if self.collection_dir is None else f"col_{self.collection_label}"

    @property
    def experiment_name(self) -> str:
        """SPEC 11: e.g. deit_s_16_sin_in_train_ce_ta (names the reference pickle of the paper's setting;
        entry.reference_setting.reference_experiment_name adds a setting hash for any other)."""
        parts = [slug(self.encoder_arch), self.retrieval_tag]
        parts += ["ce"] if self.context_elimination else []
        parts += ["ta"] if self.text_attention else []
        suffix = self.suffix.lstrip("_")  # '_try' and 'try' both give ..._try, never ...__try
        parts += [suffix] if suffix else []
        return "_".join(parts)

    @property
    def run_name(self) -> str:
        """experiment_name + '_dc' with DenseCLIP inference: the run directory's name for the paper's setting
        (entry.reference_setting.run_experiment_name adds a setting hash for any other)."""
        return self.experiment_name + ("_dc" if self.dense_clip_inference else "")


@dataclass(frozen=True)
class RecoPlusWeights:
    backbone: Optional[str] = None      # ImageNet backbone: torchvision checkpoint path, 'IMAGENET1K_V1' or 'random'


@dataclass(frozen=True)
class RecoPlusConfig:
    # --- keys of the original ReCo+ YAML files
    dir_ckpt: str
    dir_dataset: str
    dataset_name: str                   # a name in datasets.registry (checked by entry.validation)
    dir_pseudo_masks: Optional[str] = None
    batch_size: int = 8
    iter_val: int = 1000
    n_workers: int = 8
    segmentor_name: str = "deeplabv3plus_resnet101"
    # --- added keys
    iter_train: int = 20000
    weights: RecoPlusWeights = field(default_factory=RecoPlusWeights)
    device: str = "auto"
    seed: int = 0
    crf_backend: str = "auto"           # 'auto' or a backend in utils.crf.CRF_BACKENDS (checked by entry.validation)
    crf_workers: Optional[int] = None
    eval_batch_size: int = 16
    lr: float = 5e-4                    # head learning rate; the backbone uses lr * backbone_lr_ratio
    backbone_lr_ratio: float = 0.1
    weight_decay: float = 2e-4
    min_lr: float = 1e-6
    amp: bool = True                    # mixed precision, CUDA only
    crop_size: int = 320
    n_visualisations: int = 10
    log_every: int = 100

    def __post_init__(self) -> None:
        _check_ranges(self)


def load_reco_config(path: str | os.PathLike, overrides: Optional[dict[str, Any]] = None) -> RecoConfig:
    """Read a ReCo YAML file; `overrides` (e.g. from the command line) replace its values."""
    return load_yaml_dataclass(RecoConfig, path, overrides, check=_check_device)


def reco_config_from_dict(raw: dict[str, Any]) -> RecoConfig:
    """A ReCo config from a mapping of its YAML keys, checked as a file's would be (the Python API)."""
    return build_dataclass(RecoConfig, dict(raw))


def load_reco_plus_config(path: str | os.PathLike, overrides: Optional[dict[str, Any]] = None) -> RecoPlusConfig:
    """Read a ReCo+ YAML file; `overrides` replace its values."""
    return load_yaml_dataclass(RecoPlusConfig, path, overrides, check=_check_device)


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device_name(value: Any, key: str = "device") -> str:
    """`value` if it is a device this project runs on (auto, cpu, cuda, cuda:N), else a ConfigError naming `key`."""
    if not isinstance(value, str) or not _DEVICE_PATTERN.fullmatch(value):
        raise ConfigError(f"{key}: {value!r} is not a device; use {DEVICE_NAMES}")
    return value


def _check_device(config: Any) -> None:
    check_device_name(config.device)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a config (for writing the resolved config into a run directory)."""
    return dataclasses.asdict(config)


def require_dir(config: Any, key: str) -> Path:
    """The directory named by `key`, or a ConfigError naming the key and the path."""
    value = getattr(config, key)
    if value is None:
        raise ConfigError(f"{key}: not set in the config")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{key}: directory not found: {path}")
    return path


def require_file(key: str, value: Optional[str], what: str = "") -> Path:
    """The file `value` configured under `key`, or a ConfigError naming both."""
    if value is None:
        raise ConfigError(f"{key}: not set in the config{f' (expected {what})' if what else ''}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}{f' (expected {what})' if what else ''}")
    return path
