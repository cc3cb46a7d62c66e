"""Synthetic ImageNet-like JPEGs for the benchmarks (numpy and PIL only, so that the processes writing
them in parallel start fast)."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image


def _write_one(task: tuple[Path, int]) -> None:
    root, i = task
    rng = np.random.default_rng(i)
    width, height = int(rng.integers(300, 500)), int(rng.integers(250, 450))
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    noise = rng.integers(-12, 13, (height, width, 3))
    image = Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8))
    wnid = f"n{i // 100:08d}"
    image.save(root / "train" / wnid / f"{wnid}_{i}.JPEG", quality=90)


def write_jpegs(root: Path, n: int, processes: Optional[int] = None) -> None:
    """n JPEGs (quality 90) of ImageNet-like sizes (about 400 x 350) with smooth random content, in
    `{root}/train/<wnid>/<wnid>_<i>.JPEG`, 100 per folder; image i is the same whatever `processes`."""
    root = Path(root)
    for folder in range(-(-n // 100)):
        (root / "train" / f"n{folder:08d}").mkdir(parents=True, exist_ok=True)
    tasks = [(root, i) for i in range(n)]
    processes = min(processes or os.cpu_count() or 1, max(1, n // 64))
    if processes <= 1:
        for task in tasks:
            _write_one(task)
        return
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_write_one, tasks, chunksize=32)
