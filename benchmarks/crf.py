"""Time the dense CRF backends against pydensecrf in one process, on real photos.

    python benchmarks/crf.py                      # all sizes, 3 repeats
    python benchmarks/crf.py --quick              # 1 repeat, 2 images, the 27-class size only
    python benchmarks/crf.py --sizes 320x320x27 375x1242x19 --repeats 5
    python benchmarks/crf.py --products           # the torch port's ways of multiplying the lattice factors

Methods: pydensecrf in this process (the baseline), pydensecrf on a pool of all cores, the torch
port on CPU (one image at a time) and, when a GPU is present, the torch port on CUDA with the whole
batch in one lattice (plus its peak GPU memory). Inputs are scikit-image's bundled photos with
ReCo-like scores (log_softmax of smooth [0, 1] fields). Times are seconds per image, median and best
of the repeats after one untimed warm-up (which also builds the cached Gaussian kernel of each size).

--products compares, on CPU, the ways utils/sparse_ops.py can multiply the lattice factors
(RECO_SPARSE_PRODUCT): "sparse_mm" (torch.sparse.mm, what the port used before; it leaks memory on
CPU), "scipy" (the default on CPU) and "none" (factors kept). Per mode: seconds per image at a size
seen before (the Gaussian kernel cached) and at a new size (the kernel built again each call, as for
photos of different sizes), the ratio against sparse_mm, and the resident memory each call keeps.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.crf import dense_crf_batch, shutdown_crf_pools  # noqa: E402

SIZES = {"320x320x27": (320, 320, 27), "320x320x171": (320, 320, 171), "375x1242x19": (375, 1242, 19)}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def photos(n: int, height: int, width: int) -> np.ndarray:
    """n bundled RGB photos resized to (height, width), uint8 (n, H, W, 3)."""
    import skimage.data
    import skimage.transform

    out = []
    for i in range(n):
        img = getattr(skimage.data, PHOTOS[i % len(PHOTOS)])()[..., :3]
        img = skimage.transform.resize(img, (height, width), anti_aliasing=True, preserve_range=True)
        out.append(img.round().astype(np.uint8))
    return np.stack(out)


def reco_like_logits(n: int, n_classes: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, n_classes, max(height // 16, 2), max(width // 16, 2), generator=g)
    scores = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return torch.log_softmax(scores, dim=1)


def timed(fn, repeats: int, cuda: bool = False) -> tuple[tuple[float, float], torch.Tensor]:
    """(median, best) wall time of fn() over repeats after one warm-up, and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return (statistics.median(times), min(times)), result


def run_size(name: str, n_images: int, repeats: int, batch: int) -> list[tuple]:
    h, w, c = SIZES[name]
    images = photos(n_images, h, w)
    logits = reco_like_logits(n_images, c, h, w)
    cores = os.cpu_count() or 1
    rows = []

    def add(method: str, times: tuple[float, float], q: torch.Tensor, peak=None) -> None:
        rows.append((name, method, times[0] / n_images, times[1] / n_images, peak, q))

    t, q_ref = timed(lambda: dense_crf_batch(images, logits, backend="pydensecrf", n_workers=1), repeats)
    add("pydensecrf, 1 process", t, q_ref)
    t, q = timed(lambda: dense_crf_batch(images, logits, backend="pydensecrf", n_workers=cores), repeats)
    add(f"pydensecrf, pool of {cores}", t, q)
    threads = torch.get_num_threads()
    t, q = timed(lambda: dense_crf_batch(images, logits, backend="torch"), repeats)
    add(f"torch CPU ({threads} threads)", t, q)
    if threads > 1:  # also single-threaded: robust when other processes compete for the cores
        torch.set_num_threads(1)
        try:
            t, q = timed(lambda: dense_crf_batch(images, logits, backend="torch"), repeats)
        finally:
            torch.set_num_threads(threads)
        add("torch CPU (1 thread)", t, q)
    if torch.cuda.is_available():
        gpu_images, gpu_logits = torch.from_numpy(images).cuda(), logits.cuda()
        batch = min(batch, n_images)

        def on_gpu():
            return dense_crf_batch(gpu_images, gpu_logits, backend="torch", chunk_size=batch)

        on_gpu()
        torch.cuda.reset_peak_memory_stats()
        t, q = timed(on_gpu, repeats, cuda=True)
        add(f"torch CUDA, batch {batch}", t, q.cpu(), torch.cuda.max_memory_allocated() / 2**20)
    ref_median, ref_best = rows[0][2], rows[0][3]
    return [(size, method, median, best, ref_median / median, ref_best / best, peak, agreement(q_ref, q))
            for size, method, median, best, peak, q in rows]


def agreement(q_ref: torch.Tensor, q: torch.Tensor) -> str:
    equal = (q_ref.argmax(1) == q.argmax(1)).float().mean().item()
    return f"{100 * equal:.3f}% / {(q_ref - q).abs().max().item():.1e}"


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def product_modes(name: str, n_images: int, repeats: int) -> list[tuple]:
    """Per sparse product mode: (size, mode, s/img cached kernel, s/img new size, MB kept per call)."""
    import gc

    from utils import crf as crf_module, sparse_ops

    h, w, c = SIZES[name]
    images, logits = photos(n_images, h, w), reco_like_logits(n_images, c, h, w)
    rows = []
    try:
        for mode in ("sparse_mm", "scipy", "none"):
            sparse_ops.set_product_mode(mode)
            crf_module._gaussian_operator.cache_clear()
            dense_crf_batch(images, logits, backend="torch")  # warm-up: the kernel and the work buffers
            gc.collect()
            before = rss_mib()
            for _ in range(max(repeats, 4)):
                dense_crf_batch(images, logits, backend="torch")
            gc.collect()
            kept = (rss_mib() - before) / (max(repeats, 4) * n_images)
            cached, _ = timed(lambda: dense_crf_batch(images, logits, backend="torch"), repeats)

            def new_size():
                crf_module._gaussian_operator.cache_clear()
                return dense_crf_batch(images, logits, backend="torch")

            fresh, _ = timed(new_size, repeats)
            rows.append((name, mode, cached[1] / n_images, fresh[1] / n_images, kept))
    finally:
        sparse_ops.set_product_mode(None)
        crf_module._gaussian_operator.cache_clear()
    return rows


def print_products(sizes: list[str], n_images: int, repeats: int) -> None:
    header = (f"{'size':<13} {'products':<10} {'s/img cached':>12} {'x today':>8} {'s/img new size':>14} "
              f"{'x today':>8} {'MB kept/img':>11}")
    print(header)
    print("-" * len(header))
    for name in sizes:
        rows = product_modes(name, n_images, repeats)
        today = rows[0]
        for size, mode, cached, fresh, kept in rows:
            print(f"{size:<13} {mode:<10} {cached:12.3f} {today[2] / cached:7.2f}x {fresh:14.3f} "
                  f"{today[3] / fresh:7.2f}x {kept:11.2f}", flush=True)
    print("x today = sparse_mm (torch.sparse.mm, the product before) seconds / mode seconds, best of the repeats; "
          "MB kept/img = resident memory not returned per image after gc.collect()")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=4, help="images per size (one batch)")
    parser.add_argument("--batch", type=int, default=8, help="images per lattice on CUDA")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 images, 320x320x27 unless --sizes")
    parser.add_argument("--products", action="store_true", help="compare the sparse product modes on CPU")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.images = 1, 2
        if "--sizes" not in (argv if argv is not None else sys.argv[1:]):
            args.sizes = ["320x320x27"]
    if args.products:
        print(f"CPU cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}; {args.images} images per "
              f"size, best of {args.repeats}")
        print_products(args.sizes, args.images, args.repeats)
        return
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"CPU cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, {device}; "
          f"{args.images} images per size, median of {args.repeats}")
    header = (f"{'size':<13} {'method':<26} {'s/img med':>9} {'s/img min':>9} {'x med':>6} {'x min':>6} "
              f"{'GPU MiB':>8}  labels equal / max|dQ| vs pydensecrf")
    print(header)
    print("-" * len(header))
    try:
        for name in args.sizes:
            for size, method, med, best, x_med, x_best, peak, agree in run_size(name, args.images, args.repeats,
                                                                                args.batch):
                peak_s = f"{peak:8.0f}" if peak is not None else f"{'':8}"
                print(f"{size:<13} {method:<26} {med:9.3f} {best:9.3f} {x_med:5.2f}x {x_best:5.2f}x {peak_s}  {agree}",
                      flush=True)
    finally:
        shutdown_crf_pools()
    print("x = speed-up: pydensecrf (1 process) seconds per image / method seconds per image "
          "(median and best of the repeats; the best is the one to trust on a shared machine)")


if __name__ == "__main__":
    main()
