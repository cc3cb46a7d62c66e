"""The narrow settings of a ReCo run, built once from the config at the boundary (the command-line stages
and `ReCo`); nothing below it takes the whole config.

    ModelSettings      which networks, with which weights and precision
    ReferenceSettings  what a reference embedding depends on: models, collection, k, contexts, aliases
    InferenceSettings  batching, sliding windows, the CRF default of own images
    (utils.crf.CrfSettings: the CRF backend and pool size, resolved for the device)

PAPER_MODELS and PAPER_REFERENCES are the paper's setting, the one the authors published their reference
pickles for: spelled out here, not taken from the config's defaults, so that changing a default never
changes which files count as the paper's.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

import torch

from utils.config import RecoConfig, effective
from utils.contexts import PAPER_CONTEXT_CATEGORIES, PAPER_REFERENCE_ALIASES
from utils.crf import CrfSettings
from utils.file_identity import MEMO_FILE_NAME


@dataclass(frozen=True)
class ModelSpec:
    """One network: its architecture and where its weights come from (a file, a library tag, 'random';
    None when unset)."""

    arch: str
    weights: Optional[str] = None


@dataclass(frozen=True)
class ModelSettings:
    encoder: ModelSpec                  # the dense encoder (co-segmentation and inference)
    clip: ModelSpec                     # the retrieval CLIP (index and text queries)
    dense_clip: ModelSpec               # DenseCLIP and its text tower
    text_attention: bool                # DenseCLIP text attention while co-segmenting
    dense_clip_inference: bool          # DenseCLIP at inference
    clip_precision: str = "auto"        # auto | fp32 | fp16 | bf16


@dataclass(frozen=True)
class CollectionSettings:
    """The retrieval collection: ImageNet (dir_imagenet, imagenet_split) or a folder (collection_dir);
    `label` names its index directory (the split, or the folder's name)."""

    dir_imagenet: Optional[str]
    imagenet_split: str
    collection_dir: Optional[str]
    label: str

    @property
    def retrieval_tag(self) -> str:
        """The collection in experiment names: in_{split} for ImageNet (the original's), col_{label} else."""
        return f"in_{self.imagenet_split}" if self.collection_dir is None else f"col_{self.label}"


@dataclass(frozen=True)
class ReferenceSettings:
    models: ModelSettings
    collection: CollectionSettings
    n_imgs: int
    context_elimination: bool
    context_categories: tuple[str, ...]
    aliases: dict[str, str]
    reproduce_seed_slice_bug: bool
    cache_root: Path = Path("references")  # the per-category reference cache
    experiment_name: str = ""              # SPEC 11's name of the setting (reference_setting adds a hash)
    hash_memo: Optional[Path] = None       # where content hashes of weights files are remembered (no setting)

    @property
    def contexts(self) -> list[str]:
        """The context categories eliminated, in order ([] without context elimination)."""
        return list(self.context_categories) if self.context_elimination else []


@dataclass(frozen=True)
class InferenceSettings:
    batch_size: int
    n_workers: int                      # DataLoader workers of the evaluations
    slide_window: Optional[int] = None  # sliding-window size; None: one pass over the whole image
    slide_stride: int = 112
    crf: bool = True                    # own images and the API: refine with the dense CRF by default
    image_short_side: Optional[int] = 320  # own images: shorter side at inference; None: full size


PAPER_MODELS = ModelSettings(encoder=ModelSpec("DeiT-S/16-SIN"), clip=ModelSpec("ViT-L/14@336px"),
                             dense_clip=ModelSpec("RN50x16"), text_attention=True, dense_clip_inference=True)
PAPER_REFERENCES = ReferenceSettings(
    models=PAPER_MODELS, collection=CollectionSettings(None, "train", None, "train"), n_imgs=50,
    context_elimination=True, context_categories=tuple(PAPER_CONTEXT_CATEGORIES),
    aliases=dict(PAPER_REFERENCE_ALIASES), reproduce_seed_slice_bug=False)


def paper_references(settings: ReferenceSettings, strict: bool = False) -> ReferenceSettings:
    """The paper's setting, keeping what experiment names spell out (the collection, k, context
    elimination on/off, text attention on/off) unless `strict`."""
    if strict:
        return PAPER_REFERENCES
    return replace(PAPER_REFERENCES, collection=settings.collection, n_imgs=settings.n_imgs,
                   context_elimination=settings.context_elimination,
                   models=replace(PAPER_MODELS, text_attention=settings.models.text_attention))


# ----------------------------------------------------------------------------- the boundary

def model_settings(config: RecoConfig) -> ModelSettings:
    weights = config.weights
    return ModelSettings(encoder=ModelSpec(config.encoder_arch, weights.encoder),
                         clip=ModelSpec(config.clip_arch, weights.clip),
                         dense_clip=ModelSpec(config.dense_clip_arch, weights.dense_clip),
                         text_attention=config.text_attention, dense_clip_inference=config.dense_clip_inference,
                         clip_precision=config.clip_precision)


def reference_settings(config: RecoConfig) -> ReferenceSettings:
    collection = CollectionSettings(config.dir_imagenet, config.imagenet_split, config.collection_dir,
                                    config.collection_label)
    return ReferenceSettings(
        models=model_settings(config), collection=collection, n_imgs=config.n_imgs,
        context_elimination=config.context_elimination, context_categories=tuple(config.context_categories),
        aliases=dict(config.reference_aliases), reproduce_seed_slice_bug=config.reproduce_seed_slice_bug,
        cache_root=Path(config.reference_cache_dir or Path(config.dir_ckpt) / "references"),
        experiment_name=config.experiment_name,
        hash_memo=Path(config.dir_ckpt).expanduser() / MEMO_FILE_NAME)


def inference_settings(config: RecoConfig) -> InferenceSettings:
    return InferenceSettings(batch_size=config.batch_size, n_workers=config.n_workers,
                             slide_window=config.slide_window, slide_stride=config.slide_stride, crf=config.crf,
                             image_short_side=config.image_short_side)


def crf_settings(config: RecoConfig, device: Union[str, torch.device, None]) -> CrfSettings:
    """The CRF backend for the device ('auto' resolved) and its pool size (crf_workers, else n_workers)."""
    return CrfSettings.resolve(config.crf_backend, device, effective(config, "crf_workers"))
