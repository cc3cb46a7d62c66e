"""Validation of a segmentor with and without the dense CRF (SPEC 12.4), on injected models and loaders."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Container, Iterable, Optional

import numpy as np
import torch
import torch.nn as nn

from utils.metrics import RunningScore

# crf_fn(images (B, 3, H, W) ImageNet-normalised, logits (B, C, H, W)) -> probabilities (B, C, H, W)
CrfFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class EvalSample:
    """One image kept for a visualisation panel (first image of a selected batch)."""

    batch_index: int
    image: torch.Tensor            # (3, H, W) ImageNet-normalised, CPU
    gt: np.ndarray                 # (H, W) int64, -1 = ignore
    pred: np.ndarray               # (H, W) int64
    pred_crf: Optional[np.ndarray]  # (H, W) int64 or None without CRF
    name: str = ""


@dataclass
class EvalResult:
    scores: dict                   # RunningScore.scores() of the plain argmax
    scores_crf: Optional[dict]     # the same after the CRF (None when no crf_fn)
    samples: list[EvalSample] = field(default_factory=list)
    n_images: int = 0


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA when enabled; a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """images (B, 3, H, W) on the model's device -> float32 logits (B, C, H, W)."""
    with autocast(images.device, amp):
        return model(images).float()


def evaluate(model: nn.Module, batches: Iterable[dict[str, Any]], n_classes: int, device: torch.device,
             crf_fn: Optional[CrfFn] = None, amp: bool = False, visualise: Container[int] = (),
             progress: Optional[Any] = None) -> EvalResult:
    """Score `model` on `batches` of {"image": (B,3,H,W), "label": (B,H,W) int64 (-1 ignore), "name": [...]}.

    The model is put in eval mode and returned to its previous mode. `visualise`: batch indices whose
    first image is kept in `EvalResult.samples`. `progress`: anything with `update(n)` (e.g. tqdm).
    """
    was_training = model.training
    model.eval()
    score, score_crf = RunningScore(n_classes), (RunningScore(n_classes) if crf_fn is not None else None)
    samples: list[EvalSample] = []
    n_images = 0
    try:
        for b, batch in enumerate(batches):
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"]
            logits = predict_logits(model, images, amp)
            if logits.shape[-2:] != labels.shape[-2:]:
                raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
            pred = logits.argmax(dim=1).cpu()
            score.update(labels, pred)
            pred_crf = None
            if crf_fn is not None:
                pred_crf = crf_fn(images, logits).argmax(dim=1).cpu()
                score_crf.update(labels, pred_crf)
            if b in visualise:
                names = batch.get("name")
                samples.append(EvalSample(
                    b, batch["image"][0].cpu(), labels[0].numpy().astype(np.int64), pred[0].numpy(),
                    None if pred_crf is None else pred_crf[0].numpy(), str(names[0]) if names else ""))
            n_images += len(images)
            if progress is not None:
                progress.update(1)
    finally:
        model.train(was_training)
    return EvalResult(score.scores(), None if score_crf is None else score_crf.scores(), samples, n_images)
