"""CLIP models from open_clip (SPEC 1-3) and DenseCLIP, the CLIP ModifiedResNet used densely (SPEC 6).

`build_clip` never downloads unless `weights` is a library tag such as 'openai' (online use only);
users give the OpenAI TorchScript archives (ViT-L-14-336px.pt, RN50x16.pt) as local files.
"""
from __future__ import annotations

import copy
import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, convert_weights_to_lp, get_cast_dtype
from open_clip.modified_resnet import ModifiedResNet
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from utils.config import ConfigError
from utils.io import describe_exception

from .weights import freeze, is_torchscript_archive, load_state_dict_file, load_strict, resolve_weights

logger = logging.getLogger("reco.networks")

# Paper / OpenAI `clip` names -> open_clip config names (open_clip names are accepted as well).
CLIP_ARCHS = {
    "ViT-L/14@336px": "ViT-L-14-336",
    "ViT-L/14": "ViT-L-14",
    "ViT-B/16": "ViT-B-16",
    "ViT-B/32": "ViT-B-32",
    "RN50": "RN50",
    "RN101": "RN101",
    "RN50x4": "RN50x4",
    "RN50x16": "RN50x16",
    "RN50x64": "RN50x64",
}

# Tiny CLIPs for tests and smoke runs. The text tower keeps the real vocabulary and context length so
# that the real BPE tokenizer works; widths are multiples of 64 because OpenAI-style state dicts
# encode the head count as width // 64 (open_clip infers it that way when reading an archive).
_TINY_TEXT = dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=2)
TINY_CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny-vit-clip": dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8),
                          text_cfg=_TINY_TEXT),
    "tiny-rn-clip": dict(embed_dim=32, vision_cfg=dict(image_size=64, layers=(1, 1, 1, 1), width=16),
                         text_cfg=_TINY_TEXT),
}

# Keys of OpenAI state dicts that are not parameters (open_clip drops them too).
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def build_clip(
    arch: str,
    weights: Optional[Union[str, os.PathLike]],
    device: Union[str, torch.device] = "cpu",
    precision: str = "fp32",
    key: str = "weights.clip",
) -> tuple[CLIP, SimpleTokenizer]:
    """An open_clip CLIP (image and text towers, eval mode, frozen) and its BPE tokenizer.

    arch: paper name ('ViT-L/14@336px', 'RN50x16', ...), open_clip name, or 'tiny-vit-clip' / 'tiny-rn-clip'.
    weights: an OpenAI TorchScript archive (loaded by open_clip.openai.load_openai_model, QuickGELU), a
        plain state-dict file (loaded strictly into the QuickGELU architecture), an open_clip pretrained
        tag such as 'openai' (downloads; online only; not for tiny archs), or 'random' (seeded by torch's
        current RNG). `key` is the config key named in errors ('weights.clip', 'weights.dense_clip').
    precision: 'fp32', 'fp16', 'bf16' or 'auto' (fp16 on CUDA, as the original `clip.load`; else fp32).
    """
    name, config = _arch_config(arch)
    tiny = arch in TINY_CLIP_CONFIGS
    device = torch.device(device)
    precision = _resolve_precision(precision, device)
    if tiny:
        expected = f"'random' for the test architecture '{arch}' (or a checkpoint file made from it)"
        tags: list[str] = []
    else:
        expected = f"the OpenAI CLIP checkpoint {openai_checkpoint_name(arch)} or a state-dict file"
        tags = open_clip.list_pretrained_tags_by_model(name)
    kind, value = resolve_weights(weights, key, expected, tags)

    if kind == "random":
        if not tiny:
            logger.warning("%s: building %s with RANDOM weights (tests only)", key, arch)
        model = _finalise(_new_clip(config, precision), device, precision)
    elif kind == "tag":
        model = _from_tag(arch, name, str(value), device, precision, key)
    elif is_torchscript_archive(value):
        model = _from_openai_archive(Path(value), device, precision, key)
        _check_architecture(model, config, arch, key, value)
    else:
        model = _new_clip(config, precision)
        load_strict(model, load_state_dict_file(value, key), key, value, ignore=_OPENAI_EXTRA_KEYS)
        model = _finalise(model, device, precision)
    return freeze(model), _tokenizer(int(model.context_length))


def clip_image_size(clip_model: nn.Module) -> int:
    """Native input size of a CLIP image tower (336 for ViT-L/14@336px, 384 for RN50x16)."""
    size = getattr(getattr(clip_model, "visual", clip_model), "image_size", None)
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"non-square CLIP image size {tuple(size)}")
        size = size[0]
    if not isinstance(size, int):
        raise ValueError(f"{type(clip_model).__name__} has no CLIP image tower with an image_size")
    return size


def openai_checkpoint_name(arch: str) -> str:
    """File name of the OpenAI release of `arch`, e.g. 'ViT-L/14@336px' -> 'ViT-L-14-336px.pt'."""
    paper = next((paper for paper, name in CLIP_ARCHS.items() if arch in (paper, name)), arch)
    return paper.replace("/", "-").replace("@", "-") + ".pt"


class DenseCLIP(nn.Module):
    """A CLIP ModifiedResNet applied densely (SPEC 6): (B, 3, H, W) -> (B, D, h, w), stride 32.

    The attention pool is replaced by its value projection then output projection, applied at every
    location as 1x1 convolutions. Always runs in fp32: a non-fp32 tower (e.g. fp16 on GPU) is copied
    and converted, leaving the CLIP model it came from untouched; an fp32 tower is shared, not copied.
    Frozen: eval mode (BatchNorm running statistics) whatever `train()` is asked.
    Input: ImageNet-normalised images (SPEC 6/15.7: the original does not use CLIP normalisation).
    """

    stride = 32

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        visual = getattr(clip_model, "visual", clip_model)
        if not isinstance(visual, ModifiedResNet):
            raise ValueError(
                f"DenseCLIP needs a CLIP with a ModifiedResNet image tower (RN50, RN50x16, RN50x64, "
                f"tiny-rn-clip), got {type(visual).__name__}"
            )
        tensors = list(visual.parameters()) + list(visual.buffers())
        if any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors):
            visual = copy.deepcopy(visual).float()
        self.visual = freeze(visual)
        self.embed_dim: int = visual.attnpool.c_proj.out_features
        self.eval()

    def train(self, mode: bool = True) -> "DenseCLIP":
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, D, h, w), h = floor(ceil(H/2)/16) (224 -> 7, 375 -> 11, 1242 -> 38)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"DenseCLIP expects images (B, 3, H, W), got {tuple(images.shape)}")
        v = self.visual
        x = images.float()
        x = v.act1(v.bn1(v.conv1(x)))
        x = v.act2(v.bn2(v.conv2(x)))
        x = v.act3(v.bn3(v.conv3(x)))
        x = v.avgpool(x)
        x = v.layer4(v.layer3(v.layer2(v.layer1(x))))
        pool = v.attnpool
        x = F.conv2d(x, pool.v_proj.weight[:, :, None, None], pool.v_proj.bias)
        return F.conv2d(x, pool.c_proj.weight[:, :, None, None], pool.c_proj.bias)


def _arch_config(arch: str) -> tuple[str, dict[str, Any]]:
    """(open_clip name or tiny name, CLIP constructor kwargs) for `arch`."""
    if arch in TINY_CLIP_CONFIGS:
        return arch, copy.deepcopy(TINY_CLIP_CONFIGS[arch])
    name = CLIP_ARCHS.get(arch, arch)
    if name not in CLIP_ARCHS.values():
        known = list(CLIP_ARCHS) + list(TINY_CLIP_CONFIGS)
        raise ValueError(f"unknown CLIP architecture {arch!r}; known: {known}")
    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"open_clip {open_clip.__version__} has no config for {name!r}")
    config.pop("quick_gelu", None)
    return name, config


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32', 'fp16' or 'bf16', got {precision!r}")
    return precision


def _new_clip(config: dict[str, Any], precision: str) -> CLIP:
    # QuickGELU always: every supported architecture's weights are OpenAI's, trained with it.
    return CLIP(**config, quick_gelu=True, cast_dtype=get_cast_dtype(precision))


def _finalise(model: CLIP, device: torch.device, precision: str) -> CLIP:
    """Move to `device` and cast like open_clip does (low precision: conv/linear/attention weights only)."""
    model = model.to(device)
    if precision == "fp32":
        return model.float()
    convert_weights_to_lp(model, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
    return model


def _from_openai_archive(path: Path, device: torch.device, precision: str, key: str) -> CLIP:
    try:
        with warnings.catch_warnings():
            # torch.jit.load is deprecated, but it is the only reader of OpenAI's archives.
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*")
            return open_clip.openai.load_openai_model(str(path), precision=precision, device=str(device))
    except Exception as error:
        raise ConfigError(f"{key}: cannot load {path} as an OpenAI CLIP checkpoint "
                          f"({describe_exception(error)})") from error


def _from_tag(arch: str, name: str, tag: str, device: torch.device, precision: str, key: str) -> CLIP:
    try:
        return open_clip.create_model(
            name, pretrained=tag, precision=precision, device=device, force_quick_gelu=(tag == "openai")
        )
    except Exception as error:
        raise ConfigError(
            f"{key}: could not get the '{tag}' weights of {arch} through open_clip (the download failed: "
            f"{type(error).__name__}: {error}). Set {key} to a local file instead, "
            f"e.g. the OpenAI checkpoint {openai_checkpoint_name(arch)}"
        ) from error


def _check_architecture(model: CLIP, config: dict[str, Any], arch: str, key: str, path: Any) -> None:
    """An archive defines its own architecture; make sure it is the configured one (shapes only)."""
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in CLIP(**config, quick_gelu=True).state_dict().items()}
    found = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if expected != found:
        differing = sorted(set(expected) ^ set(found)) or [n for n in expected if expected[n] != found[n]]
        example = differing[0]
        raise ConfigError(
            f"{key}: {path} holds a CLIP that is not {arch!r} (e.g. {example}: file "
            f"{found.get(example, 'absent')} vs {arch} {expected.get(example, 'absent')})"
        )


@lru_cache(maxsize=4)
def _tokenizer(context_length: int) -> SimpleTokenizer:
    # OpenAI's BPE, bundled with open_clip (offline); the same for every supported CLIP.
    return SimpleTokenizer(context_length=context_length)
