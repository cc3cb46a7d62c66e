"""The ReCo+ training loop (SPEC 12.2, 12.4) with injected data, evaluation and output hooks.

Per iteration: forward (fp16 autocast on CUDA when enabled), CE(ignore_index=255) on the logits at
input resolution, backward (through a GradScaler under AMP), `optimizer.step()`, `scheduler.step()`.
Every `iter_val` iterations and at the end: evaluation (rank 0, the RNG state is preserved around it so
that evaluating never changes training), `best_model.pt` when the CRF mIoU improves, and `last.pt`.
The hooks do all file I/O; this module only computes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from reco_plus.checkpoint import capture_rng_state, restore_rng_state, training_state, unwrap
from reco_plus.evaluation import EvalResult, autocast
from utils.metrics import RunningScore

IGNORE_INDEX = 255


@dataclass
class TrainSettings:
    iter_train: int = 20000
    iter_val: int = 1000
    n_classes: int = 27
    log_every: int = 100
    amp: bool = False               # fp16 autocast + GradScaler, CUDA only
    postfix_every: int = 10         # progress-bar refresh (each refresh synchronises with the device)


class TrainHooks:
    """Callbacks of `train`; the defaults do nothing. The entry script implements the file outputs."""

    def on_log(self, record: dict[str, Any]) -> None:
        """Training record every `log_every` iterations: iteration, loss, lrs, running train metrics."""

    def on_evaluation(self, iteration: int, result: EvalResult, record: dict[str, Any]) -> None:
        """After each validation (rank 0): result holds the scores, the record the summary for curves."""

    def on_best(self, iteration: int, state_dict: dict[str, torch.Tensor]) -> None:
        """The CRF mIoU improved: save the plain state_dict (best_model.pt)."""

    def on_checkpoint(self, state: dict[str, Any]) -> None:
        """Save the resumable training state (last.pt); rank 0 only."""

    def should_stop(self, iteration: int) -> bool:
        """Checked after every iteration; True stops training after writing last.pt."""
        return False


@dataclass
class TrainResult:
    iteration: int
    best_miou: float
    stopped: bool                   # True when should_stop ended the run before iter_train


def train(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, batches: Iterator[dict[str, Any]],
          settings: TrainSettings, device: torch.device,
          evaluate: Optional[Callable[[nn.Module, int], EvalResult]] = None, hooks: Optional[TrainHooks] = None,
          start_iteration: int = 0, best_miou: float = 0.0, scaler: Optional[torch.amp.GradScaler] = None,
          progress: Optional[Any] = None, is_main: bool = True,
          gather_rng: Optional[Callable[[], list[dict[str, Any]]]] = None) -> TrainResult:
    """Train from `start_iteration` (completed iterations) to `settings.iter_train`.

    batches: endless iterator of {"image": (B,3,S,S) float, "mask": (B,S,S) int64 (255 = ignore)} whose
    first element is the batch of iteration start_iteration + 1. evaluate(model, iteration) -> EvalResult is called
    on the main rank only. gather_rng() -> one RNG state per rank (a collective under DDP; default: this
    process only). progress: a tqdm-like bar (update, set_postfix).
    """
    hooks = hooks or TrainHooks()
    gather_rng = gather_rng or (lambda: [capture_rng_state()])
    if settings.iter_val < 1 or settings.iter_train < 0:
        raise ValueError(f"iter_val must be >= 1 and iter_train >= 0, got {settings.iter_val}, {settings.iter_train}")
    use_amp = settings.amp and device.type == "cuda"
    n = settings.n_classes
    confusion = torch.zeros(n * n, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    loss_count, window_start = 0, time.perf_counter()
    last_val: dict[str, float] = {}
    iteration = start_iteration
    model.train()

    def save_last() -> None:
        rng_states = gather_rng()  # every rank takes part, only the main rank writes
        if is_main:
            hooks.on_checkpoint(training_state(model, optimizer, scheduler, scaler, iteration, best_miou, rng_states))

    while iteration < settings.iter_train:
        batch = next(batches)
        images = batch["image"].to(device, non_blocking=True)
        masks = batch["mask"].to(device, non_blocking=True)
        with autocast(device, use_amp):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and use_amp:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        iteration += 1

        with torch.no_grad():
            # Running confusion against the pseudo-masks, on the device and without boolean indexing or
            # bincount (both synchronise with the GPU); ignored pixels add 0.
            valid = (masks >= 0) & (masks < n)
            pred = logits.detach().argmax(dim=1)
            cells = (n * masks.clamp(0, n - 1) + pred).flatten()
            confusion.scatter_add_(0, cells, valid.flatten().long())
            loss_sum += loss.detach().double()
            loss_count += 1

        if progress is not None:
            progress.update(1)
            if iteration % settings.postfix_every == 0 or iteration == settings.iter_train:
                value = float(loss.detach())
                if not use_amp:  # under AMP the scaler skips steps with overflowing values instead
                    _check_finite(value, iteration)
                progress.set_postfix(loss=f"{value:.4f}", **{k: f"{v:.4f}" for k, v in last_val.items()})

        if iteration % settings.log_every == 0 or iteration == settings.iter_train:
            mean_loss = float(loss_sum) / max(loss_count, 1)
            if not use_amp:
                _check_finite(mean_loss, iteration)
            running = RunningScore(n)
            running.confusion[:] = confusion.view(n, n).cpu().double().numpy()
            train_scores = running.scores()
            elapsed = time.perf_counter() - window_start
            hooks.on_log({
                "iteration": iteration, "loss": mean_loss,
                "lr_backbone": optimizer.param_groups[0]["lr"], "lr_head": optimizer.param_groups[-1]["lr"],
                "train_miou": train_scores["Mean IoU"], "train_pixel_acc": train_scores["Pixel Acc"],
                "it_per_s": loss_count / elapsed if elapsed > 0 else None,
            })
            confusion.zero_()
            loss_sum.zero_()
            loss_count, window_start = 0, time.perf_counter()

        if iteration % settings.iter_val == 0 or iteration == settings.iter_train:
            if is_main and evaluate is not None:
                rng = capture_rng_state()  # loaders and the CRF must not shift the training RNG streams
                result = evaluate(unwrap(model), iteration)  # DDP's forward would start collectives
                restore_rng_state(rng)
                model.train()
                miou = result.scores["Mean IoU"]
                miou_crf = result.scores_crf["Mean IoU"] if result.scores_crf is not None else miou
                improved = _finite(miou_crf) and miou_crf > best_miou
                if improved:
                    best_miou = miou_crf
                record = {"iteration": iteration, "miou": miou,
                          "miou_crf": result.scores_crf["Mean IoU"] if result.scores_crf is not None else None,
                          "pixel_acc": result.scores["Pixel Acc"], "best_miou_crf": best_miou}
                last_val = {"mIoU": miou, **({"mIoU_crf": record["miou_crf"]} if record["miou_crf"] is not None else {})}
                hooks.on_evaluation(iteration, result, record)
                if improved:
                    hooks.on_best(iteration, {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()})
            save_last()
            if iteration == settings.iter_train:
                break

        if hooks.should_stop(iteration):
            if iteration % settings.iter_val != 0:
                save_last()
            return TrainResult(iteration, best_miou, stopped=True)

    return TrainResult(iteration, best_miou, stopped=False)


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


def _check_finite(value: float, iteration: int) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(f"training loss is {value} at iteration {iteration} (diverged)")
