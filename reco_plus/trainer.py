"""The ReCo+ training loop (SPEC 12.2, 12.4) with injected data, evaluation and output hooks.

Per iteration: forward (fp16 autocast on CUDA when enabled), CE(ignore_index=255) on the logits at
input resolution, backward (through a GradScaler under AMP), `optimizer.step()`, `scheduler.step()`.
Every `iter_val` iterations and at the end: evaluation (rank 0, the RNG state is preserved around it so
that evaluating never changes training), `best_model.pt` at the first evaluation and whenever the CRF
mIoU improves, and `last.pt`. The hooks do all file I/O; this module only computes.

`train` is the loop; its parts are `train_step` (one optimisation step), `TrainingMetrics` (the
training records) and `validate` (one evaluation and the best-so-far decision).
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
NO_EVALUATION = float("-inf")  # best_miou before the first evaluation: any first result is the best so far


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
        """First evaluation, or the CRF mIoU improved: save the plain state_dict (best_model.pt)."""

    def on_checkpoint(self, state: dict[str, Any]) -> None:
        """Save the resumable training state (last.pt); rank 0 only."""

    def should_stop(self, iteration: int) -> bool:
        """Checked after every iteration; True stops training after writing last.pt."""
        return False


@dataclass
class TrainResult:
    iteration: int
    best_miou: float                # NO_EVALUATION when the run never evaluated
    stopped: bool                   # True when should_stop ended the run before iter_train


def train_step(*, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, batch: dict[str, Any],
               device: torch.device, use_amp: bool,
               scaler: Optional[torch.amp.GradScaler]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step on `batch` -> (logits (B, C, S, S), masks (B, S, S) int64, loss ()).

    Forward under fp16 autocast when use_amp, CE(ignore 255) in float32, backward (through `scaler`
    under AMP), optimizer.step(), scheduler.step().
    """
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
    return logits, masks, loss


class TrainingMetrics:
    """Loss and confusion against the pseudo-masks since the last record, accumulated on the device."""

    def __init__(self, *, n_classes: int, device: torch.device) -> None:
        self.n_classes = n_classes
        self.confusion = torch.zeros(n_classes * n_classes, dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count, self.window_start = 0, time.perf_counter()

    @torch.no_grad()
    def add(self, *, logits: torch.Tensor, masks: torch.Tensor, loss: torch.Tensor) -> None:
        # Without boolean indexing or bincount (both synchronise with the GPU); ignored pixels add 0.
        n = self.n_classes
        valid = (masks >= 0) & (masks < n)
        pred = logits.detach().argmax(dim=1)
        cells = (n * masks.clamp(0, n - 1) + pred).flatten()
        self.confusion.scatter_add_(0, cells, valid.flatten().long())
        self.loss_sum += loss.detach().double()
        self.count += 1

    def take_record(self, *, iteration: int, optimizer: torch.optim.Optimizer, check_finite: bool) -> dict[str, Any]:
        """The training record of the window since the last one (then starts a new window)."""
        n = self.n_classes
        mean_loss = float(self.loss_sum) / max(self.count, 1)
        if check_finite:
            _check_finite(mean_loss, iteration)
        running = RunningScore(n)
        running.confusion[:] = self.confusion.view(n, n).cpu().double().numpy()
        scores = running.scores()
        elapsed = time.perf_counter() - self.window_start
        record = {
            "iteration": iteration, "loss": mean_loss,
            "lr_backbone": optimizer.param_groups[0]["lr"], "lr_head": optimizer.param_groups[-1]["lr"],
            "train_miou": scores["Mean IoU"], "train_pixel_acc": scores["Pixel Acc"],
            "it_per_s": self.count / elapsed if elapsed > 0 else None,
        }
        self.confusion.zero_()
        self.loss_sum.zero_()
        self.count, self.window_start = 0, time.perf_counter()
        return record


def validate(*, model: nn.Module, evaluate: Callable[[nn.Module, int], EvalResult], iteration: int,
             best_miou: float) -> tuple[EvalResult, dict[str, Any], bool]:
    """Evaluate `model` (main rank) -> (result, record for the curves, whether it is the best so far).

    The RNG state is preserved around the evaluation (loaders and the CRF must not shift the training
    streams) and the model goes back to training mode. The first evaluation is always the best so far.
    """
    rng = capture_rng_state()
    result = evaluate(unwrap(model), iteration)  # unwrapped: DDP's forward would start collectives
    restore_rng_state(rng)
    model.train()
    miou = result.scores["Mean IoU"]
    miou_crf = result.scores_crf["Mean IoU"] if result.scores_crf is not None else None
    score = miou_crf if miou_crf is not None else miou
    improved = not _finite(best_miou) or (_finite(score) and score > best_miou)
    record = {"iteration": iteration, "miou": miou, "miou_crf": miou_crf, "pixel_acc": result.scores["Pixel Acc"],
              "best_miou_crf": score if improved else best_miou}
    return result, record, improved


def train(*, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, batches: Iterator[dict[str, Any]],
          settings: TrainSettings, device: torch.device,
          evaluate: Optional[Callable[[nn.Module, int], EvalResult]] = None, hooks: Optional[TrainHooks] = None,
          start_iteration: int = 0, best_miou: float = NO_EVALUATION, scaler: Optional[torch.amp.GradScaler] = None,
          progress: Optional[Any] = None, is_main: bool = True,
          gather_rng: Optional[Callable[[], list[dict[str, Any]]]] = None) -> TrainResult:
    """Train from `start_iteration` (completed iterations) to `settings.iter_train`.

    batches: endless iterator of {"image": (B,3,S,S) float, "mask": (B,S,S) int64 (255 = ignore)} whose
    first element is the batch of iteration start_iteration + 1. scheduler: already at start_iteration
    (built after resuming). evaluate(model, iteration) -> EvalResult is called on the main rank only.
    best_miou: the best CRF mIoU so far (NO_EVALUATION before the first evaluation). gather_rng() -> one
    RNG state per rank (a collective under DDP; default: this process only). progress: a tqdm-like bar.
    """
    hooks = hooks or TrainHooks()
    gather_rng = gather_rng or (lambda: [capture_rng_state()])
    if settings.iter_val < 1 or settings.iter_train < 0:
        raise ValueError(f"iter_val must be >= 1 and iter_train >= 0, got {settings.iter_val}, {settings.iter_train}")
    use_amp = settings.amp and device.type == "cuda"
    metrics = TrainingMetrics(n_classes=settings.n_classes, device=device)
    last_val: dict[str, float] = {}
    iteration = start_iteration
    model.train()

    def save_last() -> None:
        rng_states = gather_rng()  # every rank takes part, only the main rank writes
        if is_main:
            hooks.on_checkpoint(training_state(model, optimizer, scheduler, scaler, iteration, best_miou, rng_states))

    while iteration < settings.iter_train:
        logits, masks, loss = train_step(model=model, optimizer=optimizer, scheduler=scheduler, batch=next(batches),
                                         device=device, use_amp=use_amp, scaler=scaler)
        iteration += 1
        metrics.add(logits=logits, masks=masks, loss=loss)
        final = iteration == settings.iter_train
        if progress is not None:
            _show_progress(progress, loss=loss, iteration=iteration, last_val=last_val, use_amp=use_amp,
                           refresh=iteration % settings.postfix_every == 0 or final)
        if iteration % settings.log_every == 0 or final:
            # under AMP the scaler skips steps with overflowing values instead of diverging
            hooks.on_log(metrics.take_record(iteration=iteration, optimizer=optimizer, check_finite=not use_amp))
        if iteration % settings.iter_val == 0 or final:
            if is_main and evaluate is not None:
                result, record, improved = validate(model=model, evaluate=evaluate, iteration=iteration,
                                                    best_miou=best_miou)
                best_miou = record["best_miou_crf"]
                last_val = {"mIoU": record["miou"], **({"mIoU_crf": record["miou_crf"]}
                                                       if record["miou_crf"] is not None else {})}
                hooks.on_evaluation(iteration, result, record)
                if improved:
                    hooks.on_best(iteration, {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()})
            save_last()
            if final:
                break
        if hooks.should_stop(iteration):
            if iteration % settings.iter_val != 0:
                save_last()
            return TrainResult(iteration, best_miou, stopped=True)

    return TrainResult(iteration, best_miou, stopped=False)


def _show_progress(progress: Any, *, loss: torch.Tensor, iteration: int, last_val: dict[str, float], use_amp: bool,
                   refresh: bool) -> None:
    progress.update(1)
    if refresh:  # each refresh synchronises with the device
        value = float(loss.detach())
        if not use_amp:
            _check_finite(value, iteration)
        progress.set_postfix(loss=f"{value:.4f}", **{k: f"{v:.4f}" for k, v in last_val.items()})


def _finite(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)


def _check_finite(value: float, iteration: int) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(f"training loss is {value} at iteration {iteration} (diverged)")
