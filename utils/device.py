"""Device selection and seeding (no project imports). The logging set-up lives in utils.logs (no torch:
the entry points set up logging before the heavy imports); it is re-exported here."""
from __future__ import annotations

import functools
import random

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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_sequence(seed: int, epoch: int, index: int) -> np.random.SeedSequence:
    """The seed of one training sample (or, with index 2**32 - 1, of one epoch's order): a pure function
    of (seed, epoch, index), so data order and augmentations survive worker counts and resumption."""
    return np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch, index])
