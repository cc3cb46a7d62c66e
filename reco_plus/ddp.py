"""DistributedDataParallel helpers of the training loop (torchrun; no-ops in a single process)."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from reco_plus.checkpoint import capture_rng_state
from utils.distributed import get_world_size


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's `capture_rng_state()` (index = rank); a collective under DDP."""
    if get_world_size() == 1:
        return [capture_rng_state()]
    states: list[Any] = [None] * get_world_size()
    dist.all_gather_object(states, capture_rng_state())
    return states


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is True on any rank (so that all ranks stop at the same iteration)."""
    if get_world_size() == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value)
    return bool(value.item())


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when more than one process runs; the model itself otherwise.

    On CUDA the BatchNorms become SyncBatchNorm, so batch statistics are those of the global batch (the
    original trained on one GPU). Parameters are kept, so an optimiser built before stays valid.
    """
    if get_world_size() == 1:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)
