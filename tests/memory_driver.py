"""Resident memory of repeated work, measured in a fresh process (tests/test_memory_flat.py runs it).

    python tests/memory_driver.py crf N          N torch-CRF calls on a 90 x 120 photo, 3 classes
    python tests/memory_driver.py own_images N   own images (colour-coded models) over N/10 photos, then N

Prints one JSON line: the resident memory in MB after the first N/10 units of work and after all N.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def textured_photo(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (H, W, 3): smooth colour fields plus pixel noise, so the bilateral lattice is large, as for a
    real photo (a flat synthetic scene would need few vertices and hide a per-vertex leak)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    smooth = np.kron(coarse, np.ones((8, 8, 1), np.float32))[:height, :width]
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def crf_calls(n: int) -> tuple[float, float]:
    import torch

    from utils.crf import dense_crf

    image = textured_photo(90, 120, seed=0)
    logits = torch.log_softmax(torch.randn(3, 90, 120, generator=torch.Generator().manual_seed(0)), dim=0)
    dense_crf(image, logits, backend="torch")  # the cached Gaussian kernel and lazily built state
    for _ in range(n // 10 - 1):
        dense_crf(image, logits, backend="torch")
    after_tenth = rss_mb()
    for _ in range(n - n // 10):
        dense_crf(image, logits, backend="torch")
    return after_tenth, rss_mb()


def own_images(n: int) -> tuple[float, float]:
    """Own images with the demo's colour-coded models, CRF on: a folder of n/10 photos, then one of n
    (sizes vary, so new Gaussian kernels are built too)."""
    import yaml
    from PIL import Image

    from demo.registry import colour_model_entries
    from demo.world import SCENE_CLASSES, colour_world, write_imagenet
    from entry.reco_demo import demo_config
    from entry.reco_index import run_index_stage
    from entry.reco_own_images import run_own_images
    from utils.config import load_reco_config

    with tempfile.TemporaryDirectory(prefix="memory_driver_") as tmp:
        root = Path(tmp)
        config_path = root / "config.yaml"
        config_path.write_text(yaml.safe_dump(demo_config(root)))
        config = load_reco_config(config_path)
        vocabulary, colours = colour_world(list(config.context_categories) + list(SCENE_CLASSES))
        write_imagenet(root / "world" / "ImageNet2012", "train", [f"n{20000000 + i}" for i in range(len(colours))],
                       n_per_class=3, colours=colours)
        for count in (n // 10, n):
            folder = root / f"photos{count}"
            folder.mkdir()
            for i in range(count):
                h, w = 80 + 4 * (i % 5), 112 + 4 * (i % 3)
                Image.fromarray(textured_photo(h, w, seed=i)).save(folder / f"photo{i:03d}.png")
        marks = []
        with colour_model_entries(vocabulary, colours):
            run_index_stage(config)
            for count in (n // 10, n):
                run_own_images(config, str(root / f"photos{count}"), ",".join(SCENE_CLASSES), str(root / f"out{count}"))
                marks.append(rss_mb())
    return marks[0], marks[1]


def main(argv: list[str]) -> int:
    what, n = argv[0], int(argv[1])
    if n < 10:
        raise ValueError(f"N must be at least 10, got {n}")
    first, last = {"crf": crf_calls, "own_images": own_images}[what](n)
    print(json.dumps({"work": what, "n": n, "rss_mb_after_tenth": first, "rss_mb_after_all": last}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
