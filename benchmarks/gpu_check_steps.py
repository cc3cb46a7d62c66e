"""The measuring parts of benchmarks/gpu_check.py; each runs in its own process and returns a dict.

Every part takes `dry`: True swaps in tiny sizes and the CPU, so that the whole check runs in a test
(tests/test_gpu_check.py) and cannot rot. Sizes of the real run are chosen to fit the 8.5-minute budget on
one H100/H200.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name -> (H, W, C); the dry run keeps the names and shrinks the images
CRF_SIZES = {"320x320x27": (320, 320, 27), "320x320x171": (320, 320, 171), "375x1242x19": (375, 1242, 19)}
CRF_FLAT_MIB = 16.0  # growth from call 10 to call 100 below which a CRF product counts as not leaking
CRF_SIZES_DRY = {"320x320x27": (24, 24, 27), "320x320x171": (20, 24, 171), "375x1242x19": (15, 50, 19)}


def _device(dry: bool) -> torch.device:
    if dry:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available (torch.cuda.is_available() is False)")
    return torch.device("cuda")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def crf(dry: bool) -> dict[str, Any]:
    """Torch CRF batched on the GPU vs pydensecrf (process pool) on the same photos: ms/img, peak GPU
    memory per image, labels equal to pydensecrf's."""
    from benchmarks.crf import photos, reco_like_logits
    from utils.crf import dense_crf_batch, shutdown_crf_pools

    device = _device(dry)
    n_images, repeats = (2, 1) if dry else (8, 3)
    pool = min(n_images, os.cpu_count() or 1)
    sizes = {}
    try:
        for name, (h, w, c) in (CRF_SIZES_DRY if dry else CRF_SIZES).items():
            images, logits = photos(n_images, h, w), reco_like_logits(n_images, c, h, w)
            start = time.perf_counter()
            reference = dense_crf_batch(images, logits, backend="pydensecrf", n_workers=pool)
            pydensecrf_ms = 1000 * (time.perf_counter() - start) / n_images
            gpu_images, gpu_logits = torch.from_numpy(images).to(device), logits.to(device)

            def run() -> torch.Tensor:
                return dense_crf_batch(gpu_images, gpu_logits, backend="torch", chunk_size=n_images)

            run()  # warm-up: builds the cached Gaussian kernel of this size
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            times, q = [], None
            for _ in range(repeats):
                del q  # the previous result must not count in the peak memory
                _sync(device)
                start = time.perf_counter()
                q = run()
                _sync(device)
                times.append(time.perf_counter() - start)
            peak = ((torch.cuda.max_memory_allocated(device) - base) / n_images / 2**20
                    if device.type == "cuda" else None)
            q = q.cpu()
            sizes[name] = {"shape": [h, w, c], "images": n_images, "torch_ms_per_image":
                           1000 * statistics.median(times) / n_images, "pydensecrf_ms_per_image": pydensecrf_ms,
                           "pydensecrf_processes": pool, "peak_mib_per_image": peak,
                           "labels_equal": float((q.argmax(1) == reference.argmax(1)).float().mean()),
                           "max_abs_dq": float((q - reference).abs().max())}
    finally:
        shutdown_crf_pools()
    return {"device": str(device), "sizes": sizes}


def crf_memory(dry: bool) -> dict[str, Any]:
    """Device memory after 100 torch-CRF calls against after 10, for each way of multiplying the lattice
    factors (utils/sparse_ops.py PRODUCT_MODES), with ms per call: which product keeps memory flat on this
    device, and what each costs. On a CPU (the dry run) the memory is the process's resident set."""
    import gc

    from benchmarks.crf import photos, reco_like_logits
    from utils import crf as crf_module, sparse_ops

    device = _device(dry)
    h, w, c = (24, 32, 5) if dry else (240, 320, 19)
    image = torch.from_numpy(photos(1, h, w)).to(device)
    logits = reco_like_logits(1, c, h, w).to(device)

    def memory_mib() -> float:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()  # what the caching allocator holds for reuse is not growth
            free, total = torch.cuda.mem_get_info(device)
            return (total - free) / 2**20
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    modes = {}
    try:
        for mode in sparse_ops.PRODUCT_MODES:
            sparse_ops.set_product_mode(mode)
            crf_module._gaussian_operator.cache_clear()  # built again under this mode
            marks, start = {}, time.perf_counter()
            for call in range(1, 101):
                crf_module.dense_crf_batch(image, logits, backend="torch")
                if call in (10, 100):
                    marks[call] = memory_mib()
                if call == 10:
                    start = time.perf_counter()
            _sync(device)
            growth = marks[100] - marks[10]
            modes[mode] = {"mib_after_10": marks[10], "mib_after_100": marks[100], "growth_mib": growth,
                           "mib_per_call": growth / 90, "ms_per_call": 1000 * (time.perf_counter() - start) / 90,
                           "flat": growth < CRF_FLAT_MIB}
    finally:
        sparse_ops.set_product_mode(None)
        crf_module._gaussian_operator.cache_clear()
    return {"device": str(device), "shape": [h, w, c], "default": sparse_ops.product_mode(device), "modes": modes}


def index_build(dry: bool) -> dict[str, Any]:
    """ViT-L/14@336px at random weights: model-only images/s in fp16 and bf16, full build images/s; and
    whether torchvision's JPEG decoder on the device gives PIL's pixels (the build decodes with PIL)."""
    from benchmarks.index_build import measure

    device = _device(dry)
    with tempfile.TemporaryDirectory(prefix="gpu_check_index_") as tmp:
        if dry:
            result = measure("tiny-vit-clip", "random", "cpu", n_images=128, batch_size=16, num_workers=1,
                             shard_size=64, model_seconds=0.2, workdir=Path(tmp))
        else:
            result = measure("ViT-L/14@336px", "random", "cuda", n_images=6144, batch_size=256,
                             num_workers=max(1, (os.cpu_count() or 2) - 1), shard_size=2048, model_seconds=8.0,
                             precisions=("fp16", "bf16"), workdir=Path(tmp))
        result["jpeg_decode_vs_pil"] = _jpeg_decode_vs_pil(sorted(Path(tmp).glob("train/*/*.JPEG"))[:32], device)
    return result


def _jpeg_decode_vs_pil(paths: list[Path], device: torch.device) -> dict[str, Any]:
    """torchvision.io.decode_jpeg on `device` against PIL's decoding of the same files: the fraction of
    equal bytes and the largest difference (the build could decode on the GPU only if all are equal)."""
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    equal = total = largest = 0
    try:
        for path in paths:
            decoded = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB, device=device).cpu()
            with Image.open(path) as image:
                reference = torch.from_numpy(np.asarray(image.convert("RGB"))).permute(2, 0, 1)
            difference = (decoded.int() - reference.int()).abs()
            equal += int((difference == 0).sum())
            total += difference.numel()
            largest = max(largest, int(difference.max()))
    except (RuntimeError, ValueError) as error:  # informative only: no decoder on this device is no failure
        return {"device": str(device), "error": f"{type(error).__name__}: {error}"}
    return {"device": str(device), "images": len(paths), "equal_fraction": equal / max(total, 1),
            "max_abs_difference": largest}


def reco_plus_train(dry: bool) -> dict[str, Any]:
    """ReCo+ training iterations/s: the trainer's step (segmentor, Adam groups, fp16 autocast + GradScaler,
    cross-entropy) on random batches already on the device; DeepLabv3+ ResNet-101 at random init."""
    from networks.deeplab import build_segmentor
    from reco_plus.schedule import build_optimizer

    device = _device(dry)
    name, crop, batch, warm, timed = (("deeplabv3plus_tiny", 64, 2, 1, 2) if dry
                                      else ("deeplabv3plus_resnet101", 320, 8, 5, 30))
    amp = device.type == "cuda"
    torch.manual_seed(0)
    model = build_segmentor(name, 27, "random").to(device).train()
    optimizer = build_optimizer(model)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    images = torch.randn(batch, 3, crop, crop, device=device)
    masks = torch.randint(0, 27, (batch, crop, crop), device=device)
    masks[:, :4] = 255  # some ignored pixels, as in pseudo-masks

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), masks, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    for _ in range(warm):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(timed):
        loss = step()
    _sync(device)
    seconds = time.perf_counter() - start
    if not torch.isfinite(torch.as_tensor(float(loss))):
        raise RuntimeError(f"non-finite training loss {float(loss)}")
    rate = timed / seconds
    return {"device": str(device), "segmentor": name, "crop": crop, "batch": batch, "amp": amp,
            "iterations_per_s": rate, "minutes_for_20000": 20000 / rate / 60,
            "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def own_images(dry: bool) -> dict[str, Any]:
    """`main_reco.py --stage index`, then `--images`, with the tiny random models (index build, retrieval,
    co-segmentation, inference, CRF) on the device, as a user runs them; checks the outputs."""
    import yaml
    from PIL import Image

    from benchmarks.synthetic_jpegs import write_jpegs

    device = _device(dry)
    with tempfile.TemporaryDirectory(prefix="gpu_check_own_") as tmp:
        root = Path(tmp)
        write_jpegs(root / "ImageNet2012", 40, processes=1)
        photos = root / "photos"
        photos.mkdir()
        rng = np.random.default_rng(0)
        sizes = [(60, 80), (97, 131), (200, 150)]
        for i, (h, w) in enumerate(sizes):
            small = rng.integers(0, 256, (h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
            Image.fromarray(small).resize((w, h)).save(photos / f"photo{i}.jpg", quality=95)
        config = {"dir_ckpt": str(root / "ckpt"), "dir_imagenet": str(root / "ImageNet2012"),
                  "clip_arch": "tiny-vit-clip", "dense_clip_arch": "tiny-rn-clip", "encoder_arch": "tiny-vit",
                  "weights": {"clip": "random", "dense_clip": "random", "encoder": "random"},
                  "n_imgs": 3, "batch_size": 2, "n_workers": 0, "device": str(device), "crf_workers": 1,
                  "index_batch_size": 16, "index_shard_size": 32}
        (root / "reco.yaml").write_text(yaml.safe_dump(config))
        categories = ["red panda", "bamboo", "snow"]
        import main_reco  # the command line, called in this process (it is a part's own process already)

        start = time.perf_counter()
        for extra in (["--stage", "index"],
                      ["--images", str(photos), "--categories", ",".join(categories), "--out", str(root / "out")]):
            code = main_reco.main(["--config", str(root / "reco.yaml"), *extra])
            if code != 0:
                raise RuntimeError(f"main_reco.py {' '.join(extra[:2])} exited with {code} (its log is above)")
        seconds = time.perf_counter() - start
        summary = json.loads((root / "out" / "summary.json").read_text())
        for i, (h, w) in enumerate(sizes):
            mask = np.asarray(Image.open(root / "out" / "masks" / f"photo{i}.png"))
            if mask.shape != (h, w) or int(mask.max()) >= len(categories):
                raise RuntimeError(f"mask {i}: shape {mask.shape}, max {mask.max()} (expected {(h, w)}, < 3)")
        if summary["categories"] != categories or len(summary["images"]) != len(sizes):
            raise RuntimeError(f"unexpected summary.json: {summary}")
    return {"device": str(device), "seconds": seconds, "images": len(sizes)}


STEPS = {"crf": crf, "crf_memory": crf_memory, "index_build": index_build, "reco_plus_train": reco_plus_train, "own_images": own_images}
