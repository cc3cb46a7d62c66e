"""ReCo as a Python object: the models are built once, then any image is segmented with any class names.

    from reco_api import ReCo
    model = ReCo.from_config("configs/reco_custom.yaml")
    result = model.segment("photo.jpg", ["red panda", "bamboo", "snow"])
    result.labels, result.scores, result.overlay, result.fractions

This module is the library's boundary: the config is read here, once, into the narrow settings of
reco_api/settings.py; the networks, the references and the predictor below take only those.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from datasets import images as own
from datasets.benchmarks import size_grouped_batches
from reco_api.config_checks import check_reco_names, reco_config
from reco.references import stack_references
from reco_api.class_names import check_categories, check_segmentation_classes
from reco_api.models import DenseClipModels, InferenceModels, build_dense_clip, build_encoder, build_retrieval_clip
from reco_api.predictor import Predictor
from reco_api.references import compute_references, retrieval_text_embeddings
from reco_api.result import Segmentation
from reco_api.settings import crf_settings, inference_settings, reference_settings
from utils.config import RecoConfig, check_device_name
from utils.device import resolve_device
from utils.visualise import label_palette

# progress(fraction in [0, 1], message): called while new classes are retrieved and co-segmented and
# while images are segmented (the web demo shows it).
Progress = Callable[[float, str], None]


class ReCo:
    """Zero-shot segmentation with any class names (ReCo, SPEC 4-9).

    Build it with `ReCo.from_config(path)` or `ReCo.from_settings(**keys)`; or pass an already-built
    dense `encoder` and `dense` (DenseCLIP and its text tower) to the constructor, which builds only
    what it is not given. The reference embedding of each class name is computed once: it is memoised
    here, and cached on disk per class in `reference_cache_dir`, shared with the command line and the
    benchmark runs; so are the text embeddings of the names (retrieval queries and DenseCLIP's). Requests may come from several threads at once: reference computation is
    serialised by a lock, segmentation is not.
    """

    def __init__(
        self,
        config: RecoConfig,
        *,
        encoder: Optional[nn.Module] = None,
        dense: Optional[DenseClipModels] = None,
        device: Union[str, torch.device, None] = None,
        max_image_pixels: Optional[int] = own.MAX_IMAGE_PIXELS,
        max_inference_pixels: Optional[int] = own.MAX_INFERENCE_PIXELS,
    ) -> None:
        self.config = check_reco_names(config)
        if isinstance(device, str):
            check_device_name(device)  # the device argument is checked as the key would be
        self.device = resolve_device(str(device) if device is not None else config.device)
        self.settings = reference_settings(config)
        self.inference = inference_settings(config)
        self.crf = crf_settings(config, self.device)
        models = self.settings.models
        self.encoder = (encoder if encoder is not None else build_encoder(models, self.device)).eval()
        self.dense = dense if dense is not None else build_dense_clip(models, self.device, self.settings.cache_root)
        self.max_image_pixels = max_image_pixels
        self.max_inference_pixels = max_inference_pixels
        self._references: dict[str, torch.Tensor] = {}
        self._retrieval_clip: Optional[tuple[nn.Module, Callable]] = None
        # the retrieval queries of every name seen, kept across calls (and cached beside the references)
        self._retrieval_text = retrieval_text_embeddings(self.settings, self.device, self._get_retrieval_clip)
        self._lock = threading.Lock()  # guards the memo, the text-embedding memo and the cache files

    @classmethod
    def from_config(cls, config: Union[str, os.PathLike, RecoConfig], *,
                    device: Union[str, torch.device, None] = None, **overrides: Any) -> "ReCo":
        """From a YAML file (or a loaded config); keyword arguments replace its keys, e.g.
        `weights={"encoder": "deit.pth"}` (merged into the file's `weights`) or `n_imgs=20`."""
        return cls(reco_config(config, overrides), device=device)

    @classmethod
    def from_settings(cls, *, device: Union[str, torch.device, None] = None, **settings: Any) -> "ReCo":
        """Without a YAML file: the config keys as keyword arguments, e.g.
        `ReCo.from_settings(dir_ckpt="ckpt", dir_imagenet="/data/ImageNet2012", weights={...})`."""
        return cls(reco_config(settings), device=device)

    # ------------------------------------------------------------------ reference embeddings

    def references(self, categories: Union[str, Sequence[str]], progress: Optional[Progress] = None) -> torch.Tensor:
        """(N, C) unit-norm reference embeddings of `categories`, on the model's device.

        Only names not seen before by this object are looked up in the disk cache, and only those
        missing there are retrieved and co-segmented. The ImageNet index must exist (see README).
        """
        names = check_categories(categories)
        with self._lock:
            missing = [name for name in names if name not in self._references]
            if missing:
                _report(progress, 0.0, f"retrieving and co-segmenting {len(missing)} new classes: {', '.join(missing)}")
                computed = compute_references(
                    self.settings, missing, self.device, self.encoder, self.dense,
                    retrieval_text=self._retrieval_text, progress=_cosegmentation_progress(progress),
                )
                self._references.update({name: computed[name].detach().cpu() for name in missing})
            return stack_references(self._references, names).to(self.device)

    def _get_retrieval_clip(self) -> tuple[nn.Module, Callable]:
        """Built on the first class that must be retrieved and kept for the next ones."""
        if self._retrieval_clip is None:
            self._retrieval_clip = build_retrieval_clip(self.settings.models, self.device)
        return self._retrieval_clip

    def release_retrieval_clip(self) -> None:
        """Free the retrieval CLIP (ViT-L/14@336px: about 1 GB) until a new class needs it again."""
        with self._lock:
            self._retrieval_clip = None

    def _text_embeddings(self, names: list[str]) -> Optional[torch.Tensor]:
        """(N, D) DenseCLIP text embeddings when DenseCLIP inference is on, else None."""
        if self.dense is None or not self.settings.models.dense_clip_inference:
            return None
        with self._lock:
            return self.dense.embed_text(names).to(self.device)

    # ------------------------------------------------------------------ segmentation

    def segment(self, image: own.ImageInput, categories: Union[str, Sequence[str]], *,
                crf: Optional[bool] = None, progress: Optional[Progress] = None) -> Segmentation:
        """Segment one image (PIL image, uint8 array (H, W, 3) or file path) into `categories`.

        crf: dense-CRF refinement (None: the config's `crf`). The labels are at the input's size.
        """
        return self.segment_batch([image], categories, crf=crf, progress=progress)[0]

    @torch.no_grad()
    def segment_batch(self, images: Iterable[own.ImageInput], categories: Union[str, Sequence[str]], *,
                      crf: Optional[bool] = None, progress: Optional[Progress] = None) -> list[Segmentation]:
        """Segment several images into the same classes; images of equal inference size are batched
        (`batch_size` at a time). Every image is read and checked before any model runs."""
        names = check_segmentation_classes(categories)
        pictures = [own.to_rgb_image(image, self.max_image_pixels) for image in images]
        if not pictures:
            return []
        for picture in pictures:  # a too elongated image: ImageTooThinError before any model runs
            own.inference_size(picture.width, picture.height, self.inference.image_short_side,
                               self.max_inference_pixels)
        matrix = self.references(names, progress)
        text = self._text_embeddings(names)
        models = InferenceModels(self.encoder, matrix, self.dense.dense_clip if text is not None else None, text)
        predictor = Predictor(models, self.inference, self.crf)
        crf = self.inference.crf if crf is None else bool(crf)
        palette = label_palette(len(names))

        short_side = self.inference.image_short_side
        tensors = [own.inference_tensor(p, short_side, self.max_inference_pixels) for p in pictures]
        chunks = size_grouped_batches([tuple(t.shape[-2:]) for t in tensors], self.inference.batch_size)
        results: list[Optional[Segmentation]] = [None] * len(pictures)
        for n_done, chunk in enumerate(chunks):
            _report(progress, 0.9 + 0.1 * n_done / len(chunks), f"segmenting {len(pictures)} image(s)")
            prediction = predictor.predict(torch.stack([tensors[i] for i in chunk]), crf=crf)
            labels = prediction.crf_labels if crf else prediction.labels  # (B, h, w)
            for j, i in enumerate(chunk):
                probabilities = prediction.crf_probabilities
                results[i] = Segmentation(
                    categories=tuple(names),
                    labels=_resize_labels(labels[j], pictures[i].height, pictures[i].width),
                    scores=prediction.scores[j].cpu().numpy(),
                    crf_probabilities=None if probabilities is None else probabilities[j].cpu().numpy(),
                    image=own.as_array(pictures[i]),
                    palette=palette,
                )
        _report(progress, 1.0, "done")
        return results  # type: ignore[return-value]


def _resize_labels(labels: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(h, w) class indices -> (height, width) uint8, nearest neighbour."""
    resized = F.interpolate(labels.float()[None, None], size=(height, width), mode="nearest")[0, 0]
    return resized.to(torch.uint8).cpu().numpy()


def _report(progress: Optional[Progress], fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def _cosegmentation_progress(progress: Optional[Progress]) -> Optional[Callable[[Iterable, str], Iterable]]:
    """Adapts `progress` to the loops of compute_references (contexts, then the new classes)."""
    if progress is None:
        return None

    def wrap(items: Iterable, desc: str) -> Iterable:
        items = list(items)
        for i, item in enumerate(items):
            progress(0.05 + 0.85 * i / max(len(items), 1), f"co-segmenting {desc}: {item}")
            yield item

    return wrap

