"""The networks of a ReCo run, built from the model settings: the dense encoder, DenseCLIP with its text
tower (built on first use), the retrieval CLIP, and the bundle that inference needs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

import networks
from networks.clip import DenseCLIP
from reco.inference import predict
from reco_api.settings import ModelSettings, ModelSpec
from reco_api.text_cache import TextEmbeddings, embed_prompts  # noqa: F401  (embed_prompts re-exported)
from utils import timing
from utils.config import resolve_clip_precision


class DenseClipModels:
    """DenseCLIP (visual, dense) and the text embeddings of its CLIP's text tower (memoised per name, and
    cached on disk when built with `text_tower` and `cache_root`).

    The models are built by `load` on first use (`dense_clip`, or `embed_text` of a name in no cache), so
    a run whose references come from the pickle or the cache and that does not use DenseCLIP at inference
    never loads them, and a run whose text embeddings are all cached embeds no text.
    """

    def __init__(self, load: Callable[[], tuple[nn.Module, nn.Module, Callable]], device: torch.device,
                 text_tower: Optional[ModelSpec] = None, precision: str = "fp32",
                 cache_root: Optional[Path] = None) -> None:
        """`text_tower` (DenseCLIP's arch and weights) and `precision` identify its text embeddings in the
        cache under `cache_root`; without `text_tower` they are memoised only."""
        self._load = load
        self._models: Optional[tuple[nn.Module, nn.Module, Callable]] = None
        self.text = TextEmbeddings(text_tower or ModelSpec("unidentified"), precision, lambda: self._loaded()[1:],
                                   "DenseCLIP", cache_root if text_tower is not None else None, device)

    def _loaded(self) -> tuple[nn.Module, nn.Module, Callable]:
        if self._models is None:
            self._models = self._load()
        return self._models

    @classmethod
    def of(cls, dense_clip: nn.Module, clip_model: nn.Module, tokenizer: Callable) -> "DenseClipModels":
        """Already-built models (e.g. passed to reco_api.ReCo)."""
        return cls(lambda: (dense_clip, clip_model, tokenizer), next(clip_model.parameters()).device)

    @property
    def dense_clip(self) -> nn.Module:
        return self._loaded()[0]

    def embed_text(self, names: Sequence[str]) -> torch.Tensor:
        """names -> (N, D) float32 text embeddings (SPEC 3) on the models' device; only names in neither
        the memo nor the cache are embedded."""
        return self.text(names)


@dataclass(frozen=True)
class InferenceModels:
    """What segmenting an image needs: the dense encoder, the (N, C) unit-norm reference matrix, and
    DenseCLIP with the (N, D) text embeddings of the N categories (both None without DenseCLIP inference)."""

    encoder: nn.Module
    references: torch.Tensor
    dense_clip: Optional[nn.Module] = None
    text: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if (self.dense_clip is None) != (self.text is None):
            raise ValueError("DenseCLIP inference needs both the DenseCLIP model and the text embeddings")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) ImageNet-normalised -> class probabilities (B, N, H, W) (SPEC 9.1)."""
        return predict(images, self.encoder, self.references, self.dense_clip, self.text)


def inference_models(dense_clip_inference: bool, categories: Sequence[str], encoder: nn.Module,
                     references: torch.Tensor, dense: Optional[DenseClipModels]) -> InferenceModels:
    """Bundle the models; DenseCLIP and its text embeddings only with `dense_clip_inference`."""
    if dense is None or not dense_clip_inference:
        return InferenceModels(encoder, references)
    return InferenceModels(encoder, references, dense.dense_clip, dense.embed_text(categories))


def clip_precision(precision: str, device: torch.device) -> str:
    """The config's clip_precision on `device` (utils.config.resolve_clip_precision: 'auto' is fp16 on CUDA)."""
    return resolve_clip_precision(precision, device.type)


def build_encoder(models: ModelSettings, device: torch.device) -> nn.Module:
    with timing.stage("models"):
        return networks.build_encoder(models.encoder.arch, models.encoder.weights, key="weights.encoder").to(device)


def build_dense_clip(models: ModelSettings, device: torch.device,
                     text_cache_root: Optional[Path] = None) -> Optional[DenseClipModels]:
    """DenseCLIP and its text tower (built on first use), or None when neither text attention nor
    DenseCLIP inference is on. Its text embeddings are cached under `text_cache_root` (the reference
    cache's folder) when given."""
    if not (models.text_attention or models.dense_clip_inference):
        return None

    def load() -> tuple[nn.Module, nn.Module, Callable]:
        with timing.stage("models"):
            clip_model, tokenizer = networks.build_clip(
                models.dense_clip.arch, models.dense_clip.weights, device=device,
                precision=clip_precision(models.clip_precision, device), key="weights.dense_clip",
            )
            return DenseCLIP(clip_model).to(device).eval(), clip_model, tokenizer

    return DenseClipModels(load, device, models.dense_clip, clip_precision(models.clip_precision, device),
                           text_cache_root)


def build_retrieval_clip(models: ModelSettings, device: torch.device) -> tuple[nn.Module, Callable]:
    """The retrieval CLIP (index and text queries) and its tokenizer."""
    return networks.build_clip(
        models.clip.arch, models.clip.weights, device=device,
        precision=clip_precision(models.clip_precision, device), key="weights.clip",
    )
