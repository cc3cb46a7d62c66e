"""Reporting long work: progress bars for work counted through a callback (the algorithm in reco/ never
prints), and per-file warnings that stop after the first few."""
from __future__ import annotations

import logging
from typing import Callable, Optional

from tqdm import tqdm

# Per-file warnings logged one line each before the rest are only counted.
FIRST_FEW_WARNINGS = 5


def counting_bar(desc: str, unit: str) -> Callable[[int, int], None]:
    """A callback progress(done, total) that draws a tqdm bar, opened on the first call and closed when
    done reaches total."""
    bar: Optional[tqdm] = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


class FirstFewWarnings:
    """Warnings about single files (e.g. skipped images): the first `limit` are logged one line each, then
    one line says that the others are only counted; the caller lists them all in `listed_in`."""

    def __init__(self, logger: logging.Logger, listed_in: str, limit: int = FIRST_FEW_WARNINGS) -> None:
        self.logger = logger
        self.listed_in = listed_in
        self.limit = limit
        self.count = 0

    def warn(self, message: str, *args: object) -> None:
        self.count += 1
        if self.count <= self.limit:
            self.logger.warning(message, *args)
        elif self.count == self.limit + 1:
            self.logger.warning("more than %d images skipped: the others are counted at the end, not logged one "
                                "by one (all are listed in %s)", self.limit, self.listed_in)
