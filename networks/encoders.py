"""Dense ViT encoders (SPEC 5): ImageNet-normalised images -> patch-token feature maps.

Which encoders exist, and what each needs, is declared in `networks.encoder_registry`. For ViTs with an
absolute positional embedding the forward is ours, built from the timm model's submodules, because
ReCo resizes the positional embedding with plain (non-antialiased) bicubic interpolation, unlike
timm's `dynamic_img_size` path; encoders whose spec says "library" (RoPE: DINOv3) use timm's forward.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Optional, Union

import timm
import torch
import torch.nn.functional as F
from torch import nn

from utils.config import ConfigError

from .encoder_registry import IMAGENET_MEAN, IMAGENET_STD, EncoderSpec, get_encoder
from .weights import freeze, load_state_dict_file, load_strict, random_init, resolve_weights

logger = logging.getLogger("reco.networks")


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
    """(B, 3, H, W) ImageNet-normalised -> (B, C, H // p, W // p): patch tokens after the final norm (SPEC 5).

    Wraps a timm ViT as its spec declares: class token, then distillation (DeiT) or register tokens
    (DINOv2/v3), positional embedding per `spec.pos_embed`, input re-normalised from ImageNet's
    statistics to the spec's when they differ. Pixels beyond the last whole patch are dropped.
    Frozen: eval mode whatever `train()` is asked.
    """

    def __init__(self, vit: nn.Module, spec: EncoderSpec) -> None:
        super().__init__()
        self.vit = freeze(vit)
        self.spec = spec
        self.patch_size: int = spec.patch_size
        self.embed_dim: int = spec.embed_dim
        self.num_prefix_tokens: int = spec.num_prefix_tokens
        self.pos_embed_rule = spec.pos_embed
        _check_against_spec(vit, spec)
        # x_spec = (x_imagenet * std_in + mean_in - mean) / std = x_imagenet * scale + shift
        self.renormalise = (tuple(spec.mean), tuple(spec.std)) != (IMAGENET_MEAN, IMAGENET_STD)
        mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
        in_mean, in_std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("input_scale", in_std / std, persistent=False)
        self.register_buffer("input_shift", (in_mean - mean) / std, persistent=False)
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
        images = images[:, :, : h * p, : w * p]
        if self.renormalise:
            images = images * self.input_scale + self.input_shift
        vit = self.vit
        if self.pos_embed_rule == "library":
            x = vit.forward_features(images)  # (B, prefix + h*w, C), after the final norm
        else:
            x = self._tokens(images, h, w)
        x = x[:, self.num_prefix_tokens:]
        return x.transpose(1, 2).reshape(x.shape[0], self.embed_dim, h, w)

    def _tokens(self, images: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Our forward of a timm ViT with an absolute positional embedding -> (B, prefix + h*w, C)."""
        vit = self.vit
        # The patch conv directly: timm's PatchEmbed would insist on the training size.
        x = vit.patch_embed.proj(images)  # (B, C, h, w)
        x = vit.patch_embed.norm(x.flatten(2).transpose(1, 2))  # (B, h*w, C)
        prefix = [vit.cls_token.expand(x.shape[0], -1, -1)]
        if getattr(vit, "dist_token", None) is not None:
            prefix.append(vit.dist_token.expand(x.shape[0], -1, -1))
        if getattr(vit, "reg_token", None) is not None:
            prefix.append(vit.reg_token.expand(x.shape[0], -1, -1))
        # DINOv2 with registers (timm's no_embed_class): the positional embedding covers the patches only
        # and is added before the prefix tokens are put in front; otherwise it covers the class/dist tokens.
        outside = bool(getattr(vit, "no_embed_class", False))
        pos_embed = interpolate_pos_embed(vit.pos_embed, 0 if outside else len(prefix), (h, w),
                                          self.pos_embed_rule == "bicubic_token_count")
        if outside:
            x = torch.cat(prefix + [x + pos_embed], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1) + pos_embed
        for stage in ("pos_drop", "patch_drop", "norm_pre"):  # identities in eval mode
            x = getattr(vit, stage, nn.Identity())(x)
        return vit.norm(vit.blocks(x))


def _check_against_spec(vit: nn.Module, spec: EncoderSpec) -> None:
    """The built module must be what the spec declares (a wrong spec entry fails here, not in a run)."""
    kernel = getattr(getattr(getattr(vit, "patch_embed", None), "proj", None), "kernel_size", None)
    found = {
        "patch_size": int(kernel[0]) if kernel else None,
        "embed_dim": int(getattr(vit, "embed_dim", -1)),
        "num_prefix_tokens": int(getattr(vit, "num_prefix_tokens", 1 + int(getattr(vit, "dist_token", None) is not None))),
        "num_registers": _register_count(vit),
    }
    declared = {k: getattr(spec, k) for k in found}
    if found != declared:
        raise ValueError(f"encoder {spec.name!r}: the built model has {found}, the registry entry declares {declared}")
    if spec.pos_embed != "library" and (getattr(vit, "cls_token", None) is None or getattr(vit, "pos_embed", None) is None):
        raise ValueError(f"encoder {spec.name!r}: pos_embed {spec.pos_embed!r} needs a ViT with a class token and an "
                         "absolute positional embedding; use 'library' for others")


def _register_count(vit: nn.Module) -> int:
    reg_token = getattr(vit, "reg_token", None)  # (1, R, C) in timm's ViT and Eva
    return 0 if reg_token is None else int(reg_token.shape[1])


def build_encoder(
    arch: str,
    weights: Optional[Union[str, os.PathLike]],
    key: str = "weights.encoder",
    device: Union[str, torch.device] = "cpu",
) -> DenseViT:
    """A frozen dense encoder with `.patch_size` and `.embed_dim`, as registered under `arch`.

    weights: a local checkpoint file (loaded strictly, after the spec's conversion from the authors'
    layout), one of the spec's timm pretrained tags (downloads; online only), or 'random' (tests only;
    spelled out).
    """
    spec = get_encoder(arch)
    kind, value = resolve_weights(weights, key, spec.weights, spec.tags)  # before building: fail fast
    if spec.fixed_weights:
        if kind != "random":
            raise ConfigError(f"{key}: {arch} is built by its registry entry and takes no weights; set {key}: random")
        return freeze(spec.build(spec)).to(device)
    if kind == "tag":
        vit = _from_tag(spec, str(value), key)
    elif kind == "random":
        if not spec.test_only:
            logger.warning("%s: building %s with RANDOM weights (tests only)", key, arch)
        with random_init(spec.name):
            vit = spec.build(spec)
    else:
        vit = spec.build(spec)
        state_dict = load_state_dict_file(value, key)
        if spec.convert_checkpoint is not None:
            state_dict = spec.convert_checkpoint(state_dict, vit)
        load_strict(vit, state_dict, key, value)
    return DenseViT(vit, spec).to(device)


def _from_tag(spec: EncoderSpec, tag: str, key: str) -> nn.Module:
    try:
        return timm.create_model(f"{spec.timm_name}.{tag}", pretrained=True, **dict(spec.timm_kwargs))
    except Exception as error:
        raise ConfigError(f"{key}: could not get the '{tag}' weights of {spec.name} through timm (the download "
                          f"failed: {type(error).__name__}: {error}). Set {key} to a local file instead: "
                          f"{spec.weights}") from error
