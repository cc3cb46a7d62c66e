"""Hand-made "colour-coded" stand-ins for CLIP, DenseCLIP and the dense encoder.

Every vocabulary word has a colour. A pixel's feature is its Gaussian-kernel similarity to each colour
plus a small constant (so grey pixels get a distinct, non-zero feature). The text embedding of a word is
the one-hot of its colour. With these models the right answer of every ReCo stage is known: retrieval
must return the images of the word's colour, co-segmentation must pick a pixel of that colour, and
inference must label each scene region by its colour.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import normalisation

IMAGENET_MEAN = torch.tensor(normalisation.IMAGENET_MEAN).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor(normalisation.IMAGENET_STD).view(1, 3, 1, 1)
CLIP_MEAN = torch.tensor(normalisation.CLIP_MEAN).view(1, 3, 1, 1)
CLIP_STD = torch.tensor(normalisation.CLIP_STD).view(1, 3, 1, 1)
SIGMA = 0.12  # kernel width in [0, 1] RGB units; the vocabulary's colours are >= 0.3 apart
BIAS = 0.05


def distinct_colours(n: int, fixed: Sequence[tuple[int, int, int]] = ()) -> list[tuple[int, int, int]]:
    """`fixed` colours first, then grid colours >= 0.3 (in [0, 1] RGB) from them, from each other and from grey."""
    colours = [tuple(int(c) for c in f) for f in fixed]
    levels = (0, 85, 170, 255)  # a 4x4x4 grid: neighbours are 1/3 apart
    candidates = [(r, g, b) for r in levels for g in levels for b in levels]
    grey = np.array([128, 128, 128]) / 255
    for candidate in candidates:
        if len(colours) == n:
            break
        c = np.array(candidate) / 255
        if np.linalg.norm(c - grey) < 0.3:
            continue
        if all(np.linalg.norm(c - np.array(o) / 255) >= 0.3 for o in colours):
            colours.append(candidate)
    if len(colours) < n:
        raise ValueError(f"could not find {n} distinct colours")
    return colours


class ColourFeatures(nn.Module):
    """RGB in [0, 1] (B, 3, H, W) -> kernel features (B, V + 1, H, W)."""

    def __init__(self, colours: Sequence[tuple[int, int, int]]) -> None:
        super().__init__()
        self.register_buffer("colours", torch.tensor(colours, dtype=torch.float32) / 255)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        distance = ((rgb[:, None] - self.colours[None, :, :, None, None]) ** 2).sum(dim=2)  # (B, V, H, W)
        kernel = torch.exp(-distance / (2 * SIGMA**2))
        return torch.cat([kernel, torch.full_like(kernel[:, :1], BIAS)], dim=1)


class ColourEncoder(nn.Module):
    """Dense encoder: ImageNet-normalised images -> (B, V + 1, H/p, W/p) colour features per patch."""

    def __init__(self, colours: Sequence[tuple[int, int, int]], patch_size: int = 8) -> None:
        super().__init__()
        self.features = ColourFeatures(colours)
        self.patch_size = patch_size
        self.embed_dim = len(colours) + 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        rgb = images * IMAGENET_STD.to(images) + IMAGENET_MEAN.to(images)
        return F.avg_pool2d(self.features(rgb), self.patch_size)


class ColourDenseCLIP(ColourEncoder):
    """DenseCLIP stand-in: the same features at stride 32."""

    def __init__(self, colours: Sequence[tuple[int, int, int]]) -> None:
        super().__init__(colours, patch_size=32)


class _Visual(nn.Module):
    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size


class ColourCLIP(nn.Module):
    """CLIP stand-in: encode_image = mean colour features of the (CLIP-normalised) image;
    encode_text = one-hot of the colour index the tokenizer produced."""

    def __init__(self, colours: Sequence[tuple[int, int, int]], image_size: int = 64):
        super().__init__()
        self.features = ColourFeatures(colours)
        self.visual = _Visual(image_size)
        self.dim = len(colours) + 1
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)  # gives the model a device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        rgb = images.float() * CLIP_STD.to(images.device) + CLIP_MEAN.to(images.device)
        return self.features(rgb).mean(dim=(2, 3))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.one_hot(tokens[:, 0], self.dim).float()


class ColourTokenizer:
    """Maps a prompt made from one of the templates to the colour index of the word filling it.

    vocabulary: word -> index into the colour list (words may share a colour); unknown words map to
    the constant (bias) slot, which no image resembles.
    """

    def __init__(self, vocabulary: dict[str, int], n_colours: int) -> None:
        from reco.prompt_templates import PROMPT_TEMPLATES

        self.index = dict(vocabulary)
        self.unknown = n_colours
        self.templates = [t.split("{}") for t in PROMPT_TEMPLATES]

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        ids = []
        for prompt in prompts:
            words = {prompt[len(pre):len(prompt) - len(post)] for pre, post in self.templates
                     if prompt.startswith(pre) and prompt.endswith(post) and len(prompt) >= len(pre) + len(post)}
            known = [self.index[w] for w in words if w in self.index]
            ids.append(known[0] if known else self.unknown)
        return torch.tensor(ids)[:, None]


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
