"""Index build throughput: the full build path (JPEG decode + SPEC 2 resize in DataLoader workers, uint8
to the device, normalisation and model there, shard writing) vs the model's forward alone on the same
batch shape, in images/s, on any device.

Writes --n-images synthetic ImageNet-sized JPEGs (about 400 x 350, like ImageNet's average), then
  1. model only: the CLIP image tower on a random (B, 3, S, S) batch already on the device, for each
     precision (CUDA: fp16 and bf16 weights with autocast; CPU: fp32),
  2. full build: image_index.build.build_index over the JPEGs (DataLoader with --num-workers, pinned
     memory) in the first precision,
and prints both rates, their ratio (target on a GPU: >= 85% of the model-only rate) and the time the
full ImageNet-train (1,281,167 images) would take at the measured rate (target: <= 25 min on one H100).

    python benchmarks/index_build.py                                    # CPU: tiny CLIP, random weights
    python benchmarks/index_build.py --arch ViT-L/14@336px --n-images 8192 --batch-size 256 \
        --num-workers 15                                                # GPU, the real index model
(--weights random, the default, builds the architecture with random weights: same speed, no file needed.)
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.synthetic_jpegs import write_jpegs  # noqa: E402
from datasets.imagenet import IndexBuildDataset, clip_normalise, list_imagenet_images  # noqa: E402
from image_index.build import build_index  # noqa: E402
from networks import build_clip, clip_image_size  # noqa: E402
from utils.device import resolve_device, setup_logging  # noqa: E402

IMAGENET_TRAIN = 1_281_167
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def low_precision_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The model with its float16 tensors (open_clip's low-precision layers) cast to `dtype`."""
    other = copy.deepcopy(model)
    for tensor in list(other.parameters()) + list(other.buffers()):
        if tensor.dtype == torch.float16:
            tensor.data = tensor.data.to(dtype)
    return other


def model_only_rate(model: torch.nn.Module, dtype: torch.dtype, batch_size: int, size: int,
                    device: torch.device, seconds: float) -> float:
    images = torch.randn(batch_size, 3, size, size, device=device)
    cuda = device.type == "cuda"
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=cuda and dtype != torch.float32):
        for _ in range(2):
            model.encode_image(images)
        synchronize(device)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds or n < 2:
            model.encode_image(images)
            n += 1
        synchronize(device)
    return n * batch_size / (time.perf_counter() - start)


def measure(arch: str = "tiny-vit-clip", weights: str = "random", device: str = "auto", n_images: int = 1024,
            batch_size: int = 64, num_workers: int = 2, shard_size: int = 2048, model_seconds: float = 10.0,
            precisions: tuple[str, ...] = (), workdir: Optional[Path] = None) -> dict[str, Any]:
    """Model-only rate per precision and the full build's rate (first precision); a dict of results."""
    logger = setup_logging()
    device = resolve_device(device)
    cuda = device.type == "cuda"
    precisions = precisions or (("fp16", "bf16") if cuda else ("fp32",))
    torch.manual_seed(0)
    base, _ = build_clip(arch, weights, device=device, precision="fp16" if cuda else "fp32")
    size = clip_image_size(base)
    models = {p: base if p in ("fp16", "fp32") else low_precision_copy(base, DTYPES[p]) for p in precisions}
    result: dict[str, Any] = {"arch": arch, "device": str(device), "image_size": size, "batch_size": batch_size,
                              "num_workers": num_workers, "n_images": n_images, "build_precision": precisions[0],
                              "gpu": torch.cuda.get_device_name(device) if cuda else None}
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="index_build_"))
    try:
        t = time.perf_counter()
        if not (work / "train").is_dir():
            write_jpegs(work, n_images)
        paths = list_imagenet_images(work, "train")[:n_images]
        logger.info("%d JPEGs ready in %.1f s; %s at %d px on %s", len(paths), time.perf_counter() - t, arch,
                    size, device)
        for precision, model in models.items():
            result[f"model_only_{precision}"] = model_only_rate(model, DTYPES[precision], batch_size, size, device,
                                                                model_seconds)
        model, dtype = models[precisions[0]], DTYPES[precisions[0]]
        stamps = []

        def embed(images: torch.Tensor) -> torch.Tensor:  # as entry/reco_index.py, timed
            out = F.normalize(model.encode_image(clip_normalise(images.to(device, non_blocking=True))).float(), dim=-1)
            stamps.append((time.perf_counter(), len(images)))
            return out

        out_dir = work / "index" / "bench"
        shutil.rmtree(out_dir, ignore_errors=True)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        build_index(paths, embed, out_dir, {"clip_arch": arch, "split": "train", "image_size": size},
                    make_dataset=lambda p: IndexBuildDataset(p, size, normalise=False), batch_size=batch_size,
                    num_workers=num_workers, shard_size=shard_size, device=device, logger=logger, progress=False,
                    autocast_dtype=dtype if dtype != torch.float32 else torch.float16)
        synchronize(device)
        total = time.perf_counter() - t
        # Steady state: from the end of the first batch to the end of the last (no worker start-up, no merge).
        steady = (sum(n for _, n in stamps[1:]) / (stamps[-1][0] - stamps[0][0]) if len(stamps) > 2
                  else len(paths) / total)
        result.update(full_build_total=len(paths) / total, full_build_steady=steady,
                      full_over_model=steady / result[f"model_only_{precisions[0]}"],
                      imagenet_train_minutes=IMAGENET_TRAIN / steady / 60,
                      peak_gpu_mib=torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None)
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny-vit-clip")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=2048)
    parser.add_argument("--model-seconds", type=float, default=10.0)
    parser.add_argument("--precisions", nargs="+", choices=list(DTYPES), default=None,
                        help="model-only precisions; the first is used for the full build (CUDA: fp16 bf16)")
    parser.add_argument("--workdir", default=None, help="where to write the JPEGs (default: a temporary dir)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    r = measure(args.arch, args.weights, args.device, args.n_images, args.batch_size, args.num_workers,
                args.shard_size, args.model_seconds, tuple(args.precisions or ()),
                Path(args.workdir) if args.workdir else None)
    print(f"\n== index build, {r['arch']} at {r['image_size']}px, batch {r['batch_size']}, {r['num_workers']} workers, "
          f"{r['device']} {r['gpu'] or ''} ({torch.get_num_threads()} threads) ==")
    for key in (k for k in r if k.startswith("model_only_")):
        print(f"model forward only, {key[len('model_only_'):]:<5}: {r[key]:9.1f} images/s")
    print(f"full build (steady), {r['build_precision']:<5}: {r['full_build_steady']:9.1f} images/s = "
          f"{r['full_over_model']:.0%} of the model-only rate")
    print(f"full build (total)       : {r['full_build_total']:9.1f} images/s (incl. worker start-up and the merge)")
    print(f"ImageNet-train at the steady rate: {r['imagenet_train_minutes']:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
