"""Segmentation metrics from a confusion matrix (SPEC 9.4)."""
from __future__ import annotations

import numpy as np
import torch


class RunningScore:
    """Accumulate a confusion matrix over batches; rows are ground truth, columns predictions.

    Ground-truth labels < 0 or >= n_classes are ignored. Scores are fractions, not percentages.
    """

    def __init__(self, n_classes: int) -> None:
        if n_classes < 1:
            raise ValueError(f"n_classes must be positive, got {n_classes}")
        self.n_classes = n_classes
        self.confusion = np.zeros((n_classes, n_classes), dtype=np.float64)

    def update(self, gt: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor) -> None:
        """gt, pred: integer arrays of the same shape, e.g. (B, H, W)."""
        gt = _to_numpy(gt).astype(np.int64).ravel()
        pred = _to_numpy(pred).astype(np.int64).ravel()
        if gt.shape != pred.shape:
            raise ValueError(f"gt and pred differ in size: {gt.shape} vs {pred.shape}")
        n = self.n_classes
        valid = (gt >= 0) & (gt < n)
        counts = np.bincount(n * gt[valid] + pred[valid], minlength=n * n)
        if counts.size > n * n:
            raise ValueError(f"prediction outside [0, {n}): max {pred[valid].max()}")
        self.confusion += counts.reshape(n, n)

    def scores(self) -> dict:
        """Pixel Acc, Mean Acc, FreqW Acc, Mean IoU and per-class IoU {0: iou_0, ...} (NaN if unseen)."""
        hist = self.confusion
        diag = np.diag(hist)
        rows, cols, total = hist.sum(axis=1), hist.sum(axis=0), hist.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            pixel_acc = diag.sum() / total
            mean_acc = np.nanmean(diag / rows) if np.any(rows > 0) else np.nan
            iou = diag / (rows + cols - diag)
            mean_iou = np.nanmean(iou) if np.any(~np.isnan(iou)) else np.nan
            freq = rows / total
        seen = freq > 0
        freqw_acc = (freq[seen] * iou[seen]).sum()
        out = {
            "Pixel Acc": float(pixel_acc),
            "Mean Acc": float(mean_acc),
            "FreqW Acc": float(freqw_acc),
            "Mean IoU": float(mean_iou),
        }
        out.update({i: float(v) for i, v in enumerate(iou)})
        return out

    def reset(self) -> None:
        self.confusion[:] = 0


def named_scores(scores: dict, class_names: list[str]) -> dict:
    """Replace the integer per-class keys of `RunningScore.scores()` by category names (flat dict)."""
    if len(class_names) != sum(isinstance(k, int) for k in scores):
        raise ValueError(f"{len(class_names)} class names for {len(scores) - 4} per-class scores")
    out = {k: v for k, v in scores.items() if isinstance(k, str)}
    out.update({name: scores[i] for i, name in enumerate(class_names)})
    return out


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
