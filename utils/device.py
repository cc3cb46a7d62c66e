"""Device selection and seeding (no project imports). The logging set-up lives in utils.logs (no torch:
the entry points set up logging before the heavy imports); it is re-exported here."""
from __future__ import annotations

import functools
import os
import random
from typing import Optional, Union

import numpy as np
import torch

from .distributed import env_local_rank
from .logs import extra_log_file, setup_logging  # noqa: F401  (re-exported)


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX), where the bf16 GEMM beats fp32
    (reco.retrieval.retrieve_top_k's `fast_bf16`)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu', 'cuda', 'cuda:1' are taken as given."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", env_local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else f"torch (CUDA {torch.version.cuda}) finds no GPU or driver")
        raise ValueError(f"device: '{name}' requested but CUDA is not available ({why}); use 'auto' or 'cpu'")
    return device


# index_batch_size 'auto': images per forward pass of the index build. On a GPU the batch fills the
# device; on a CPU a large batch buys no speed (ViT-L/14@336px: 4.2 s/img at 32) and costs memory (11.8 GB
# at 256 against 3.8 GB at 32).
AUTO_BATCH_CUDA = 256
AUTO_BATCH_CPU = 32


def effective_batch_size(value: Union[int, str], device: Union[str, torch.device]) -> int:
    """A batch-size key's value on `device`: 'auto' -> 256 on CUDA, 32 elsewhere; a number as given."""
    if value == "auto":
        return AUTO_BATCH_CUDA if torch.device(device).type == "cuda" else AUTO_BATCH_CPU
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"a batch size must be 'auto' or an integer >= 1, got {value!r}")
    return value


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def effective_workers(n_workers: int, device: Union[str, torch.device], cores: Optional[int] = None) -> int:
    """DataLoader workers on `device`: on a CPU at most the cores less one (the workers would compete
    with the model for the cores, and torch warns about more workers than cores); on a GPU as given."""
    if torch.device(device).type == "cuda":
        return n_workers
    return max(0, min(n_workers, (usable_cores() if cores is None else cores) - 1))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_sequence(seed: int, epoch: int, index: int) -> np.random.SeedSequence:
    """The seed of one training sample (or, with index 2**32 - 1, of one epoch's order): a pure function
    of (seed, epoch, index), so data order and augmentations survive worker counts and resumption."""
    return np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch, index])
