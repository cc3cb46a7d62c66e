"""Wall-clock time per stage of a run (models, text, retrieval, co-segmentation, inference, CRF, writing).

An entry point opens a run with `with timing.run() as timer:`; code anywhere below it wraps its work in
`with timing.stage("inference"):`. Outside a run, `stage` does nothing, so library code (reco_api, the
tests) can call it freely. Times of a stage entered many times (once per batch) add up; a stage entered
with `log=True` also logs its own time when it ends, so a long run says what it is doing. Stages nest:
time spent in an inner stage (e.g. building the retrieval CLIP, "models", inside "retrieval") counts for
the inner one only, so the table's rows add up to the run's time.
At the end, `timer.table()` is the summary printed to the log and `timer.as_dict()` goes to timings.json.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from utils.io import save_json

logger = logging.getLogger("reco")


class StageTimer:
    """Accumulated seconds and call counts per stage, in first-seen order, plus per-item times
    (e.g. co-segmentation per category)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.items: dict[str, dict[str, float]] = {}
        self.output_dir: Optional[Path] = None  # where the run's timings.json belongs (set by the stage)
        self.open_stages: list[float] = []  # per open stage: seconds spent in the stages nested in it
        self._start = time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def add_item(self, group: str, item: str, seconds: float) -> None:
        self.items.setdefault(group, {})[item] = self.items.get(group, {}).get(item, 0.0) + seconds

    @property
    def total(self) -> float:
        return time.perf_counter() - self._start

    def as_dict(self) -> dict[str, Any]:
        """{"total_s", "stages": {name: {"seconds", "calls"}}, "items": {group: {item: seconds}}}."""
        return {
            "total_s": round(self.total, 4),
            "stages": {name: {"seconds": round(s, 4), "calls": self.calls[name]} for name, s in self.seconds.items()},
            "items": {group: {k: round(v, 4) for k, v in items.items()} for group, items in self.items.items()},
        }

    def table(self) -> str:
        """The summary table: one row per stage, then the rest of the run ('other') and the total."""
        total = self.total
        rows = [(name, s, self.calls[name]) for name, s in self.seconds.items()]
        other = max(total - sum(s for _, s, _ in rows), 0.0)
        width = max([len("stage")] + [len(name) for name, _, _ in rows])
        lines = [f"{'stage':<{width}}  {'seconds':>9}  {'share':>6}  calls"]
        for name, s, calls in rows + [("other", other, 0)]:
            lines.append(f"{name:<{width}}  {s:9.2f}  {s / max(total, 1e-9):6.1%}  {calls or '':>5}")
        lines.append(f"{'total':<{width}}  {total:9.2f}")
        return "\n".join(lines)


_current: contextvars.ContextVar[Optional[StageTimer]] = contextvars.ContextVar("reco_stage_timer", default=None)


def current() -> Optional[StageTimer]:
    """The timer of the run in progress, or None outside a run."""
    return _current.get()


@contextlib.contextmanager
def run() -> Iterator[StageTimer]:
    """Time a run: stages entered inside the block are recorded in the timer it yields."""
    timer = StageTimer()
    token = _current.set(timer)
    try:
        yield timer
    finally:
        _current.reset(token)


@contextlib.contextmanager
def stage(name: str, log: bool = False) -> Iterator[None]:
    """Add the block's wall-clock time to stage `name` of the current run (nothing outside a run).

    CUDA work is asynchronous: the device is synchronised at the end so the time lands in this stage.
    """
    timer = _current.get()
    if timer is None:
        yield
        return
    start = time.perf_counter()
    timer.open_stages.append(0.0)
    try:
        yield
    finally:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        nested = timer.open_stages.pop()
        timer.add(name, seconds - nested)
        if timer.open_stages:
            timer.open_stages[-1] += seconds
        if log:
            logger.info("%s: %.2f s", name, seconds)


def set_output_dir(directory: Path) -> None:
    """The run's timings.json goes to `directory` (the run directory, or the own-images output folder)."""
    timer = _current.get()
    if timer is not None:
        timer.output_dir = Path(directory)


def report(timer: StageTimer) -> None:
    """Log the summary table, and write timings.json into the run's output folder if it has one."""
    logger.info("time per stage:\n%s", timer.table())
    if timer.output_dir is not None and timer.output_dir.is_dir():
        save_json(timer.output_dir / "timings.json", timer.as_dict())
        logger.info("timings written to %s", timer.output_dir / "timings.json")
