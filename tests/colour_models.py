"""Colour-coded test models: the demo's models (demo/colour_models.py) and the test-only ones.

The CLIP, DenseCLIP and encoder stand-ins live in the package (the demo uses them too); ColourViT, a
timm-like ViT for registering an encoder in tests, lives here.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from demo.world import distinct_colours  # noqa: F401  (re-exported for the tests)
from demo.colour_models import (  # noqa: F401  (re-exported for the tests)
    BIAS, CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, SIGMA, ColourCLIP, ColourDenseCLIP, ColourEncoder,
    ColourFeatures, ColourTokenizer,
)


class ColourViT(nn.Module):
    """A timm-like ViT stand-in with register tokens and its own input normalisation, for registering a
    new encoder in tests: forward_features(images normalised with (mean, std)) -> (B, 1 + R + h*w, V + 1),
    class and register tokens first (zeros), then the colour features of each patch."""

    def __init__(self, colours: Sequence[tuple[int, int, int]], mean: Sequence[float], std: Sequence[float],
                 patch_size: int = 8, registers: int = 2) -> None:
        super().__init__()
        self.features = ColourFeatures(colours)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, 1, patch_size, stride=patch_size, bias=False)  # declares the stride
        self.embed_dim = len(colours) + 1
        self.num_prefix_tokens = 1 + registers
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim), requires_grad=False)
        self.reg_token = nn.Parameter(torch.zeros(1, registers, self.embed_dim), requires_grad=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.patch_size = patch_size

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        rgb = images * self.std + self.mean
        patches = F.avg_pool2d(self.features(rgb), self.patch_size).flatten(2).transpose(1, 2)
        prefix = torch.cat([self.cls_token, self.reg_token], dim=1).expand(images.shape[0], -1, -1)
        return torch.cat([prefix, patches], dim=1)
