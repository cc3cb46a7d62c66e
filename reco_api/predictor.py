"""The one prediction path of ReCo: class scores (in sliding windows when configured), the dense CRF,
labels. The benchmark evaluation, the pseudo-masks, the open-vocabulary evaluation, the Python API and
the web demo all predict through `Predictor`, so none of them can drift from the others."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from reco.sliding import sliding_window_scores
from reco_api.models import InferenceModels
from reco_api.settings import InferenceSettings
from utils import timing
from utils.crf import CrfSettings

ScoreTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Prediction:
    """scores (B, N, h, w) float32 of the N names before the CRF; crf_probabilities (B, C, h, w) float32 on
    the scores' device (C = N unless the CRF ran on class scores made from them), or None without the CRF."""

    scores: torch.Tensor
    crf_probabilities: Optional[torch.Tensor] = None

    @property
    def labels(self) -> torch.Tensor:
        """(B, h, w) int64: the best-scoring class of every pixel."""
        return self.scores.argmax(dim=1)

    @property
    def crf_labels(self) -> torch.Tensor:
        """(B, h, w) int64: the most probable class after the CRF."""
        if self.crf_probabilities is None:
            raise ValueError("this prediction was made without the CRF")
        return self.crf_probabilities.argmax(dim=1)


class Predictor:
    """Images -> scores -> CRF, with the models, the sliding window of `inference` and the CRF of `crf`."""

    def __init__(self, models: InferenceModels, inference: InferenceSettings, crf: CrfSettings) -> None:
        self.models = models
        self.slide_window = inference.slide_window
        self.slide_stride = inference.slide_stride
        self.crf = crf

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) ImageNet-normalised, on the models' device -> (B, N, H, W) float32 scores,
        averaged over sliding windows when `slide_window` is set (one pass otherwise, as the paper)."""
        return sliding_window_scores(images, self.models.predict, self.slide_window, self.slide_stride)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, *, crf: bool = True,
                crf_scores: Optional[ScoreTransform] = None) -> Prediction:
        """Scores of `images` (moved to the models' device first) and, when `crf`, the CRF refinement of
        `crf_scores(scores)` (e.g. query names -> classes of an open-vocabulary benchmark; default: the
        scores themselves)."""
        device = self.models.references.device
        with timing.stage("inference"):
            images = images.to(device, non_blocking=True)
            scores = self.scores(images)
            refined_input = crf_scores(scores) if crf and crf_scores is not None else scores
        if not crf:
            return Prediction(scores)
        with timing.stage("CRF"):
            refined = self.crf.refine(images, refined_input).to(scores.device)
        return Prediction(scores, refined)
