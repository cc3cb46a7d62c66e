"""Device selection, seeding and logging set-up (no project imports)."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .distributed import env_local_rank


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


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to stderr and, if given, to `log_file` (appending). Returns the 'reco' logger."""
    logger = logging.getLogger("reco")
    logger.setLevel(level)
    logger.propagate = False
    fmt = _log_format()
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in logger.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        logger.addHandler(stream)
    if log_file is not None:
        log_file = str(Path(log_file).resolve())
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
                h.close()
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def _log_format() -> logging.Formatter:
    return logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")


@contextlib.contextmanager
def extra_log_file(log_file: str | os.PathLike) -> Iterator[Path]:
    """Within the block, the 'reco' logger also writes to `log_file` (appending); the handlers it had
    (stderr, the run's own log) stay, and the extra file handler is removed and closed on exit."""
    logger = setup_logging()  # the stderr handler, when the process has none yet
    path = Path(log_file).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(_log_format())
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
