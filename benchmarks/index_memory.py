"""Peak memory of an index build on a CPU at the defaults (index_batch_size 'auto': 32 on a CPU), against
the same build at the former default index_batch_size 256 (issue 25's target: under 4 GB for
ViT-L/14@336px at the defaults; no DataLoader warning about workers).

    python benchmarks/index_memory.py [--arch ViT-L/14@336px] [--n-images 32] [--compare 256]

Each build is `main_reco.py --stage index` in a fresh process over --n-images synthetic JPEGs, with the
architecture at random weights (same memory and speed as the real weights, no file needed); its peak
resident memory is the child's ru_maxrss. With fewer images than the batch size the batch is smaller
and so is the peak: give at least one full batch (32 at the defaults; 256 for --compare 256, minutes
per image batch on a CPU).
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.synthetic_jpegs import write_jpegs  # noqa: E402


def build(work: Path, arch: str, batch_size: Optional[int]) -> tuple[float, float, bool]:
    """(seconds, peak RSS in GB, whether torch warned about workers) of one index build."""
    config = {"dir_ckpt": str(work / "ckpt"), "dir_imagenet": str(work / "ImageNet2012"), "clip_arch": arch,
              "weights": {"clip": "random"}, "device": "cpu"}
    if batch_size is not None:
        config["index_batch_size"] = batch_size
    path = work / f"index_{batch_size or 'auto'}.yaml"
    path.write_text(yaml.safe_dump(config))
    index = work / "ImageNet2012" / "index"
    if index.exists():
        shutil.rmtree(index)
    command = [sys.executable, str(REPO / "main_reco.py"), "--config", str(path), "--stage", "index"]
    # the children's ru_maxrss is the largest of the children waited for: one build per process of this script
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"index build failed:\n{done.stderr[-3000:]}")
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
    return seconds, peak_gb, "suggested max number of worker" in done.stderr  # torch's warning


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-L/14@336px")
    p.add_argument("--n-images", type=int, default=32)
    p.add_argument("--compare", type=int, help="also build at this index_batch_size (in a second process)")
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)  # the second process's build
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="reco_index_memory_") as tmp:
        work = Path(tmp)
        write_jpegs(work / "ImageNet2012", args.n_images)
        seconds, peak, warned = build(work, args.arch, args.batch_size)
    label = f"index_batch_size {args.batch_size or 'auto'}"
    print(f"{args.arch}, {args.n_images} images, {label}: {seconds:.1f} s, peak RSS {peak:.2f} GB, "
          f"DataLoader worker warning: {'yes' if warned else 'no'}", flush=True)
    if args.compare is not None and args.batch_size is None:  # a fresh process: ru_maxrss is per process tree
        subprocess.run([sys.executable, __file__, "--arch", args.arch, "--n-images", str(args.n_images),
                        "--batch-size", str(args.compare)], check=True)


if __name__ == "__main__":
    main()
