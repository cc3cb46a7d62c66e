"""Own images on a CPU: how far a run is from the work itself (issue 25's targets), in one run.

    python benchmarks/own_images_speed.py [--work DIR] [--n-index-images 8] [--skip-real] [--skip-files]

Every timed command is a fresh Python process (`main_reco.py` as a user runs it), on the CPU:

1. Real architectures at random weights (ViT-L/14@336px retrieval CLIP, RN50x16 DenseCLIP, DeiT-S/16-SIN;
   random weights run at the speed of the real ones and need no file), 3 photos, 3 new class names,
   n_imgs 5, the index already built (over --n-index-images synthetic JPEGs; built before timing):
     floor       start Python, import torch/open_clip/timm, build RN50x16 and DeiT-S, embed the 3 photos
                 (encoder and DenseCLIP), one dense CRF each
     first run   main_reco.py --images: no reference or text embedding cached
     second run  the same command again (everything cached)
   Targets: second run <= 2x the floor, first run <= 7x.
2. Tiny models (tiny-vit-clip, tiny-rn-clip, tiny-vit): an own-images run over 3 photos against one over
   40,001 files of which 40,000 are unreadable (references cached by an untimed run first). Target <= 2x.
3. `main_reco.py --config no_such.yaml` against `python -c "import torch"` (benchmarks/fast_errors.py;
   best of 3). Target <= 0.5x.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.fast_errors import best_seconds  # noqa: E402
from benchmarks.synthetic_jpegs import write_jpegs  # noqa: E402

CLASSES = "red panda,bamboo,snow"
FLOOR = """
import sys
from pathlib import Path
import numpy as np, torch, open_clip, timm  # noqa: F401  (the imports of any run)
import networks
from datasets import images as own
from networks.clip import DenseCLIP
from utils.crf import dense_crf
clip_model, _ = networks.build_clip("RN50x16", "random")
dense_clip = DenseCLIP(clip_model).eval()
encoder = networks.build_encoder("DeiT-S/16-SIN", "random").eval()
with torch.no_grad():
    for path in sorted(Path(sys.argv[1]).iterdir()):
        picture = own.load_image(path)
        pixels = own.inference_tensor(picture, 320)[None]
        features, dense = encoder(pixels), dense_clip(pixels)
        logits = torch.randn(3, *pixels.shape[-2:])
        dense_crf(own.as_array(picture.resize(pixels.shape[-1:-3:-1])), logits, backend="torch")  # the run's
"""


def write_photos(folder: Path, n: int = 3) -> None:
    """n photo-sized (640 x 480) JPEGs with smooth random content."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (31, 41, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480), Image.BILINEAR).save(folder / f"photo{i}.jpg", quality=90)


def write_config(path: Path, work: Path, archs: tuple[str, str, str], **extra) -> Path:
    config = {"dir_ckpt": str(work / "ckpt"), "dir_imagenet": str(work / "ImageNet2012"),
              "clip_arch": archs[0], "dense_clip_arch": archs[1], "encoder_arch": archs[2],
              "weights": {"clip": "random", "dense_clip": "random", "encoder": "random"},
              "n_imgs": 5, "device": "cpu", **extra}
    path.write_text(yaml.safe_dump(config))
    return path


def timed(command: list[str], label: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{label} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(f"  {label:<44} {seconds:8.1f} s", flush=True)
    return seconds


def own_images(config: Path, images: Path, out: Path) -> list[str]:
    return [sys.executable, str(REPO / "main_reco.py"), "--config", str(config), "--images", str(images),
            "--categories", CLASSES, "--out", str(out)]


def real_architectures(work: Path, n_index_images: int) -> None:
    write_jpegs(work / "ImageNet2012", n_index_images)
    photos = work / "photos"
    write_photos(photos)
    config = write_config(work / "real.yaml", work, ("ViT-L/14@336px", "RN50x16", "DeiT-S/16-SIN"))
    print(f"building the ViT-L/14@336px index of {n_index_images} images (not timed) ...", flush=True)
    timed([sys.executable, str(REPO / "main_reco.py"), "--config", str(config), "--stage", "index"], "index build")
    print("real architectures at random weights, 3 photos, 3 new classes, n_imgs 5:", flush=True)
    floor = timed([sys.executable, "-c", FLOOR, str(photos)], "floor")
    first = timed(own_images(config, photos, work / "out_first"), "first run (nothing cached)")
    second = timed(own_images(config, photos, work / "out_second"), "second run (cached)")
    print(f"  first run  / floor = {first / floor:5.2f}x (target <= 7)")
    print(f"  second run / floor = {second / floor:5.2f}x (target <= 2)", flush=True)


def many_files(work: Path) -> None:
    write_jpegs(work / "ImageNet2012", 12)
    photos, crowd = work / "photos3", work / "files40001"
    write_photos(photos)
    write_photos(crowd, 1)
    for i in range(40_000):
        (crowd / f"bad_{i:05d}.jpg").write_bytes(b"not an image")
    config = write_config(work / "tiny.yaml", work, ("tiny-vit-clip", "tiny-rn-clip", "tiny-vit"), n_workers=0,
                          crf_workers=1)
    subprocess.run([sys.executable, str(REPO / "main_reco.py"), "--config", str(config), "--stage", "index"],
                   cwd=REPO, check=True, capture_output=True)
    subprocess.run(own_images(config, photos, work / "warm"), cwd=REPO, check=True, capture_output=True)
    print("tiny models, references cached:", flush=True)
    three = timed(own_images(config, photos, work / "out3"), "3 photos")
    crowded = timed(own_images(config, crowd, work / "out40001"), "40,001 files (40,000 unreadable)")
    print(f"  40,001 files / 3 photos = {crowded / three:5.2f}x (target <= 2)", flush=True)


def fast_errors() -> None:
    print("a wrong --config (best of 3):", flush=True)
    torch_s = best_seconds([sys.executable, "-c", "import torch"], 3)
    wrong_s = best_seconds([sys.executable, str(REPO / "main_reco.py"), "--config", "no_such.yaml"], 3)
    print(f"  python -c 'import torch'              {torch_s:8.2f} s")
    print(f"  main_reco.py --config no_such.yaml    {wrong_s:8.2f} s  ({wrong_s / torch_s:.2f}x, target <= 0.5)",
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="working folder (default: a temporary one, deleted at the end)")
    p.add_argument("--n-index-images", type=int, default=8, help="images of the real-size index (>= n_imgs 5)")
    p.add_argument("--skip-real", action="store_true", help="leave out the real architectures (minutes)")
    p.add_argument("--skip-files", action="store_true", help="leave out the 40,001-file run")
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="reco_own_speed_"))
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; working in {work}", flush=True)
    try:
        fast_errors()
        if not args.skip_files:
            many_files(work / "tiny")
        if not args.skip_real:
            real_architectures(work / "real", args.n_index_images)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
