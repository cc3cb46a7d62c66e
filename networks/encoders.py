"""Dense ViT encoders (SPEC 5): ImageNet-normalised images -> patch-token feature maps.

The forward is ours, built from a timm model's submodules, because ReCo resizes the positional
embedding with plain (non-antialiased) bicubic interpolation, unlike timm's `dynamic_img_size` path.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Optional, Union

import timm
import torch
import torch.nn.functional as F
from timm.models.deit import VisionTransformerDistilled
from torch import nn

from .weights import freeze, load_state_dict_file, load_strict, resolve_weights

logger = logging.getLogger("reco.networks")

ENCODER_ARCHS = ("DeiT-S/16-SIN", "tiny-vit")


def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    num_prefix_tokens: int,
    size: tuple[int, int],
    by_token_count: bool = True,
) -> torch.Tensor:
    """Positional embedding (1, P + g*g, C) for an (h, w) patch grid -> (1, P + h*w, C).

    The square g x g grid part is resized with bicubic F.interpolate (align_corners=False, no
    antialias) and flattened row-major; the P prefix embeddings (CLS, DIST) are kept. With
    `by_token_count` (the original's rule, SPEC 5 / 15.14) the embedding is returned unchanged whenever
    h*w == g*g, even for a non-square grid; otherwise only when (h, w) == (g, g).
    """
    h, w = size
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    g = math.isqrt(grid.shape[1])
    if g * g != grid.shape[1]:
        raise ValueError(f"positional embedding grid of {grid.shape[1]} tokens is not square")
    if (h * w == g * g) if by_token_count else (h, w) == (g, g):
        return pos_embed
    grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)


class DenseViT(nn.Module):
    """(B, 3, H, W) -> (B, C, H // p, W // p): patch tokens after the final norm (SPEC 5).

    Wraps a timm ViT with a CLS token and optionally a distillation token (DeiT). Pixels beyond the
    last whole patch are dropped. Frozen: eval mode whatever `train()` is asked.
    """

    def __init__(self, vit: nn.Module, pos_embed_by_token_count: bool = True) -> None:
        super().__init__()
        if getattr(vit, "cls_token", None) is None or getattr(vit, "no_embed_class", False):
            raise ValueError("DenseViT needs a timm ViT with a class token and class-token positions")
        if getattr(vit, "reg_token", None) is not None:
            raise ValueError("ViTs with register tokens are not supported")
        self.vit = freeze(vit)
        self.patch_size: int = int(vit.patch_embed.proj.kernel_size[0])
        self.embed_dim: int = int(vit.embed_dim)
        self.num_prefix_tokens: int = 1 + int(getattr(vit, "dist_token", None) is not None)
        self.pos_embed_by_token_count = pos_embed_by_token_count
        self.eval()

    def train(self, mode: bool = True) -> "DenseViT":
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"encoder expects images (B, 3, H, W), got {tuple(images.shape)}")
        p = self.patch_size
        h, w = images.shape[2] // p, images.shape[3] // p
        if h == 0 or w == 0:
            raise ValueError(f"images of {tuple(images.shape[2:])} are smaller than one {p}x{p} patch")
        vit = self.vit
        # The patch conv directly: timm's PatchEmbed would insist on the 224x224 training size.
        x = vit.patch_embed.proj(images[:, :, : h * p, : w * p])  # (B, C, h, w)
        x = vit.patch_embed.norm(x.flatten(2).transpose(1, 2))  # (B, h*w, C)
        prefix = [vit.cls_token] + ([vit.dist_token] if self.num_prefix_tokens == 2 else [])
        x = torch.cat([t.expand(x.shape[0], -1, -1) for t in prefix] + [x], dim=1)
        x = x + interpolate_pos_embed(vit.pos_embed, self.num_prefix_tokens, (h, w), self.pos_embed_by_token_count)
        for stage in ("pos_drop", "patch_drop", "norm_pre"):  # identities for DeiT in eval mode
            x = getattr(vit, stage, nn.Identity())(x)
        x = vit.norm(vit.blocks(x))
        x = x[:, self.num_prefix_tokens:]
        return x.transpose(1, 2).reshape(x.shape[0], self.embed_dim, h, w)


def build_encoder(
    arch: str,
    weights: Optional[Union[str, os.PathLike]],
    key: str = "weights.encoder",
    device: Union[str, torch.device] = "cpu",
) -> DenseViT:
    """A frozen dense encoder with `.patch_size` and `.embed_dim`.

    'DeiT-S/16-SIN': timm deit_small_distilled_patch16_224; `weights` = the authors' deit_s_sin_dist.pth
        ({"model": state_dict} or a bare state dict), loaded strictly; 'random' only when spelled out.
    'tiny-vit': DeiT-style, patch 16, width 32, depth 2, 2 heads; 'random' (or a file made from it).
    """
    if arch == "DeiT-S/16-SIN":
        expected = "the DeiT-S/16-SIN checkpoint deit_s_sin_dist.pth ({'model': state_dict})"
    elif arch == "tiny-vit":
        expected = "'random' for the test architecture 'tiny-vit' (or a checkpoint file made from it)"
    else:
        raise ValueError(f"unknown encoder architecture {arch!r}; known: {list(ENCODER_ARCHS)}")
    kind, path = resolve_weights(weights, key, expected)  # before building: fail fast on a bad path
    if arch == "DeiT-S/16-SIN":
        vit = timm.create_model("deit_small_distilled_patch16_224", pretrained=False)
    else:
        vit = VisionTransformerDistilled(img_size=224, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    if kind == "random":
        if arch != "tiny-vit":
            logger.warning("%s: building %s with RANDOM weights (tests only)", key, arch)
    else:
        load_strict(vit, load_state_dict_file(path, key), key, path)
    return DenseViT(vit).to(device)
