"""The pydensecrf backend of utils.crf: the C++ library, one image per task, in a persistent process pool;
and the paper's CRF parameters, which the torch backend in utils.crf shares (imported from here)."""
from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.pool
import os
import threading
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

MAX_ITER = 10
POS_W, POS_XY_STD = 3.0, 1.0
BI_W, BI_XY_STD, BI_RGB_STD = 4.0, 67.0, 3.0
UNARY_CLIP = 1e-5


def _pydensecrf_one(bgr: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One image: BGR uint8 (H, W, 3), softmax probabilities (C, H, W) float32 -> Q (C, H, W)."""
    import pydensecrf.densecrf as dcrf  # imported lazily: optional at import time of this module

    c, h, w = probs.shape
    unary = np.ascontiguousarray(-np.log(np.clip(probs, UNARY_CLIP, 1.0)).reshape(c, -1).astype(np.float32))
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=POS_XY_STD, compat=POS_W)
    crf.addPairwiseBilateral(sxy=BI_XY_STD, srgb=BI_RGB_STD, rgbim=bgr, compat=BI_W)
    return np.array(crf.inference(MAX_ITER), dtype=np.float32).reshape(c, h, w)


def _pydensecrf_task(args: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return _pydensecrf_one(*args)


_POOLS: dict[int, multiprocessing.pool.Pool] = {}
_POOLS_LOCK = threading.Lock()  # threads of one process (the web demo's requests) create a pool once


def _get_pool(n_workers: int) -> multiprocessing.pool.Pool:
    """A persistent worker pool (reused across calls; closed at exit or by shutdown_crf_pools)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(n_workers)
        if pool is None:
            # fork: workers only run NumPy + pydensecrf (never torch), and need no re-import of __main__.
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            pool = _POOLS[n_workers] = ctx.Pool(n_workers)
        return pool


def shutdown_crf_pools() -> None:
    """Terminate the persistent pydensecrf worker pools."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.terminate()
        pool.join()


atexit.register(shutdown_crf_pools)


def _crf_pydensecrf(images: Union[np.ndarray, Tensor], probs: Tensor, n_workers: Optional[int],
                    chunk_size: Optional[int] = None) -> Tensor:
    """The pydensecrf backend: n_workers processes (None -> all cores, <= 1 -> in this process)."""
    images = images.cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
    probs_np = probs.cpu().numpy()
    tasks = list(zip(bgr, probs_np))
    n_workers = (os.cpu_count() or 1) if n_workers is None else int(n_workers)
    if n_workers <= 1 or len(tasks) == 1:
        out = [_pydensecrf_task(t) for t in tasks]
    else:
        out = _get_pool(n_workers).map(_pydensecrf_task, tasks, chunksize=1)
    return torch.from_numpy(np.stack(out)).to(probs.device)
