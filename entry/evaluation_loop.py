"""What the benchmark and open-vocabulary evaluations share: batches that skip unreadable images, and the
files a finished evaluation writes (results.json, results_crf.json, skipped_images.txt)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datasets.benchmarks import collate, size_grouped_batches
from utils import distributed, timing
from utils.device import effective_workers
from utils.io import atomic_write, save_json
from utils.metrics import RunningScore
from utils.progress import FirstFewWarnings

logger = logging.getLogger("reco")


class SkipUnreadable(Dataset):
    """Wraps a benchmark so an unreadable image becomes a counted, logged skip instead of a crash."""

    def __init__(self, dataset: Dataset, fatal: tuple[type[Exception], ...] = ()) -> None:
        self.dataset = dataset
        self.fatal = fatal  # errors that stop the run instead (a dataset broken as a whole)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except self.fatal:
            raise
        except (OSError, ValueError) as e:
            return {"error": f"{self.dataset.image_paths[index]}: {e}"}


def collate_readable(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The readable items collated ("image" None when there are none); "errors" lists the others."""
    good = [item for item in items if "error" not in item]
    batch = collate(good) if good else {"image": None}
    batch["errors"] = [item["error"] for item in items if "error" in item]
    return batch


def readable_batches(dataset: Dataset, *, batch_size: int, n_workers: int, device: torch.device, desc: str,
                     skipped: list[str], fatal: tuple[type[Exception], ...] = (),
                     shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[int, dict]]:
    """(batch number, batch) of every batch with a readable image, images of one size per batch.

    Unreadable images are logged and appended to `skipped`; the batch number counts every batch, so it
    does not depend on which images could be read. Waiting for a batch is the 'data loading' stage.
    `shard` (rank, world_size): only this rank's contiguous block of the batches (distributed.shard_range),
    numbered as in one process; each image is in the same batch as in one process, so its prediction is too.
    """
    batches = size_grouped_batches(dataset.image_sizes(unreadable=(0, 0)), batch_size)
    block = distributed.shard_range(len(batches), *shard)
    loader = DataLoader(SkipUnreadable(dataset, fatal), num_workers=effective_workers(n_workers, device), pin_memory=device.type == "cuda",
                        collate_fn=collate_readable, batch_sampler=batches[block.start:block.stop])
    iterator = iter(tqdm(loader, desc=desc, unit="batch", disable=shard[0] != 0))
    skip_warnings = FirstFewWarnings(logger, listed_in="skipped_images.txt")
    i = block.start
    while True:
        with timing.stage("data loading"):
            batch = next(iterator, None)
        if batch is None:
            return
        skipped += batch["errors"]
        for error in batch["errors"]:
            skip_warnings.warn("skipped unreadable image %s", error)
        if batch["image"] is not None:
            yield i, batch
        i += 1


def combine_ranks(scores: Sequence[RunningScore], skipped: list[str]) -> list[str]:
    """Under torchrun: every rank's confusion matrices summed into `scores` (in place) and the skipped
    images of all ranks in one process's order (the ranks hold consecutive blocks of batches)."""
    for score in scores:
        distributed.all_reduce_sum_(score.confusion)
    return distributed.gather_lists(skipped)


def write_scores(run_dir: Path, results: dict[str, Any], results_crf: dict[str, Any], skipped: list[str]) -> None:
    """results.json, results_crf.json and, when images were skipped, skipped_images.txt in run_dir."""
    with timing.stage("writing"):
        save_json(run_dir / "results.json", results)
        save_json(run_dir / "results_crf.json", results_crf)
    if skipped:
        with atomic_write(run_dir / "skipped_images.txt", "w") as f:
            f.write("\n".join(skipped) + "\n")
        logger.warning("%d unreadable images skipped, listed in %s", len(skipped), run_dir / "skipped_images.txt")
