"""Figures: evaluation panels, co-segmentation maps, own-image overlays and legends, training curves.

The only module that plots. Figures are drawn on `Figure` objects of their own, never through pyplot:
threads such as the web demo's requests can draw at the same time, importing the project leaves the
user's pyplot backend alone (a notebook keeps its inline plots), and pyplot's import time is saved.
Titles, legends and colour bars stay inside the picture (constrained layout, or a layout by hand where a
picture is drawn per category), and files are written atomically.

Overlays tint the image's grey levels, not its colours: a class colour blended with the image's own hue
changes hue (navy over a blue sky reads as blue, maroon over green grass as brown) and could not be
matched with its legend swatch. Over grey it only gets darker or lighter, along the ramp that the
legend draws for it (`overlay_ramp`).
"""
from __future__ import annotations

import functools
import io
import itertools
import os
from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from utils.io import atomic_write

OVERLAY_ALPHA = 0.5  # weight of the class colour in an overlay; the image's grey level has the rest
IGNORED_NAME = "ignored (not scored)"  # legend entry of the ground truth's black, out-of-range labels
PANEL_INCHES = 3.0  # width and height of one evaluation panel
LEGEND_COLUMNS_PER_PANEL = 2
LEGEND_ROW_INCHES = 0.22
PALETTE_LEVELS = (0, 32, 64, 96, 128, 160, 192, 224, 255)  # per channel, for the own-class colours
MIN_CHROMA = 80.0  # |c - mean(c)| of an own-class colour: weaker tints are hard to see in an overlay


def colourise(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 colours; labels < 0 or >= len(palette) are black."""
    labels = np.asarray(labels).astype(np.int64)
    palette = np.asarray(palette, dtype=np.uint8)
    out = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = (labels >= 0) & (labels < len(palette))
    out[valid] = palette[labels[valid]]
    return out


def label_palette(n: int) -> np.ndarray:
    """(n, 3) uint8 colours for own class lists, chosen so that classes stay apart in an overlay.

    An overlay tints grey levels (`overlay`), so the brightness of a class colour cannot be told from
    the image's own brightness; only its chroma can (the colour minus its grey, c - mean(c)). Two classes
    can be told apart over any grey levels by ALPHA * |chroma difference|. The colours are taken in
    farthest-point order in chroma from red on a grid of RGB colours with a visible tint: each next one
    is the colour farthest from all earlier ones, so a class keeps its colour whatever the number of
    classes and the first few are far apart (red, cyan, violet, chartreuse, blue, ...).
    """
    colours = _chroma_spread_colours()
    if n > len(colours):
        raise ValueError(f"label_palette: at most {len(colours)} classes get distinct overlay colours, not {n}")
    return colours[:n].copy()


@functools.lru_cache(maxsize=1)
def _chroma_spread_colours() -> np.ndarray:
    """(K, 3) uint8: the grid's colours of distinct chroma in farthest-point order (see `label_palette`)."""
    candidates = np.array(list(itertools.product(PALETTE_LEVELS, repeat=3)), dtype=np.float64)
    chroma = candidates - candidates.mean(axis=1, keepdims=True)
    keep = np.linalg.norm(chroma, axis=1) >= MIN_CHROMA
    candidates, chroma = candidates[keep], chroma[keep]
    # of colours with the same chroma, the one nearest mid brightness comes first and is the one taken
    order = np.argsort(np.abs(candidates.mean(axis=1) - 127.5), kind="stable")
    candidates, chroma = candidates[order], chroma[order]
    chosen = [int(np.argmin(np.abs(candidates - (255, 0, 0)).sum(axis=1)))]
    distance = np.linalg.norm(chroma - chroma[chosen[0]], axis=1)
    while distance.max() > 0:
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(chroma - chroma[chosen[-1]], axis=1))
    return candidates[chosen].astype(np.uint8)


def grey_levels(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 luma in [0, 255] (ITU-R BT.601 weights, as PIL's "L" mode)."""
    return np.asarray(image, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8 image, (H, W) labels -> (H, W, 3) uint8: the image's grey levels tinted with the class
    colours, (1 - alpha) * grey + alpha * colour. Every pixel of class c lies on `overlay_ramp(palette)[c]`."""
    grey = grey_levels(image)[..., None]
    blended = (1 - alpha) * grey + alpha * colourise(labels, palette).astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def overlay_ramp(palette: np.ndarray, steps: int = 256, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(N, 3) palette -> (N, steps, 3) uint8: each class colour as `overlay` draws it over grey levels
    from black to white, the colours that the class can take in an overlay (the legend's swatches)."""
    grey = np.linspace(0.0, 255.0, steps, dtype=np.float32)[None, :, None]
    colours = np.asarray(palette, dtype=np.float32)[:, None, :]
    return np.clip(np.round((1 - alpha) * grey + alpha * colours), 0, 255).astype(np.uint8)


def present_classes(label_maps: Sequence[Optional[np.ndarray]], n_classes: int) -> tuple[list[int], bool]:
    """The class indices found in any of the (H, W) label maps (None ones are skipped), in increasing order,
    and whether any label lies outside [0, n_classes) (drawn black: not scored)."""
    found = np.zeros(n_classes, dtype=bool)
    outside = False
    for labels in label_maps:
        if labels is None:
            continue
        labels = np.asarray(labels).astype(np.int64).ravel()
        valid = (labels >= 0) & (labels < n_classes)
        found |= np.bincount(labels[valid], minlength=n_classes) > 0
        outside = outside or not bool(valid.all())
    return np.flatnonzero(found).tolist(), outside


def panels_figure(
    image: np.ndarray,
    gt: Optional[np.ndarray],
    pred: np.ndarray,
    pred_crf: Optional[np.ndarray],
    palette: np.ndarray,
    names: Sequence[str],
) -> Figure:
    """A 1 x 4 figure: image, ground truth, prediction, CRF prediction (missing panels are skipped), with a
    legend below them of the classes that appear in the ground truth or a prediction (swatch and name).

    image (H, W, 3) uint8; gt, pred, pred_crf (H, W) class indices into `names` and `palette`.
    """
    if len(names) > len(palette):
        raise ValueError(f"save_panels: {len(names)} class names but only {len(palette)} palette colours")
    panels = [("image", image), ("ground truth", gt), ("prediction", pred), ("prediction + CRF", pred_crf)]
    panels = [(title, data) for title, data in panels if data is not None]
    present, outside = present_classes([gt, pred, pred_crf], len(names))
    handles = [Patch(facecolor=np.asarray(palette[c]) / 255.0, edgecolor="0.4", label=names[c]) for c in present]
    if outside:
        handles.append(Patch(facecolor="black", edgecolor="0.4", label=IGNORED_NAME))
    columns = LEGEND_COLUMNS_PER_PANEL * len(panels)
    rows = -(-len(handles) // columns)
    fig = Figure(figsize=(PANEL_INCHES * len(panels), PANEL_INCHES + LEGEND_ROW_INCHES * rows), layout="constrained")
    for ax, (title, data) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        ax.imshow(data if data.ndim == 3 else colourise(data, palette), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(columns, len(handles)), fontsize=7,
                   frameon=False, handlelength=1.2, columnspacing=1.0)
    return fig


def save_panels(
    path: str | os.PathLike,
    image: np.ndarray,
    gt: Optional[np.ndarray],
    pred: np.ndarray,
    pred_crf: Optional[np.ndarray],
    palette: np.ndarray,
    names: Sequence[str],
) -> None:
    """`panels_figure` written as a PNG file."""
    _save_figure(panels_figure(image, gt, pred, pred_crf, palette, names), path)


def cosegmentation_figure(images: np.ndarray, similarity: np.ndarray, title: str = "", n: int = 5) -> Figure:
    """The first `n` retrieved images (grey levels) under their similarity to the reference (jet, alpha 0.5),
    with a colour bar of the cosine similarity from -1 to 1 drawn as it looks over mid-grey.

    images (k, H, W, 3) uint8; similarity (k, H, W) float, already resized to the images.
    """
    n = min(n, len(images))
    # laid out by hand, in inches: a layout engine would double the time of a picture drawn per category
    panel, bar_width, right, top, bottom = 2.5, 0.12, 0.9, 0.4, 0.1
    width, height = panel * n + right, panel + top + bottom
    fig = Figure(figsize=(width, height))
    heat = None
    for i in range(n):
        ax = fig.add_axes((i * panel / width + 0.02 / width, bottom / height, (panel - 0.04) / width, panel / height))
        ax.imshow(grey_levels(images[i]), cmap="gray", vmin=0, vmax=255)
        heat = ax.imshow(similarity[i], cmap="jet", alpha=0.5, vmin=-1, vmax=1)
        ax.axis("off")
    if heat is not None:
        bar_axes = fig.add_axes(((panel * n + 0.08) / width, (bottom + 0.2) / height, bar_width / width,
                                 (panel - 0.4) / height))
        bar = fig.colorbar(heat, cax=bar_axes, ticks=[-1, -0.5, 0, 0.5, 1])
        bar.ax.set_facecolor("0.5")  # the bar's half-transparent colours over mid-grey, as over an image
        bar.set_label("cosine similarity to\nthe reference embedding", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return fig


def save_cosegmentation(
    path: str | os.PathLike, images: np.ndarray, similarity: np.ndarray, title: str = "", n: int = 5
) -> None:
    """`cosegmentation_figure` written as a PNG file."""
    _save_figure(cosegmentation_figure(images, similarity, title, n), path)


def save_legend(path: str | os.PathLike, categories: Sequence[str], palette: np.ndarray) -> None:
    """The legend of the overlays (`legend_png`) as a PNG file."""
    with atomic_write(path, "wb") as f:
        f.write(legend_png(categories, palette))


def legend_figure(categories: Sequence[str], palette: np.ndarray) -> Figure:
    """The legend of the overlays: for every category, its name and a swatch that shows its colour as the
    overlay draws it, over grey levels from black (left) to white (right) (`overlay_ramp`)."""
    n = len(categories)
    ramps = overlay_ramp(np.asarray(palette)[:n])
    fig = Figure(figsize=(3.2, 0.3 * n + 0.5))
    ax = fig.add_subplot()
    for i, name in enumerate(categories):
        y = n - 1 - i
        ax.imshow(ramps[i:i + 1], extent=(0, 2.0, y, y + 0.8), interpolation="nearest", aspect="auto")
        ax.text(2.3, y + 0.4, name, va="center", fontsize=9)
    ax.text(0, n + 0.1, "overlay colour over dark → light", fontsize=7, color="0.3")
    ax.set_xlim(0, 8)
    ax.set_ylim(-0.2, n + 0.6)
    ax.axis("off")
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.98)
    return fig


def legend_png(categories: Sequence[str], palette: np.ndarray) -> bytes:
    """The PNG bytes of `legend_figure`."""
    buffer = io.BytesIO()
    legend_figure(categories, palette).savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def plot_training_curves(path: str | os.PathLike, records: Sequence[Mapping]) -> None:
    """Training loss and validation mIoU (plain and CRF) against the iteration.

    records: dicts with "iteration" and any of "loss", "miou", "miou_crf".
    """
    fig = Figure(figsize=(9, 3.2))
    ax_loss, ax_iou = fig.subplots(1, 2)
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


def _save_figure(fig: Figure, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
