"""Repeated work keeps the process's memory flat (a memory bound, not a timing), each in a fresh process
(tests/memory_driver.py). torch.sparse.mm of CSR tensors leaks on CPU: with RECO_SPARSE_PRODUCT=sparse_mm the
CRF check grew by 139 MB (3.9 MB per call) and own images by 315 MB over 27 more photos (N=30)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).resolve().parent / "memory_driver.py"


def measure(work: str, n: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RECO_SPARSE_PRODUCT", None)  # the default products
    done = subprocess.run([sys.executable, str(DRIVER), work, str(n)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_crf_calls_keep_memory_flat():
    result = measure("crf", 40)
    growth = result["rss_mb_after_all"] - result["rss_mb_after_tenth"]
    assert growth < 20, f"40 CRF calls hold {growth:.1f} MB more than 4 ({result})"


@pytest.mark.slow
def test_own_images_over_many_photos_keep_memory_flat():
    result = measure("own_images", 20)
    growth = result["rss_mb_after_all"] - result["rss_mb_after_tenth"]
    assert growth < 40, f"own images over 20 photos hold {growth:.1f} MB more than over 2 ({result})"
