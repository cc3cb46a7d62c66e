"""Where a network's weights come from, and strict, well-reported loading of local checkpoint files.

A `weights` config value is one of: a local file path, a library pretrained tag (e.g. 'openai'; only
honoured where the caller lists it as valid, and only works online), or the literal 'random'.
Every failure is a `ConfigError` naming the config key and the path, so a user can fix the YAML.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, Optional, Union

import torch
from torch import nn

from utils.config import ConfigError
from utils.io import describe_exception

RANDOM = "random"
WeightsKind = Literal["random", "file", "tag"]
WeightsSource = Literal["unset", "random", "file", "folder", "missing_file", "tag"]
# A value that is not an existing file is read as a (missing) file path when it has one of these
# suffixes or a directory separator, and as a library tag otherwise (tags are bare words: 'openai').
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt", ".safetensors")


@contextmanager
def random_init(arch: str) -> Iterator[None]:
    """Build a network with 'random' weights inside this: its weights are a function of the seed torch was
    last seeded with (a run's `seed`, through `seed_everything`) and of `arch`, not of how many random
    numbers were drawn since. Models are built lazily (DenseCLIP only when a reference is computed), so
    without this two runs of one setting could get two different random models, and a run that reads
    cached references would disagree with the run that computed them. The global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((torch.initial_seed() + zlib.crc32(arch.encode())) % 2**63)
        yield


def weights_source(weights: Optional[Union[str, os.PathLike]]) -> tuple[WeightsSource, Optional[Union[Path, str]]]:
    """Classify a `weights` value without checking it against a library's tags (never raises).

    ('unset', None), ('random', None), ('file', Path) for an existing file, ('folder', Path) for an existing
    directory (an open_clip release folder), ('missing_file', Path) for a path-like value that is not there,
    or ('tag', value).
    """
    if weights is None or (isinstance(weights, str) and not weights.strip()):
        return "unset", None
    value = os.fspath(weights).strip()
    if value == RANDOM:
        return "random", None
    path = Path(value).expanduser()
    if path.is_file():
        return "file", path
    if path.is_dir():
        return "folder", path
    if path.exists() or path.suffix.lower() in CHECKPOINT_SUFFIXES or "/" in value or os.sep in value \
            or value.startswith(("~", ".")):
        return "missing_file", path
    return "tag", value


def resolve_weights(
    weights: Optional[Union[str, os.PathLike]],
    key: str,
    expected: str,
    tags: Sequence[str] = (),
) -> tuple[WeightsKind, Optional[Union[Path, str]]]:
    """Classify a `weights` value: ('random', None), ('file', Path) or ('tag', tag).

    A path that exists is always a file (even if it is spelled like a tag); a value that is neither an
    existing file, a tag in `tags`, nor 'random' is reported as a missing file, naming `key`.
    `expected` describes what belongs there (e.g. "the OpenAI checkpoint RN50x16.pt").
    """
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ConfigError(f"{key}: expected a file path, a pretrained tag or 'random', got {weights!r}")
    source, value = weights_source(weights)
    if source == "unset":
        raise ConfigError(f"{key}: not set in the config (expected {expected})")
    if source in ("random", "file"):
        return source, value
    text = os.fspath(weights).strip()
    path = Path(text).expanduser()
    if path.exists():
        raise ConfigError(f"{key}: not a file: {path} (expected {expected})")
    if text in tags:
        return "tag", text
    hint = f"; or one of the library tags {list(tags)} (online only)" if tags else ""
    raise ConfigError(f"{key}: file not found: {path} (expected {expected}{hint})")


def is_torchscript_archive(path: Union[str, os.PathLike]) -> bool:
    """True for a TorchScript zip archive (e.g. OpenAI's RN50x16.pt): it carries compiled code.

    A plain `torch.save` file is also a zip, but has no `code/` folder and no `constants.pkl`.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def refuse_torchscript_archive(path: Union[str, os.PathLike], key: str, expected: str) -> None:
    """One ConfigError naming `key` and the file when `path` is a TorchScript archive: it carries code,
    and only the OpenAI CLIP releases are read from one (networks.torchscript_reader, nothing run)."""
    if is_torchscript_archive(path):
        raise ConfigError(f"{key}: {path} is a TorchScript archive (it carries code), not loaded; "
                          f"expected {expected}")


def load_state_dict_file(
    path: Union[str, os.PathLike],
    key: str,
    nested_keys: Sequence[str] = ("model", "state_dict"),
) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (weights_only, or a .safetensors file) and return its state dict.

    Accepts a bare state dict or one nested under one of `nested_keys` (e.g. DeiT's {"model": sd},
    open_clip training checkpoints' {"state_dict": sd}); a common 'module.' prefix (DDP) is removed.
    """
    refuse_torchscript_archive(path, key, "a state-dict file written by torch.save")
    try:
        if Path(path).suffix == ".safetensors":  # the format of timm / Hugging Face hub releases
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling / zip errors come in many types
        raise ConfigError(f"{key}: cannot read {path} as a PyTorch checkpoint ({describe_exception(error)}); "
                          f"expected a file written by torch.save") from error
    if isinstance(obj, Mapping) and not _all_tensors(obj):
        for nested in nested_keys:
            if isinstance(obj.get(nested), Mapping):
                obj = obj[nested]
                break
    if not isinstance(obj, Mapping) or not obj or not _all_tensors(obj):
        raise ConfigError(
            f"{key}: {path} does not hold a state dict (a mapping of names to tensors, bare or under "
            f"one of the keys {list(nested_keys)})"
        )
    state_dict = dict(obj)
    if all(name.startswith("module.") for name in state_dict):
        state_dict = {name[len("module."):]: value for name, value in state_dict.items()}
    return state_dict


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    key: str,
    path: Union[str, os.PathLike],
    ignore: Sequence[str] = (),
    max_listed: int = 10,
) -> None:
    """`module.load_state_dict(state_dict, strict=True)` with one readable error on any mismatch.

    The error lists missing keys, unexpected keys and shape mismatches (up to `max_listed` of each).
    Keys in `ignore` are dropped from `state_dict` first (e.g. OpenAI's 'input_resolution').
    """
    ignored = set(ignore)
    state_dict = {name: value for name, value in state_dict.items() if name not in ignored}
    own = module.state_dict()
    missing = [name for name in own if name not in state_dict]
    unexpected = [name for name in state_dict if name not in own]
    mismatched = [
        f"{name}: file {tuple(state_dict[name].shape)} vs model {tuple(own[name].shape)}"
        for name in own
        if name in state_dict and state_dict[name].shape != own[name].shape
    ]
    problems = []
    for label, names in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if names:
            listed = ", ".join(names[:max_listed]) + (f", ... ({len(names)} in all)" if len(names) > max_listed else "")
            problems.append(f"{label}: {listed}")
    if problems:
        raise ConfigError(
            f"{key}: {path} does not match the {type(module).__name__} architecture; " + "; ".join(problems)
        )
    module.load_state_dict(state_dict, strict=True)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients (all networks here are frozen feature extractors)."""
    module.eval()
    module.requires_grad_(False)
    return module


def _all_tensors(mapping: Mapping) -> bool:
    return all(isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in mapping.items())
