"""The networks of a ReCo run, built from the model settings: the dense encoder, DenseCLIP with its text
tower (built on first use), the retrieval CLIP, and the bundle that inference needs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

import networks
from networks.clip import DenseCLIP
from networks.text_tower import encode_text_truncated
from reco.inference import predict
from reco.text import text_embeddings
from reco_api.settings import ModelSettings
from utils import timing
from utils.config import resolve_clip_precision
from utils.progress import counting_bar


class DenseClipModels:
    """DenseCLIP (visual, dense) and the text embeddings of its CLIP's text tower (memoised per name).

    The models are built by `load` on first use (`dense_clip` or `embed_text`), so a run whose references
    come from the pickle and that does not use DenseCLIP at inference never loads them.
    """

    def __init__(self, load: Callable[[], tuple[nn.Module, nn.Module, Callable]]) -> None:
        self._load = load
        self._models: Optional[tuple[nn.Module, nn.Module, Callable]] = None
        self._embedded: dict[str, torch.Tensor] = {}

    def _loaded(self) -> tuple[nn.Module, nn.Module, Callable]:
        if self._models is None:
            self._models = self._load()
        return self._models

    @classmethod
    def of(cls, dense_clip: nn.Module, clip_model: nn.Module, tokenizer: Callable) -> "DenseClipModels":
        """Already-built models (e.g. passed to reco_api.ReCo)."""
        return cls(lambda: (dense_clip, clip_model, tokenizer))

    @property
    def dense_clip(self) -> nn.Module:
        return self._loaded()[0]

    def embed_text(self, names: Sequence[str]) -> torch.Tensor:
        """names -> (N, D) float32 text embeddings (SPEC 3)."""
        new = [n for n in dict.fromkeys(names) if n not in self._embedded]
        if new:
            _, clip_model, tokenizer = self._loaded()
            self._embedded.update(zip(new, embed_prompts(clip_model, tokenizer, new, "DenseCLIP")))
        return torch.stack([self._embedded[n] for n in names])


def embed_prompts(clip_model: nn.Module, tokenizer: Callable, names: Sequence[str], tower: str) -> torch.Tensor:
    """(N, D) text embeddings of N names (SPEC 3), a causal text tower run only as far as the prompts
    are long, with a progress bar over the prompts."""
    return text_embeddings(clip_model, tokenizer, names, encode=encode_text_truncated,
                           progress=counting_bar(f"embedding {tower} prompts", "prompt"))


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


def build_dense_clip(models: ModelSettings, device: torch.device) -> Optional[DenseClipModels]:
    """DenseCLIP and its text tower (built on first use), or None when neither text attention nor
    DenseCLIP inference is on."""
    if not (models.text_attention or models.dense_clip_inference):
        return None

    def load() -> tuple[nn.Module, nn.Module, Callable]:
        with timing.stage("models"):
            clip_model, tokenizer = networks.build_clip(
                models.dense_clip.arch, models.dense_clip.weights, device=device,
                precision=clip_precision(models.clip_precision, device), key="weights.dense_clip",
            )
            return DenseCLIP(clip_model).to(device).eval(), clip_model, tokenizer

    return DenseClipModels(load)


def build_retrieval_clip(models: ModelSettings, device: torch.device) -> tuple[nn.Module, Callable]:
    """The retrieval CLIP (index and text queries) and its tokenizer."""
    return networks.build_clip(
        models.clip.arch, models.clip.weights, device=device,
        precision=clip_precision(models.clip_precision, device), key="weights.clip",
    )
