"""The dense-encoder registry: one `EncoderSpec` per `encoder_arch`, so adding an encoder is one entry.

A spec declares what the pipeline must know about a ViT: the timm architecture it is built from, its
patch size, width, prefix tokens (class, distillation and register tokens), the normalisation its
weights were trained with, how its positional embedding follows the input size, and which weights file
(or timm pretrained tag, online only) belongs in `weights.encoder`. `networks.encoders.build_encoder`
reads only this table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import timm
from timm.models import eva, vision_transformer
from timm.models.deit import VisionTransformerDistilled
from torch import nn

from utils.normalisation import IMAGENET_MEAN, IMAGENET_STD
from utils.registry import Registry

# DINOv3's satellite models (SAT-493M) were trained with these statistics.
SAT493M_MEAN = (0.430, 0.411, 0.296)
SAT493M_STD = (0.213, 0.156, 0.143)

# How the positional embedding follows the input's patch grid:
#   "bicubic_token_count": ReCo's rule for DeiT: plain bicubic (no antialias) of the square grid, skipped
#                          whenever h*w equals the trained token count, even for a non-square grid;
#   "bicubic":             plain bicubic, skipped only for the trained grid itself;
#   "library":             the timm model's own forward with dynamic_img_size (e.g. DINOv3's RoPE).
POS_EMBED_RULES = ("bicubic_token_count", "bicubic", "library")


@dataclass(frozen=True)
class EncoderSpec:
    """One dense encoder.

    name: the config's `encoder_arch`.
    timm_name: the timm model it is (the default builder creates it with pretrained=False and `timm_kwargs`;
        its pretrained tags are `timm_name.tag`); None for a model that is not timm's.
    build: the one construction hook, (spec) -> the model with random weights; the default creates
        `timm_name`. A ViT is wrapped by networks.encoders.DenseViT (after loading the weights, if any);
        with `fixed_weights` the builder returns the finished dense encoder ((B, 3, H, W) -> (B, embed_dim,
        H/patch_size, W/patch_size), e.g. the demo's colour-coded one), used as-is.
    fixed_weights: the builder makes the finished dense encoder: `weights` must be 'random'.
    patch_size, embed_dim: the feature stride and channel count of the dense output (checked at build).
    num_prefix_tokens: class + distillation + register tokens in front of the patch tokens.
    num_registers: how many of those are register tokens.
    mean, std: the normalisation the weights expect. The pipeline feeds ImageNet-normalised images;
        the encoder re-normalises internally when these differ, so nothing else changes.
    pos_embed: one of POS_EMBED_RULES.
    weights: what `weights.encoder` should be (shown in errors and the README).
    tags: timm pretrained tags accepted as `weights.encoder` (downloads; online only).
    convert_checkpoint: (state_dict, model) -> state_dict in timm's layout, for files in the authors'
        own layout (DINOv2/DINOv3 releases); None: the file must already be in timm's layout.
    test_only: random weights are expected (no warning), e.g. the tiny test architecture.
    release_file: the file name of the weights the encoder was published with, if one (the reference
        settings record treats that file as the arch's canonical weights, wherever it lies).
    """

    name: str
    patch_size: int
    embed_dim: int
    num_prefix_tokens: int
    weights: str
    num_registers: int = 0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pos_embed: str = "bicubic"
    tags: tuple[str, ...] = ()
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    convert_checkpoint: Optional[Callable[[dict, nn.Module], dict]] = None
    test_only: bool = False
    release_file: Optional[str] = None
    timm_name: Optional[str] = None
    build: Callable[["EncoderSpec"], nn.Module] = field(default=lambda spec: timm_architecture(spec), compare=False)
    fixed_weights: bool = False

    def __post_init__(self) -> None:
        if self.pos_embed not in POS_EMBED_RULES:
            raise ValueError(f"encoder {self.name!r}: pos_embed must be one of {POS_EMBED_RULES}, got {self.pos_embed!r}")
        if not 0 <= self.num_registers <= self.num_prefix_tokens:
            raise ValueError(f"encoder {self.name!r}: num_registers must lie in 0..num_prefix_tokens")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"encoder {self.name!r}: mean and std need 3 values, std > 0")



def timm_architecture(spec: EncoderSpec) -> nn.Module:
    """The default builder: timm's `spec.timm_name`, randomly initialised."""
    if spec.timm_name is None:
        raise ValueError(f"encoder {spec.name!r} names no timm model: give its spec a build function")
    return timm.create_model(spec.timm_name, pretrained=False, **dict(spec.timm_kwargs))


def _tiny_vit(spec: EncoderSpec) -> nn.Module:
    return VisionTransformerDistilled(img_size=224, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=0)


def _dinov2(name: str, timm_name: str, width: int, registers: int, file: str) -> EncoderSpec:
    return EncoderSpec(
        name=name, timm_name=timm_name, patch_size=14, embed_dim=width, num_prefix_tokens=1 + registers,
        num_registers=registers, pos_embed="bicubic", tags=("lvd142m",), timm_kwargs={"num_classes": 0},
        convert_checkpoint=vision_transformer.checkpoint_filter_fn,
        weights=f"a DINOv2 checkpoint: Meta's {file} or timm's {timm_name}.lvd142m model.safetensors",
    )


def _dinov3(name: str, timm_name: str, width: int, tag: str, file: str, **extra: Any) -> EncoderSpec:
    return EncoderSpec(
        name=name, timm_name=timm_name, patch_size=16, embed_dim=width, num_prefix_tokens=5, num_registers=4,
        pos_embed="library", tags=(tag,), timm_kwargs={"num_classes": 0, "dynamic_img_size": True},
        convert_checkpoint=eva.checkpoint_filter_fn,
        weights=f"a DINOv3 checkpoint: Meta's {file} or timm's {timm_name}.{tag} model.safetensors", **extra,
    )


_SPECS: tuple[EncoderSpec, ...] = (
    EncoderSpec(
        name="DeiT-S/16-SIN", timm_name="deit_small_distilled_patch16_224", patch_size=16, embed_dim=384,
        num_prefix_tokens=2, pos_embed="bicubic_token_count",
        weights="the DeiT-S/16-SIN checkpoint deit_s_sin_dist.pth ({'model': state_dict})",
        release_file="deit_s_sin_dist.pth",
    ),
    _dinov2("DINOv2-S/14", "vit_small_patch14_dinov2", 384, 0, "dinov2_vits14_pretrain.pth"),
    _dinov2("DINOv2-B/14", "vit_base_patch14_dinov2", 768, 0, "dinov2_vitb14_pretrain.pth"),
    _dinov2("DINOv2-S/14-reg", "vit_small_patch14_reg4_dinov2", 384, 4, "dinov2_vits14_reg4_pretrain.pth"),
    _dinov2("DINOv2-B/14-reg", "vit_base_patch14_reg4_dinov2", 768, 4, "dinov2_vitb14_reg4_pretrain.pth"),
    _dinov3("DINOv3-S/16", "vit_small_patch16_dinov3", 384, "lvd1689m", "dinov3_vits16_pretrain_lvd1689m-*.pth"),
    _dinov3("DINOv3-B/16", "vit_base_patch16_dinov3", 768, "lvd1689m", "dinov3_vitb16_pretrain_lvd1689m-*.pth"),
    _dinov3("DINOv3-L/16-SAT", "vit_large_patch16_dinov3", 1024, "sat493m", "dinov3_vitl16_pretrain_sat493m-*.pth",
            mean=SAT493M_MEAN, std=SAT493M_STD),
    EncoderSpec(
        name="tiny-vit", build=_tiny_vit, patch_size=16, embed_dim=32, num_prefix_tokens=2,
        pos_embed="bicubic_token_count", test_only=True,
        weights="'random' for the test architecture 'tiny-vit' (or a checkpoint file made from it)",
    ),
)

ENCODERS: Registry[EncoderSpec] = Registry("encoder", "encoder architecture")


def register_encoder(spec: EncoderSpec, replace: bool = False) -> EncoderSpec:
    """Add `spec` under `spec.name` (a second spec of the same name needs `replace`)."""
    return ENCODERS.register(spec.name, spec, replace)


def unregister_encoder(name: str) -> None:
    ENCODERS.unregister(name)


def encoder_names() -> tuple[str, ...]:
    return ENCODERS.names()


def get_encoder(name: str) -> EncoderSpec:
    """The spec of `name`, or a ValueError listing the known names."""
    return ENCODERS.lookup(name)


for _spec in _SPECS:
    register_encoder(_spec)
