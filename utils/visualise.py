"""Figures: evaluation panels, co-segmentation maps, own-image overlays and legends, training curves.

The only module that plots. Figures are rendered with matplotlib's Agg backend into memory and
written atomically.
"""
from __future__ import annotations

import io
import os
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from utils.io import atomic_write  # noqa: E402
from utils.palette import voc_colormap  # noqa: E402


def colourise(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 colours; labels < 0 or >= len(palette) are black."""
    labels = np.asarray(labels).astype(np.int64)
    palette = np.asarray(palette, dtype=np.uint8)
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = (labels >= 0) & (labels < len(palette))
    out[valid] = palette[labels[valid]]
    return out


def label_palette(n: int) -> np.ndarray:
    """n distinct colours for own class lists: the VOC colour map without its black first entry."""
    return voc_colormap(n + 1)[1:]


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend an (H, W, 3) uint8 image with its coloured (H, W) label map."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colourise(labels, palette).astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_panels(
    path: str | os.PathLike,
    image: np.ndarray,
    gt: Optional[np.ndarray],
    pred: np.ndarray,
    pred_crf: Optional[np.ndarray],
    palette: np.ndarray,
) -> None:
    """A 1 x 4 figure: image, ground truth, prediction, CRF prediction (missing panels are skipped)."""
    panels = [("image", image), ("ground truth", gt), ("prediction", pred), ("prediction + CRF", pred_crf)]
    panels = [(title, data) for title, data in panels if data is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels):
        ax.imshow(data if data.ndim == 3 else colourise(data, palette))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout(pad=0.5)
    _save_figure(fig, path)


def save_cosegmentation(
    path: str | os.PathLike, images: np.ndarray, similarity: np.ndarray, title: str = "", n: int = 5
) -> None:
    """The first `n` retrieved images with their similarity to the reference (jet, alpha 0.5).

    images (k, H, W, 3) uint8; similarity (k, H, W) float, already resized to the images.
    """
    n = min(n, len(images))
    fig, axes = plt.subplots(1, n, figsize=(2.5 * n, 2.7), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(images[i])
        ax.imshow(similarity[i], cmap="jet", alpha=0.5, vmin=-1, vmax=1)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(pad=0.5)
    _save_figure(fig, path)


def save_legend(path: str | os.PathLike, categories: Sequence[str], palette: np.ndarray) -> None:
    """A swatch and the name of every category, as a PNG file."""
    with atomic_write(path, "wb") as f:
        f.write(legend_png(categories, palette))


def legend_png(categories: Sequence[str], palette: np.ndarray) -> bytes:
    """The PNG bytes of the legend: a swatch and the name of every category.

    Drawn on a `Figure` of its own, not through pyplot's global state, so that threads (the web
    demo's requests) can draw legends at the same time.
    """
    n = len(categories)
    fig = Figure(figsize=(3.2, 0.3 * n + 0.3))
    ax = fig.add_subplot()
    for i, name in enumerate(categories):
        ax.add_patch(Rectangle((0, n - 1 - i), 0.8, 0.8, color=np.asarray(palette[i]) / 255.0))
        ax.text(1.1, n - 1 - i + 0.4, name, va="center", fontsize=9)
    ax.set_xlim(0, 8)
    ax.set_ylim(-0.2, n)
    ax.axis("off")
    fig.tight_layout(pad=0.2)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def plot_training_curves(path: str | os.PathLike, records: Sequence[Mapping]) -> None:
    """Training loss and validation mIoU (plain and CRF) against the iteration.

    records: dicts with "iteration" and any of "loss", "miou", "miou_crf".
    """
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, keys in ((ax_loss, ("loss",)), (ax_iou, ("miou", "miou_crf"))):
        for key in keys:
            points = [(r["iteration"], r[key]) for r in records if r.get(key) is not None]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, marker="o" if len(points) < 30 else None, markersize=3, label=key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    ax_loss.set_title("training loss", fontsize=10)
    ax_iou.set_title("validation mIoU", fontsize=10)
    fig.tight_layout(pad=0.5)
    _save_figure(fig, path)


def _save_figure(fig: "plt.Figure", path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
