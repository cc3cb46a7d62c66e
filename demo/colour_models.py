"""Hand-made "colour-coded" stand-ins for CLIP, DenseCLIP and the dense encoder (no weights).

They drive `python main_reco.py --demo` (entry/reco_demo.py) and the known-answer tests; the world they
segment is drawn by demo/world.py.

Every vocabulary word has a colour. A pixel's feature is its Gaussian-kernel similarity to each colour
plus a small constant (so grey pixels get a distinct, non-zero feature). The text embedding of a word is
the one-hot of its colour. With these models the right answer of every ReCo stage is known: retrieval
must return the images of the word's colour, co-segmentation must pick a pixel of that colour, and
inference must label each scene region by its colour.
"""
from __future__ import annotations

from typing import Sequence

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


class ColourFeatures(nn.Module):
    """RGB in [0, 1] (B, 3, H, W) -> kernel features (B, V + 1, H, W)."""

    def __init__(self, colours: Sequence[tuple[int, int, int]]) -> None:
        super().__init__()
        self.register_buffer("colours", torch.tensor(colours, dtype=torch.float32) / 255)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        # squared distance to every colour, one channel at a time and in place: the same numbers as
        # ((rgb[:, None] - colours) ** 2).sum(dim=2), without its (B, V, 3, H, W) temporary (3x faster)
        colours = self.colours[None, :, :, None, None]
        distance = (rgb[:, 0, None] - colours[:, :, 0]).square_()  # (B, V, H, W)
        for channel in (1, 2):
            distance.add_((rgb[:, channel, None] - colours[:, :, channel]).square_())
        kernel = distance.div_(-2 * SIGMA**2).exp_()
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
