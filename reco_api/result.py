"""The answer of `ReCo.segment`: labels at the input size, scores, overlay, legend and class fractions."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

import numpy as np
from PIL import Image

from utils.visualise import legend_png, overlay


@dataclass(frozen=True)
class Segmentation:
    """One segmented image.

    categories: the class names, in the order of the label values.
    labels: (H, W) uint8 class index per pixel, at the input image's size.
    scores: (N, h, w) float32 ReCo scores in [0, 1] (similarity to the reference embeddings, times
        DenseCLIP text attention when on), before the CRF, at the inference size (the shorter side is
        `image_short_side`; see datasets/images.py for the limits).
    crf_probabilities: (N, h, w) float32 CRF marginals at the inference size, or None without the CRF.
    image: (H, W, 3) uint8, the input as RGB.
    palette: (N, 3) uint8 colour of each class in the overlay and legend.
    """

    categories: tuple[str, ...]
    labels: np.ndarray
    scores: np.ndarray
    crf_probabilities: Optional[np.ndarray]
    image: np.ndarray = field(repr=False)
    palette: np.ndarray = field(repr=False)

    @cached_property
    def fractions(self) -> dict[str, float]:
        """Fraction of the image's pixels given to each class (they sum to 1)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.categories)) / self.labels.size
        return {name: float(counts[i]) for i, name in enumerate(self.categories)}

    @cached_property
    def overlay_array(self) -> np.ndarray:
        """(H, W, 3) uint8: the image blended half and half with the class colours."""
        return overlay(self.image, self.labels, self.palette)

    @property
    def overlay(self) -> Image.Image:
        return Image.fromarray(self.overlay_array)

    def legend(self) -> Image.Image:
        """A swatch and the name of every class."""
        return Image.open(io.BytesIO(legend_png(self.categories, self.palette))).convert("RGB")
