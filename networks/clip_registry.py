"""The CLIP registry: one `ClipSpec` per `clip_arch` / `dense_clip_arch`, so adding a CLIP is one entry.

Retrieval CLIPs (`clip_arch`) embed the index images and the category prompts; any open_clip model
qualifies. DenseCLIP / text-attention CLIPs (`dense_clip_arch`) must have a ModifiedResNet image tower
(`dense=True`). `networks.clip.build_clip` and the config check read only this table.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

import open_clip
import torch
from open_clip.model import CLIP, get_cast_dtype
from torch import nn

from utils.normalisation import CLIP_MEAN, CLIP_STD
from utils.registry import Registry

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)


def open_clip_config(name: str) -> dict[str, Any]:
    """The CLIP constructor arguments of open_clip's model config `name` (without its activation flag)."""
    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"open_clip {open_clip.__version__} has no config for {name!r}")
    config.pop("quick_gelu", None)
    return config


def open_clip_architecture(spec: "ClipSpec", precision: str, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """The default builder: OpenAI-style CLIPs are built here (QuickGELU, their weights' activation); others
    (SigLIP: timm image tower, custom text tower) by open_clip itself."""
    if spec.quick_gelu:
        return CLIP(**open_clip_config(spec.open_clip_name), quick_gelu=True, cast_dtype=get_cast_dtype(precision))
    return open_clip.create_model(spec.open_clip_name, pretrained=None, precision="fp32", device=device)


@dataclass(frozen=True)
class ClipSpec:
    """One CLIP.

    name: the config value (the paper's / OpenAI's spelling where there is one).
    open_clip_name: open_clip's model config; also accepted as the config value.
    image_size, embed_dim: the image tower's input size and the joint embedding width (checked in tests).
    tags: open_clip pretrained tags accepted as weights (downloads; online only).
    openai_file: the OpenAI release (TorchScript archive) that is the expected weights file, if any.
    quick_gelu: the weights were trained with QuickGELU (all OpenAI releases).
    mean, std: the normalisation the image tower expects. The index pipeline normalises with CLIP's
        statistics; the embedding function re-normalises when these differ (SigLIP).
    dense: the image tower is a ModifiedResNet, usable as DenseCLIP / for text attention.
    index_resize: how index images are brought to image_size: "crop" (shorter side, then centre crop:
        OpenAI's and the original's) or "squash" (the whole image, aspect ratio not kept: SigLIP's).
    hf_tokenizer: the text tower needs a Hugging Face tokenizer (package `transformers`, tokenizer files
        from a local model folder or the hub) instead of OpenAI's bundled BPE.
    build: the one construction hook, (spec, precision, device) -> the architecture with random weights
        (the weights, if any, are loaded into it afterwards by networks.clip.build_clip). The default builds
        open_clip's config `open_clip_name`; `tiny_clip(config)` a test CLIP from constructor arguments; any
        other callable a model of its own (e.g. the demo's colour-coded CLIP). A model that brings its own
        tokenizer sets the attribute `tokenizer`, its own dense form the attribute `dense_clip` (DenseCLIP).
    test_only: random weights are expected (no warning), e.g. the tiny test CLIPs.
    fixed_weights: the builder makes the finished model: `weights` must be 'random' (e.g. the demo's).
    """

    name: str
    open_clip_name: str
    image_size: int
    embed_dim: int
    tags: tuple[str, ...] = ()
    openai_file: Optional[str] = None
    quick_gelu: bool = False
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    dense: bool = False
    hf_tokenizer: bool = False
    index_resize: str = "crop"
    build: Callable[["ClipSpec", str, Union[str, torch.device]], nn.Module] = field(
        default=open_clip_architecture, compare=False)
    test_only: bool = False
    fixed_weights: bool = False

    @property
    def weights(self) -> str:
        """What `weights.clip` / `weights.dense_clip` should be, for errors and the README."""
        if self.fixed_weights:
            return f"'random' ({self.name} is built by its registry entry, with no weights file)"
        if self.test_only:
            return f"'random' for the test architecture '{self.name}' (or a checkpoint file made from it)"
        if self.openai_file is not None:
            return f"the OpenAI CLIP checkpoint {self.openai_file} or a state-dict file"
        return (f"a local folder holding open_clip's release of {self.open_clip_name} (open_clip_config.json, "
                "weights and tokenizer files, e.g. the Hugging Face repository timm/" + self.open_clip_name
                + ") or a state-dict file")


@dataclass(frozen=True)
class tiny_clip:  # noqa: N801  (used as a builder function: build=tiny_clip(config))
    """The builder of a test CLIP from CLIP constructor arguments (QuickGELU, as the OpenAI-style ones)."""

    config: Mapping[str, Any]

    def __call__(self, spec: ClipSpec, precision: str, device: Union[str, torch.device] = "cpu") -> nn.Module:
        return CLIP(**clip_config(spec), quick_gelu=True, cast_dtype=get_cast_dtype(precision))


def clip_config(spec: ClipSpec) -> Optional[dict[str, Any]]:
    """The CLIP constructor arguments an entry is built from (a copy): its tiny_clip config, or open_clip's
    config for the default builder; None for an entry with a builder of its own."""
    if isinstance(spec.build, tiny_clip):
        return copy.deepcopy(dict(spec.build.config))
    if spec.build is open_clip_architecture:
        return open_clip_config(spec.open_clip_name)
    return None


def _openai(name: str, open_clip_name: str, image_size: int, embed_dim: int, dense: bool = False) -> ClipSpec:
    return ClipSpec(name=name, open_clip_name=open_clip_name, image_size=image_size, embed_dim=embed_dim,
                    tags=("openai",), openai_file=name.replace("/", "-").replace("@", "-") + ".pt",
                    quick_gelu=True, dense=dense)


def _siglip(name: str, open_clip_name: str, image_size: int, embed_dim: int) -> ClipSpec:
    return ClipSpec(name=name, open_clip_name=open_clip_name, image_size=image_size, embed_dim=embed_dim,
                    tags=("webli",), mean=SIGLIP_MEAN, std=SIGLIP_STD, hf_tokenizer=True, index_resize="squash")


# Tiny CLIPs for tests and smoke runs. The text tower keeps the real vocabulary and context length so
# that the real BPE tokenizer works; widths are multiples of 64 because OpenAI-style state dicts
# encode the head count as width // 64 (open_clip infers it that way when reading an archive).
_TINY_TEXT = dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=2)
_TINY_VIT = dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8), text_cfg=_TINY_TEXT)
_TINY_RN = dict(embed_dim=32, vision_cfg=dict(image_size=64, layers=(1, 1, 1, 1), width=16), text_cfg=_TINY_TEXT)

_SPECS: tuple[ClipSpec, ...] = (
    _openai("ViT-L/14@336px", "ViT-L-14-336", 336, 768),
    _openai("ViT-L/14", "ViT-L-14", 224, 768),
    _openai("ViT-B/16", "ViT-B-16", 224, 512),
    _openai("ViT-B/32", "ViT-B-32", 224, 512),
    _openai("RN50", "RN50", 224, 1024, dense=True),
    _openai("RN101", "RN101", 224, 512, dense=True),
    _openai("RN50x4", "RN50x4", 288, 640, dense=True),
    _openai("RN50x16", "RN50x16", 384, 768, dense=True),
    _openai("RN50x64", "RN50x64", 448, 1024, dense=True),
    _siglip("ViT-B/16-SigLIP", "ViT-B-16-SigLIP", 224, 768),
    _siglip("ViT-B/16-SigLIP-384", "ViT-B-16-SigLIP-384", 384, 768),
    _siglip("ViT-L/16-SigLIP-384", "ViT-L-16-SigLIP-384", 384, 1024),
    _siglip("ViT-SO400M/14-SigLIP-384", "ViT-SO400M-14-SigLIP-384", 384, 1152),
    _siglip("ViT-B/16-SigLIP2", "ViT-B-16-SigLIP2", 224, 768),
    ClipSpec(name="tiny-vit-clip", open_clip_name="tiny-vit-clip", image_size=32, embed_dim=32,
             build=tiny_clip(_TINY_VIT), test_only=True),
    ClipSpec(name="tiny-rn-clip", open_clip_name="tiny-rn-clip", image_size=64, embed_dim=32, dense=True,
             build=tiny_clip(_TINY_RN), test_only=True),
)

CLIPS: Registry[ClipSpec] = Registry("CLIP", "CLIP architecture")


def register_clip(spec: ClipSpec, replace: bool = False) -> ClipSpec:
    """Add `spec` under `spec.name` (a second spec of the same name needs `replace`)."""
    return CLIPS.register(spec.name, spec, replace)


def unregister_clip(name: str) -> None:
    CLIPS.unregister(name)


def clip_names(dense: bool = False) -> tuple[str, ...]:
    """Registered names (only those usable as DenseCLIP with `dense`)."""
    return CLIPS.names(keep=(lambda spec: spec.dense) if dense else None)


def find_clip(name: str) -> Optional[ClipSpec]:
    """The spec registered as `name`, or whose open_clip name is `name`; None if there is none."""
    if name in CLIPS:
        return CLIPS[name]
    return next((spec for spec in CLIPS.values() if spec.open_clip_name == name), None)


def get_clip(name: str, dense: bool = False) -> ClipSpec:
    """The spec of `name` (paper or open_clip spelling), or a ValueError listing the known names."""
    spec = find_clip(name)
    if spec is None or (dense and not spec.dense):
        key = "DenseCLIP architecture (a ModifiedResNet CLIP)" if dense else CLIPS.key
        raise CLIPS.unknown(name, clip_names(dense), key)
    return spec


for _spec in _SPECS:
    register_clip(_spec)
