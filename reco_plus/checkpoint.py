"""What a resumable ReCo+ checkpoint holds, as plain dicts (the entry writes them with utils.io).

`training_state` collects model, optimiser, scheduler, grad scaler, iteration, best CRF mIoU and the RNG
states of python / numpy / torch (CPU and CUDA); `restore_training_state` puts everything back but the
scheduler, which the caller builds at the resumed iteration. The
data order needs no state of its own: it is a function of (seed, iteration) (see sampling.py).
"""
from __future__ import annotations

import random
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

FORMAT = "reco_plus_last_v1"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel."""
    return getattr(model, "module", model)


def capture_rng_state() -> dict[str, Any]:
    """RNG states of python, numpy, torch CPU and (if present) all CUDA devices."""
    state = {
        "python": random.getstate(),
        "numpy": _numpy_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`; CUDA states are restored only where CUDA is available."""
    random.setstate(_python_state(state["python"]))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                   scaler: Optional[torch.amp.GradScaler], iteration: int, best_miou: float,
                   rng_states: list[dict[str, Any]], extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Everything needed to continue training after `iteration` completed iterations.

    rng_states: one `capture_rng_state()` per DDP rank (index = rank).
    """
    return {
        "format": FORMAT,
        "iteration": iteration,
        "best_miou": best_miou,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_states,
        "extra": extra or {},
    }


def restore_training_state(state: dict[str, Any], *, model: nn.Module, optimizer: torch.optim.Optimizer,
                           scaler: Optional[torch.amp.GradScaler], rank: int = 0) -> tuple[int, float]:
    """Load a `training_state` dict into the given objects; returns (iteration, best_miou).

    The scheduler is not restored: the caller builds it afterwards at the returned iteration (PolyLR's
    learning rates are a function of the iteration; the saved `state["scheduler"]` records the schedule
    the run was started with). The RNG state of `rank` is restored when the checkpoint holds one for it
    (same world size); otherwise the caller's seeding stays in effect (resume then is reproducible but
    not bit-identical).
    """
    if state.get("format") != FORMAT:
        raise ValueError(f"not a ReCo+ training checkpoint (format {state.get('format')!r}, expected {FORMAT!r})")
    unwrap(model).load_state_dict(state["model"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rng = state.get("rng") or []
    if rank < len(rng):
        restore_rng_state(rng[rank])
    return int(state["iteration"]), float(state["best_miou"])


def _python_state(state: Any) -> tuple:
    # After a weights_only round trip the tuple may come back as lists.
    version, internal, gauss = state
    return int(version), tuple(int(x) for x in internal), gauss


def _numpy_plain(state: tuple) -> tuple:
    # Plain python values, so that last.pt loads with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = state
    return str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)


def _numpy_state(state: Any) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return str(name), np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)
