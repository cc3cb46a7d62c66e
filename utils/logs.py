"""Logging set-up of the 'reco' logger: stderr and the run's log files (no project imports, no torch, so an
entry point can set it up before it imports torch)."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator


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
