"""The open-vocabulary evaluation geometry: shorter-side resize and sliding-window inference.

Pure tensor functions; the scores of a window come from an injected callable, so the same code slides
the dense encoder, DenseCLIP, or anything else that maps images to per-pixel scores.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F


def protocol_size(height: int, width: int, short_side: int, long_side_max: int) -> tuple[int, int]:
    """(h, w) after a keep-ratio resize to `short_side`, unless the long side would pass `long_side_max`.

    The scale is min(short_side / short, long_side_max / long) and sizes are rounded half up, as the
    `Resize(scale=(long_side_max, short_side), keep_ratio=True)` of the peers' mmseg pipelines. Small
    images are enlarged.
    """
    if min(height, width, short_side, long_side_max) < 1:
        raise ValueError(f"sizes must be positive: image {height}x{width}, short {short_side}, long {long_side_max}")
    scale = min(short_side / min(height, width), long_side_max / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, h, w) bilinear, align_corners False, no antialiasing (cv2 INTER_LINEAR)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start of every window along one axis: every `stride`, the last one flush with the end.

    A length shorter than the window gives one window at 0 (the caller crops to the image).
    """
    count = max(length - window + stride - 1, 0) // stride + 1
    return [max(min(i * stride + window, length) - window, 0) for i in range(count)]


@torch.no_grad()
def sliding_window_scores(
    images: torch.Tensor,
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    window: Optional[int],
    stride: int,
) -> torch.Tensor:
    """Per-pixel scores averaged over the overlapping windows that cover each pixel.

    images (B, 3, H, W); score_fn maps a crop (B, 3, h, w) to scores (B, N, h, w). Windows are
    `window` x `window` (clipped to the image when it is smaller), `stride` apart, the last one of each
    row and column flush with the image border. `window` None is one pass over the whole image, and so
    is any window at least as large as the image -> (B, N, H, W) float32.
    """
    height, width = images.shape[-2:]
    if window is None or (window >= height and window >= width):
        return score_fn(images).float()
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"sliding window {window} with stride {stride}: need 1 <= stride <= window")
    total: Optional[torch.Tensor] = None
    count = torch.zeros((1, 1, height, width), dtype=torch.float32, device=images.device)
    for top in window_starts(height, window, stride):
        for left in window_starts(width, window, stride):
            bottom, right = min(top + window, height), min(left + window, width)
            scores = score_fn(images[:, :, top:bottom, left:right]).float()
            if total is None:
                total = torch.zeros((images.shape[0], scores.shape[1], height, width), dtype=torch.float32,
                                    device=scores.device)
            total[:, :, top:bottom, left:right] += scores
            count[:, :, top:bottom, left:right] += 1
    return total / count.to(total.device)
