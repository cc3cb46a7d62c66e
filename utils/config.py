"""YAML / mappings -> typed, validated config objects: every config key is declared here, once.

Each key is a field made by `key(...)` (utils/config_schema.py): its type, default, range or choices,
a one-line doc, a value check, the registry it names, or the key it falls back to. `load_reco_config`
and `load_reco_plus_config` read a YAML file, `reco_config_from_dict` a mapping, into frozen dataclasses;
an unknown key, a missing required key, a value of the wrong type or out of its range raises
`ConfigError` naming the key, whichever the source. The registry names are checked by the library
(reco_api/config_checks.py), which utils/ cannot import. The README's tables are generated from these
declarations (reco_api/config_docs.py). The keys of the original ReCo YAML files keep their names and
meanings; new keys have defaults.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from utils.contexts import PAPER_CONTEXT_CATEGORIES, PAPER_REFERENCE_ALIASES
from utils.config_schema import (ConfigError, build_dataclass, check_declared, effective,  # noqa: F401
                                 key, load_yaml_dataclass, shown_path)  # (ConfigError and effective: used from here)
from utils.naming import file_name_problem, slug


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device_name(value: Any, key: str = "device") -> str:
    """`value` if it is a device this project runs on (auto, cpu, cuda, cuda:N), else a ConfigError naming `key`."""
    if not isinstance(value, str) or not _DEVICE_PATTERN.fullmatch(value):
        raise ConfigError(f"{key}: {value!r} is not a device; use {DEVICE_NAMES}")
    return value


def _check_synonyms(synonyms: list[str], key_name: str) -> None:
    if not synonyms or any(not s.strip() for s in synonyms):
        raise ConfigError(f"'{key_name}' must be a non-empty list of non-empty names")
    if len(set(synonyms)) != len(synonyms):
        raise ConfigError(f"'{key_name}' repeats names: {synonyms}")


def _check_names(names: list[str], key_name: str) -> None:
    """A list of class names: none empty, none repeated (an empty list is allowed)."""
    empty = [i for i, name in enumerate(names) if not name.strip()]
    if empty:
        raise ConfigError(f"'{key_name}' has an empty name at position {empty[0]}: {names}")
    repeated = sorted({name for i, name in enumerate(names) if name in names[:i]})
    if repeated:
        raise ConfigError(f"'{key_name}' repeats {repeated}: each name once")


SUFFIX_MAX_BYTES = 64


def check_suffix(suffix: str, key_name: str = "suffix") -> None:
    """`suffix` (also --suffix) ends up in run-directory and reference-pickle names: it must not name
    another folder ('../x') nor make a name longer than file systems allow."""
    problem = file_name_problem(suffix, SUFFIX_MAX_BYTES)
    if problem:
        raise ConfigError(f"suffix (--suffix): {suffix!r} becomes part of run-directory and pickle names, but "
                          f"{problem}; use letters, digits, '-' and '_'")


def _check_finite(value: float, key_name: str) -> None:
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"'{key_name}' must be finite, got {value}")


def resolve_clip_precision(precision: str, device_type: str) -> str:
    """The key clip_precision on a device type: 'auto' is fp16 on CUDA (as the original's OpenAI CLIP) and
    fp32 elsewhere; fp32, fp16 and bf16 are kept."""
    if precision == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32', 'fp16' or 'bf16', got {precision!r}")
    return precision


_WEIGHTS_DOC = "local file, library tag (online only) or `random` (tests only)"


@dataclass(frozen=True)
class RecoWeights:
    """Where each ReCo model's weights come from: a local file, a library tag (online only) or 'random'."""

    clip: Optional[str] = key(None, doc="retrieval CLIP weights, e.g. `ViT-L-14-336px.pt` (OpenAI TorchScript "
                              "archive): " + _WEIGHTS_DOC)
    dense_clip: Optional[str] = key(None, doc="DenseCLIP and text-attention CLIP weights, e.g. `RN50x16.pt`: "
                                    + _WEIGHTS_DOC)
    encoder: Optional[str] = key(None, doc="dense encoder weights, e.g. `deit_s_sin_dist.pth` "
                                 "(`{\"model\": state_dict}`): " + _WEIGHTS_DOC)


@dataclass(frozen=True)
class BackgroundConfig:
    """How the background class of voc21, context60 and coco_object is scored (the other benchmarks: none)."""

    mode: Literal["none", "threshold", "synonyms", "probability"] = key(
        "none", doc="`voc21`, `context60`, `coco_object`: `synonyms`, `threshold` or `probability`; other "
        "benchmarks `none`")
    threshold: float = key(0.5, range="0..1",
                           doc="`threshold` mode: background where no class scores above it (ReCo scores are in [0, 1])")
    synonyms: Optional[list[str]] = key(None, check=_check_synonyms, allowed="distinct non-empty names",
                                        doc="`synonyms` and `probability` modes: names queried for the background; "
                                        "`null`: the class list's")
    # mode probability, the peers' rule (reco/ovss.py): softmax(logit_scale * scores) over all names, the max
    # per class; background where the best class probability is < prob_thd; area_thd: before that, classes
    # predicted on at most this fraction of the non-background pixels are zeroed (None: no area rule)
    logit_scale: float = key(40.0, range="> 0", check=_check_finite, allowed="> 0, finite",
                             doc="`probability` mode: scores are multiplied by it before the softmax over all names")
    prob_thd: float = key(0.1, range="0..1", doc="`probability` mode: background where the best class probability "
                          "is below it")
    area_thd: Optional[float] = key(None, range="0..1", doc="`probability` mode: zero classes predicted on at most "
                                    "this fraction of the non-background pixels; `null`: no area rule")

    def __post_init__(self) -> None:  # also checked when built on its own
        check_declared(self, prefix="background.")


@dataclass(frozen=True)
class RecoConfig:
    # --- keys of the original ReCo YAML files
    dir_ckpt: str = key(doc="root of run directories")
    dir_dataset: Optional[str] = key(None, doc="benchmark root; also holds the reference-embedding pickle")
    dir_imagenet: Optional[str] = key(None, doc="ImageNet root (holds `index/`)")
    imagenet_split: Literal["train", "val"] = key("train", doc="index split")
    collection_dir: Optional[str] = key(None, doc="retrieve from this image folder instead of ImageNet (see "
                                        "*Retrieving from your own image collection*)")
    collection_name: Optional[str] = key(None, shown_default="folder name",
                                         doc="names the collection's index directory and the experiment (`col_{name}`)")
    dataset_name: Optional[str] = key(None, names="dataset", doc="a registered benchmark: `cityscapes`, "
                                      "`coco_stuff`, `kitti_step`, ... (see *Datasets*)")
    clip_arch: str = key("ViT-L/14@336px", names="clip", doc="retrieval CLIP (index and text queries): any "
                         "registered CLIP, e.g. `ViT-B/16-SigLIP` (see *Swapping parts*)")
    dense_clip_arch: str = key("RN50x16", names="dense_clip", doc="DenseCLIP and text-attention CLIP: a "
                               "ModifiedResNet CLIP (`RN50`, `RN101`, `RN50x4`, `RN50x16`, `RN50x64`)")
    dense_clip_inference: bool = key(True, doc="multiply predictions by DenseCLIP text attention; adds `_dc` "
                                     "to the run name")
    encoder_arch: str = key("DeiT-S/16-SIN", names="encoder", doc="dense encoder: `DeiT-S/16-SIN`, `DINOv2-S/14`, "
                            "`DINOv2-B/14`, `DINOv2-S/14-reg`, `DINOv2-B/14-reg`, `DINOv3-S/16`, `DINOv3-B/16`, "
                            "`DINOv3-L/16-SAT` (see *Swapping parts*)")
    # The original configs carry it; nothing reads it (each encoder declares its own patch size).
    patch_size: int = key(16, allowed="any integer", doc="accepted for the original configs and not read: "
                          "the encoder's own patch size is used")
    batch_size: int = key(16, range=">= 1", doc="evaluation batch size (KITTI-STEP batches images of equal size "
                          "together)")
    context_categories: list[str] = key(default_factory=lambda: list(PAPER_CONTEXT_CATEGORIES),
                                        shown_default=", ".join(PAPER_CONTEXT_CATEGORIES), check=_check_names,
                                        allowed="distinct non-empty names",
                                        doc="context elimination categories, in order")
    context_elimination: bool = key(True, doc="adds `_ce` to the experiment name")
    n_imgs: int = key(50, range=">= 1", doc="k, the number of retrieved images per category")
    n_workers: int = key(4, range=">= 0", doc="DataLoader workers (on a CPU at most the cores less one: more "
                         "would compete with the model, and torch warns)")
    text_attention: bool = key(True, doc="weight co-segmentation by DenseCLIP text attention; adds `_ta`")
    # --- added keys
    weights: RecoWeights = key(default_factory=RecoWeights, doc="where each model's weights come from")
    device: str = key("auto", check=check_device_name, allowed=DEVICE_NAMES,
                      doc="where models run (anything else fails when the config loads)")
    seed: int = key(0, doc="seeds Python, NumPy and torch")
    suffix: str = key("", check=check_suffix, allowed="a file-name part (no `/`, at most 64 bytes)", doc="appended to the experiment name after one `_` (`try` and `_try` both give "
                      "`..._try`; the original `--suffix`)")
    crf_backend: str = key("auto", names="crf_backend", doc="`torch` (the PyTorch port, on CPU and CUDA); or "
                           "`pydensecrf`; or any backend registered with `utils.crf.register_crf_backend`")
    crf_workers: Optional[int] = key(None, range=">= 0", fallback="n_workers",
                                     doc="processes of the pydensecrf pool")
    crf: bool = key(True, doc="own images: dense-CRF refinement (`--no-crf` turns it off)")
    reproduce_seed_slice_bug: bool = key(False, doc="reproduce the original seed-selection slicing (see "
                                         "*Faithfulness*)")
    reference_aliases: dict[str, str] = key(default_factory=lambda: dict(PAPER_REFERENCE_ALIASES),
                                            shown_default="`{vegetation: tree}`",
                                            doc="categories that reuse a context's reference embedding")
    n_visualisations: int = key(10, range=">= 0", doc="evaluation panels written per run")
    cosegmentation_pictures: bool = key(True, doc="write `coseg_{category}.png` for each reference a run "
                                        "computes (about 0.15 s each on a CPU)")
    clip_precision: Literal["auto", "fp32", "fp16", "bf16"] = key(
        "auto", doc="`auto`: CLIP towers in `fp16` on CUDA (as the original), `fp32` on CPU; `bf16` has fp16's "
        "speed on recent GPUs, further from the original's embeddings")
    index_batch_size: Union[Literal["auto"], int] = key(
        "auto", range=">= 1", allowed="`auto` or >= 1",
        doc="images per forward pass of the index build; `auto`: 256 on CUDA, 32 on a CPU (on a CPU a larger "
        "batch is no faster per image and takes far more memory: ViT-L/14@336px 11.8 GB at 256, 3.8 GB at 32)")
    index_shard_size: int = key(8192, range=">= 1", doc="ImageNet index build: images per resumable shard")
    index_workers: Optional[int] = key(None, range=">= 0", doc="DataLoader workers of the index build; `null`: "
                                       "on a GPU all cores but one (per process), on a CPU `n_workers` up to the cores less one")
    categories: Optional[list[str]] = key(None, doc="own images: class names (or `--categories`)")
    reference_cache_dir: Optional[str] = key(None, shown_default="`{dir_ckpt}/references`",
                                             doc="per-category reference-embedding cache, and the text-embedding "
                                             "cache in its `text/` folder")
    image_short_side: Optional[int] = key(320, range=">= 1", doc="own images: shorter side used for inference "
                                          "(`null`: full size)")
    # --- open-vocabulary benchmarks (voc21 ... ade20k150); the original three keep their own geometry
    eval_short_side: int = key(336, range=">= 1", doc="open-vocabulary benchmarks: shorter side the image is "
                               "resized to for inference (see *Open-vocabulary benchmarks*)")
    eval_long_side_max: int = key(2048, range=">= 1", doc="open-vocabulary benchmarks: ... unless the long side "
                                  "would exceed this")
    slide_window: Optional[int] = key(None, range=">= 1", doc="sliding-window inference, any benchmark: window "
                                      "size in pixels; `null`: one pass over the whole image, as the paper")
    slide_stride: int = key(112, range=">= 1", doc="sliding-window inference: step in pixels (at most "
                            "`slide_window`)")
    background: BackgroundConfig = key(default_factory=BackgroundConfig,
                                       doc="how the background class is scored")

    def __post_init__(self) -> None:
        check_declared(self)
        if self.context_elimination and not self.context_categories:
            raise ConfigError("'context_categories' is empty while context_elimination is true: name the "
                              "context categories, or set context_elimination: false")
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
        reco_api.reference_setting.reference_experiment_name adds a setting hash for any other)."""
        parts = [slug(self.encoder_arch), self.retrieval_tag]
        parts += ["ce"] if self.context_elimination else []
        parts += ["ta"] if self.text_attention else []
        suffix = self.suffix.lstrip("_")  # '_try' and 'try' both give ..._try, never ...__try
        parts += [suffix] if suffix else []
        return "_".join(parts)


@dataclass(frozen=True)
class RecoPlusWeights:
    backbone: Optional[str] = key(None, doc="ImageNet backbone: local torchvision checkpoint, a torchvision tag "
                                  "such as `IMAGENET1K_V1` (online), or `random`")


@dataclass(frozen=True)
class RecoPlusConfig:
    # --- keys of the original ReCo+ YAML files
    dir_ckpt: str = key(doc="root of run directories")
    dir_dataset: str = key(doc="benchmark root")
    dataset_name: str = key(names="dataset", doc="a registered benchmark (see *Datasets*)")
    dir_pseudo_masks: Optional[str] = key(None, doc="the pseudo-masks of `main_reco.py --split train`")
    batch_size: int = key(8, range=">= 1", doc="training batch size")
    iter_val: int = key(1000, range=">= 1", doc="iterations between validations")
    n_workers: int = key(8, range=">= 0", doc="DataLoader workers")
    segmentor_name: str = key("deeplabv3plus_resnet101", names="segmentor", doc="`deeplabv3plus_resnet101`, "
                              "`_resnet50`, `_mobilenet`, and `deeplabv3plus_tiny` for tests")
    # --- added keys
    iter_train: int = key(20000, range=">= 1", doc="training iterations")
    weights: RecoPlusWeights = key(default_factory=RecoPlusWeights, doc="where the backbone's weights come from")
    device: str = key("auto", check=check_device_name, allowed=DEVICE_NAMES, doc="as for ReCo")
    seed: int = key(0, doc="as for ReCo")
    crf_backend: str = key("auto", names="crf_backend", doc="as for ReCo")
    crf_workers: Optional[int] = key(None, range=">= 0", fallback="n_workers", doc="as for ReCo")
    eval_batch_size: int = key(16, range=">= 1", doc="validation batch (KITTI-STEP config: 1)")
    lr: float = key(5e-4, range="> 0", doc="head learning rate; the backbone uses `lr * backbone_lr_ratio`")
    backbone_lr_ratio: float = key(0.1, range=">= 0", doc="the backbone's learning rate over the head's")
    weight_decay: float = key(2e-4, range=">= 0", doc="Adam's (coupled) L2 weight decay, as the original")
    min_lr: float = key(1e-6, range=">= 0", doc="floor of the polynomial learning-rate schedule")
    amp: bool = key(True, doc="mixed precision, CUDA only")
    crop_size: int = key(320, range=">= 1", doc="training crop")
    n_visualisations: int = key(10, range=">= 0", doc="as for ReCo")
    log_every: int = key(100, range=">= 1", doc="iterations between training-metric records")

    def __post_init__(self) -> None:
        check_declared(self)


def load_reco_config(path: str | os.PathLike, overrides: Optional[dict[str, Any]] = None) -> RecoConfig:
    """Read a ReCo YAML file; `overrides` (e.g. from the command line) replace its values."""
    return load_yaml_dataclass(RecoConfig, path, overrides,
                               other=(RecoPlusConfig, "a ReCo+ config: run it with main_reco_plus.py"))


def reco_config_from_dict(raw: dict[str, Any]) -> RecoConfig:
    """A ReCo config from a mapping of its YAML keys, checked as a file's would be (the Python API)."""
    return build_dataclass(RecoConfig, dict(raw))


def reco_plus_config_from_dict(raw: dict[str, Any]) -> RecoPlusConfig:
    """A ReCo+ config from a mapping of its YAML keys, checked as a file's would be."""
    return build_dataclass(RecoPlusConfig, dict(raw))


def load_reco_plus_config(path: str | os.PathLike, overrides: Optional[dict[str, Any]] = None) -> RecoPlusConfig:
    """Read a ReCo+ YAML file; `overrides` replace its values."""
    return load_yaml_dataclass(RecoPlusConfig, path, overrides,
                               other=(RecoConfig, "a ReCo config: run it with main_reco.py"))


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
        raise ConfigError(f"{key}: directory not found: {shown_path(path)}")
    return path


def require_file(key: str, value: Optional[str], what: str = "") -> Path:
    """The file `value` configured under `key`, or a ConfigError naming both."""
    if value is None:
        raise ConfigError(f"{key}: not set in the config{f' (expected {what})' if what else ''}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {shown_path(path)}{f' (expected {what})' if what else ''}")
    return path
