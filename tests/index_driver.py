"""Build an index from a (synthetic) ImageNet tree with a deterministic tiny embedding function.

Used by tests/test_index.py both in-process and under torchrun (gloo on CPU):
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/index_driver.py \
        --root ROOT --out OUT_DIR [--shard-size 4 --batch-size 2 --image-size 32]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.imagenet import IndexBuildDataset, list_imagenet_images  # noqa: E402
from image_index.build import build_index  # noqa: E402
from utils import distributed  # noqa: E402

EMBED_DIM = 16


def tiny_embed_fn(dim: int = EMBED_DIM, seed: int = 0):
    """images (B, 3, S, S) -> (B, dim): a fixed random linear map of the 4x4 average-pooled image.

    Written as a per-row product and sum (no batched GEMM), so a row's result does not depend on the
    rest of its batch.
    """
    weight = torch.randn(3 * 4 * 4, dim, generator=torch.Generator().manual_seed(seed))

    def embed(images: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(images.float(), 4).flatten(1)
        return (pooled[:, :, None] * weight.to(images.device)[None]).sum(1)

    return embed


def build(root: str | Path, out_dir: str | Path, split: str = "train", shard_size: int = 4, batch_size: int = 2,
          image_size: int = 32, num_workers: int = 0, rank: int = 0, world_size: int = 1, barrier=None,
          embed_fn=None) -> Path:
    return build_index(
        list_imagenet_images(root, split), embed_fn or tiny_embed_fn(), out_dir,
        {"clip_arch": "tiny-vit-clip", "split": split, "image_size": image_size},
        make_dataset=lambda paths: IndexBuildDataset(paths, image_size), batch_size=batch_size,
        num_workers=num_workers, shard_size=shard_size, device="cpu", rank=rank, world_size=world_size,
        progress=False, barrier=barrier)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--shard-size", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rank, world_size, _ = distributed.init_distributed(backend="gloo")
    try:
        build(args.root, args.out, args.split, args.shard_size, args.batch_size, args.image_size,
              rank=rank, world_size=world_size, barrier=distributed.barrier)
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    main()
