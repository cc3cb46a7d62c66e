"""Index build throughput: the full build path (JPEG decode + SPEC 2 resize + model + shard writing)
vs the model's forward alone on the same batch shape, in images/s, on any device.

Writes --n-images synthetic ImageNet-sized JPEGs (about 400 x 350, like ImageNet's average), then
  1. model only: embed_fn on a random (B, 3, S, S) batch already on the device (fp16 autocast on CUDA),
  2. full build: image_index.build.build_index over the JPEGs (DataLoader with --num-workers, pinned memory),
and prints both rates and their ratio (target on a GPU: >= 85% of the model-only rate).

    python benchmarks/index_build.py                                    # CPU: tiny CLIP, random weights
    python benchmarks/index_build.py --arch ViT-L/14@336px --weights ViT-L-14-336px.pt \
        --n-images 8192 --batch-size 256 --num-workers 16               # GPU, the real index model
(--weights random builds the real architecture with random weights: same speed, no file needed.)
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datasets.imagenet import IndexBuildDataset, list_imagenet_images  # noqa: E402
from networks import build_clip, clip_image_size  # noqa: E402
from image_index.build import build_index  # noqa: E402
from utils.device import resolve_device, setup_logging  # noqa: E402


def write_jpegs(root: Path, n: int, seed: int = 0) -> None:
    """n JPEGs (quality 90) of ImageNet-like sizes with smooth random content, 100 per class folder."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        width, height = int(rng.integers(300, 500)), int(rng.integers(250, 450))
        small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        noise = rng.integers(-12, 13, (height, width, 3))
        image = Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8))
        wnid = f"n{i // 100:08d}"
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
        image.save(root / "train" / wnid / f"{wnid}_{i}.JPEG", quality=90)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only_rate(embed_fn, batch_size: int, size: int, device: torch.device, seconds: float) -> float:
    images = torch.randn(batch_size, 3, size, size, device=device)
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.float16) if cuda else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast:
        for _ in range(3):
            embed_fn(images)
        synchronize(device)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds or n < 3:
            embed_fn(images)
            n += 1
        synchronize(device)
    return n * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny-vit-clip")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=2048)
    parser.add_argument("--model-seconds", type=float, default=10.0)
    parser.add_argument("--workdir", default=None, help="where to write the JPEGs (default: a temporary dir)")
    args = parser.parse_args()
    logger = setup_logging()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    precision = "fp16" if device.type == "cuda" else "fp32"
    model, _ = build_clip(args.arch, args.weights, device=device, precision=precision)
    size = clip_image_size(model)

    def embed_fn(images: torch.Tensor) -> torch.Tensor:
        return F.normalize(model.encode_image(images), dim=-1)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="index_build_"))
    try:
        t = time.perf_counter()
        if not (work / "train").is_dir():
            write_jpegs(work, args.n_images)
        paths = list_imagenet_images(work, "train")[: args.n_images]
        logger.info("%d JPEGs ready in %.1f s; %s at %d px on %s", len(paths), time.perf_counter() - t, args.arch,
                    size, device)

        model_rate = model_only_rate(embed_fn, args.batch_size, size, device, args.model_seconds)
        stamps = []

        def timed_embed(images: torch.Tensor) -> torch.Tensor:
            out = embed_fn(images)
            stamps.append((time.perf_counter(), len(images)))
            return out

        out_dir = work / "index" / "bench"
        shutil.rmtree(out_dir, ignore_errors=True)
        t = time.perf_counter()
        build_index(paths, timed_embed, out_dir, {"clip_arch": args.arch, "split": "train", "image_size": size},
                    make_dataset=lambda p: IndexBuildDataset(p, size), batch_size=args.batch_size,
                    num_workers=args.num_workers, shard_size=args.shard_size, device=device, logger=logger)
        synchronize(device)
        total = time.perf_counter() - t
        full_rate = len(paths) / total
        # Steady state: from the end of the first batch to the end of the last (no worker start-up, no merge).
        steady = sum(n for _, n in stamps[1:]) / (stamps[-1][0] - stamps[0][0]) if len(stamps) > 2 else full_rate
        print(f"\n== index build, {args.arch} at {size}px, batch {args.batch_size}, {args.num_workers} workers, "
              f"{device} ({torch.get_num_threads()} threads) ==")
        print(f"model forward only : {model_rate:9.1f} images/s")
        print(f"full build (steady): {steady:9.1f} images/s = {steady / model_rate:.0%} of the model-only rate")
        print(f"full build (total) : {full_rate:9.1f} images/s = {full_rate / model_rate:.0%} "
              f"({len(paths)} images in {total:.1f} s, incl. worker start-up and the merge)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
