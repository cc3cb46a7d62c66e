"""CLIP models from open_clip (SPEC 1-3) and DenseCLIP, the CLIP ModifiedResNet used densely (SPEC 6).

Which CLIPs exist, and what each needs, is declared in `networks.clip_registry`. `build_clip` never
downloads unless `weights` is a library tag such as 'openai' (online use only); users give the OpenAI
TorchScript archives (ViT-L-14-336px.pt, RN50x16.pt), state-dict files, or open_clip model folders.
"""
from __future__ import annotations

import copy
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Union

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP, build_model_from_openai_state_dict, convert_weights_to_lp, get_cast_dtype
from open_clip.modified_resnet import ModifiedResNet
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from utils.config import ConfigError, resolve_clip_precision
from utils.io import describe_exception
from utils.normalisation import CLIP_MEAN, CLIP_STD

from .clip_registry import ClipSpec, get_clip
from .torchscript_reader import TorchScriptArchiveError, read_torchscript_state_dict
from .weights import (freeze, is_torchscript_archive, load_state_dict_file, load_strict, random_init, resolve_weights,
                      weights_source)

logger = logging.getLogger("reco.networks")

# Keys of OpenAI state dicts that are not parameters (open_clip drops them too).
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def build_clip(
    arch: str,
    weights: Optional[Union[str, os.PathLike]],
    device: Union[str, torch.device] = "cpu",
    precision: str = "fp32",
    key: str = "weights.clip",
) -> tuple[nn.Module, Callable[[list[str]], torch.Tensor]]:
    """An open_clip CLIP (image and text towers, eval mode, frozen) and its tokenizer.

    arch: a registered name ('ViT-L/14@336px', 'RN50x16', 'ViT-B/16-SigLIP', ...) or its open_clip name.
    weights: an OpenAI TorchScript archive (its state dict read without running its code, QuickGELU), a
        plain state-dict file (loaded strictly), a folder holding an open_clip release (open_clip_config.json,
        weights, tokenizer files), one of the spec's open_clip pretrained tags such as 'openai' (downloads;
        online only), or 'random' (from the seed torch was seeded with: see `random_init`). `key` is the
        config key named in errors.
    precision: 'fp32', 'fp16', 'bf16' or 'auto' (fp16 on CUDA, as the original `clip.load`; else fp32).
    """
    spec = get_clip(arch)
    device = torch.device(device)
    precision = resolve_clip_precision(precision, device.type)
    source, folder = weights_source(weights)
    if source == "folder":
        model = _from_folder(spec, folder, device, precision, key)
        return freeze(model), _tokenizer_of(spec, key, model=model, folder=folder)
    kind, value = resolve_weights(weights, key, spec.weights, spec.tags)

    if spec.fixed_weights:
        _only_random(kind, key, spec.name)
        model = spec.build(spec, precision, device)
        return freeze(model.to(device)), _tokenizer_of(spec, key, model=model)
    if kind == "random":
        if not spec.test_only:
            logger.warning("%s: building %s with RANDOM weights (tests only)", key, arch)
        with random_init(spec.name):
            model = _finalise(spec.build(spec, precision, "cpu"), device, precision)
    elif kind == "tag":
        model = _from_tag(spec, str(value), device, precision, key)
    elif is_torchscript_archive(value):
        model = _from_openai_archive(Path(value), device, precision, key)
        _check_architecture(model, spec, key, value)
    else:
        model = spec.build(spec, precision, "cpu")
        load_strict(model, load_state_dict_file(value, key), key, value, ignore=_OPENAI_EXTRA_KEYS)
        model = _finalise(model, device, precision)
    return freeze(model), _tokenizer_of(spec, key, model=model)


def _only_random(kind: str, key: str, arch: str) -> None:
    if kind != "random":
        raise ConfigError(f"{key}: {arch} is built by its registry entry and takes no weights; set {key}: random")


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
    spec = get_clip(arch)
    if spec.openai_file is None:
        raise ValueError(f"{arch} has no OpenAI release")
    return spec.openai_file


def clip_normalisation(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the image tower of `arch` expects (CLIP's for OpenAI models, 0.5s for SigLIP)."""
    spec = get_clip(arch)
    return tuple(spec.mean), tuple(spec.std)


def clip_input_adapter(arch: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """images (B, 3, S, S) normalised with CLIP's statistics (the index pipeline's) -> normalised with
    those `arch` expects. The identity (the very tensor) for OpenAI CLIPs, so their index is unchanged."""
    mean, std = clip_normalisation(arch)
    if (mean, std) == (tuple(CLIP_MEAN), tuple(CLIP_STD)):
        return lambda images: images
    clip_mean, clip_std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    scale = clip_std / torch.tensor(std).view(1, 3, 1, 1)
    shift = (clip_mean - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return lambda images: images * scale.to(images) + shift.to(images)


class DenseCLIP(nn.Module):
    """A CLIP ModifiedResNet applied densely (SPEC 6): (B, 3, H, W) -> (B, D, h, w), stride 32.

    The attention pool is replaced by its value projection then output projection, applied at every
    location as 1x1 convolutions. Always runs in fp32: a non-fp32 tower (e.g. fp16 on GPU) is copied
    and converted, leaving the CLIP model it came from untouched; an fp32 tower is shared, not copied.
    Frozen: eval mode (BatchNorm running statistics) whatever `train()` is asked.
    Input: ImageNet-normalised images (SPEC 6/15.7: the original does not use CLIP normalisation).
    """

    stride = 32

    def __new__(cls, clip_model: nn.Module) -> nn.Module:
        # A CLIP built by its registry entry's own builder (networks.clip_registry.ClipSpec.build) may bring its own
        # dense form; it is used as-is (then __init__ does not run: it is not a DenseCLIP instance).
        own = getattr(clip_model, "dense_clip", None)
        return own if isinstance(own, nn.Module) else super().__new__(cls)

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


def _finalise(model: CLIP, device: torch.device, precision: str) -> CLIP:
    """Move to `device` and cast like open_clip does (low precision: conv/linear/attention weights only)."""
    model = model.to(device)
    if precision == "fp32":
        return model.float()
    convert_weights_to_lp(model, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
    return model


def _from_openai_archive(path: Path, device: torch.device, precision: str, key: str) -> CLIP:
    """An OpenAI release (a TorchScript archive) rebuilt from its state dict, as open_clip's loader does
    after torch.jit.load, but read by networks.torchscript_reader: none of the archive's code runs."""
    try:
        state_dict = read_torchscript_state_dict(path)
    except TorchScriptArchiveError as error:
        raise ConfigError(f"{key}: {path}: {error}") from None
    try:
        model = build_model_from_openai_state_dict(dict(state_dict), quick_gelu=True,
                                                   cast_dtype=get_cast_dtype(precision))
    except (KeyError, RuntimeError, AssertionError, ValueError, IndexError) as error:
        raise ConfigError(f"{key}: cannot load {path} as an OpenAI CLIP checkpoint "
                          f"({describe_exception(error)})") from None
    model = model.to(device)
    if precision != "fp16":  # the archive's weights are partly fp16: fp32 everywhere, then bf16 if asked
        model.float()
        if precision == "bf16":
            convert_weights_to_lp(model, dtype=torch.bfloat16)
    model.visual.image_mean, model.visual.image_std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    return model


def _from_tag(spec: ClipSpec, tag: str, device: torch.device, precision: str, key: str) -> nn.Module:
    try:
        return open_clip.create_model(
            spec.open_clip_name, pretrained=tag, precision=precision, device=device, force_quick_gelu=spec.quick_gelu
        )
    except Exception as error:
        raise ConfigError(
            f"{key}: could not get the '{tag}' weights of {spec.name} through open_clip (the download failed: "
            f"{type(error).__name__}: {error}). Set {key} to a local file instead: {spec.weights}"
        ) from error


def _from_folder(spec: ClipSpec, folder: Path, device: torch.device, precision: str, key: str) -> nn.Module:
    """An open_clip release folder (open_clip_config.json + weights), loaded by open_clip offline."""
    if not (folder / "open_clip_config.json").is_file():
        raise ConfigError(f"{key}: {folder} is a folder but holds no open_clip_config.json (expected {spec.weights})")
    try:
        return open_clip.create_model(f"local-dir:{folder}", precision=precision, device=device,
                                      force_quick_gelu=spec.quick_gelu)
    except Exception as error:
        raise ConfigError(f"{key}: cannot load the open_clip model folder {folder}: {error}") from error


def _check_architecture(model: CLIP, spec: ClipSpec, key: str, path: Any) -> None:
    """An archive defines its own architecture; make sure it is the configured one (shapes only)."""
    arch = spec.name
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in spec.build(spec, "fp32", "meta").state_dict().items()}
    found = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if expected != found:
        differing = sorted(set(expected) ^ set(found)) or [n for n in expected if expected[n] != found[n]]
        example = differing[0]
        raise ConfigError(
            f"{key}: {path} holds a CLIP that is not {arch!r} (e.g. {example}: file "
            f"{found.get(example, 'absent')} vs {arch} {expected.get(example, 'absent')})"
        )


def _tokenizer_of(spec: ClipSpec, key: str, model: nn.Module,
                  folder: Optional[Path] = None) -> Callable[[list[str]], torch.Tensor]:
    """The model's own tokenizer if its builder gave it one; else OpenAI's BPE (bundled with open_clip,
    offline) at the model's context length or, for SigLIP-class text towers, the Hugging Face tokenizer of
    the model folder (offline) or of the hub (online), which needs `transformers`."""
    own = getattr(model, "tokenizer", None)
    if own is not None and not isinstance(own, nn.Module):
        return own
    if not spec.hf_tokenizer:
        return _bpe_tokenizer(int(getattr(model, "context_length", 77)))
    try:
        import transformers  # noqa: F401  (open_clip's HFTokenizer imports it lazily)
    except ImportError:
        raise ConfigError(f"{key}: {spec.name} tokenizes text with a Hugging Face tokenizer: "
                          "pip install transformers") from None
    name = f"local-dir:{folder}" if folder is not None else spec.open_clip_name
    try:
        return open_clip.get_tokenizer(name)
    except Exception as error:
        raise ConfigError(f"{key}: cannot load the tokenizer of {spec.name} ({name}): {error}. Give a local "
                          "open_clip model folder that holds the tokenizer files") from error


@lru_cache(maxsize=4)
def _bpe_tokenizer(context_length: int) -> SimpleTokenizer:
    return SimpleTokenizer(context_length=context_length)
