"""Before a ReCo run starts: every folder and weights file the run will need, checked at once.

A run that stops at the first missing path, and then at the next one after the user fixed it, costs a
round trip per key. `check_run_inputs` lists every missing or unset path of the run in one ConfigError
(the entry point prefixes it with the config file). Only what this run needs is asked for: ImageNet and
the retrieval CLIP only when some reference embedding must be computed, the benchmark only for a
benchmark run, DenseCLIP only when text attention or DenseCLIP inference is on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from networks.clip_registry import find_clip
from networks.encoder_registry import get_encoder
from networks.weights import RANDOM
from utils.config import ConfigError, RecoConfig


def check_run_inputs(config: RecoConfig, *, stage: str, categories: Optional[Sequence[str]] = None,
                     reference_pickle: Optional[Path] = None) -> None:
    """ConfigError listing every input of the run that is unset or missing (nothing when all are there).

    stage: "index" (only the ImageNet index), "benchmark" (evaluation / pseudo-masks / references) or
    "own_images". categories: the class names whose reference embeddings the run needs (with the
    config's contexts); reference_pickle: the benchmark's reference pickle, which replaces retrieval.
    """
    problems: list[str] = []
    if stage == "benchmark":
        _need_dir(config, "dir_dataset", "the benchmark root", problems)
    needs_index = stage == "index" or (
        (reference_pickle is None or not reference_pickle.is_file()) and _references_to_compute(config, categories))
    index_built = False
    if needs_index:
        if config.collection_dir is not None:  # retrieval from an image folder instead of ImageNet
            if _need_dir(config, "collection_dir", "a folder of images", problems):
                index_built = _index_available(config)
        elif _need_dir(config, "dir_imagenet", "the ImageNet root holding train/<wnid>/*.JPEG", problems):
            index_built = _index_available(config)
        if not index_built or stage != "index":  # text queries need the retrieval CLIP even with an index
            _need_weights(problems, "weights.clip", config.weights.clip, _clip_tags(config.clip_arch),
                          f"the {config.clip_arch} CLIP checkpoint")
    if stage != "index":
        encoder = get_encoder(config.encoder_arch)
        _need_weights(problems, "weights.encoder", config.weights.encoder, encoder.tags, encoder.weights)
        if config.text_attention or config.dense_clip_inference:
            _need_weights(problems, "weights.dense_clip", config.weights.dense_clip,
                          _clip_tags(config.dense_clip_arch), f"the {config.dense_clip_arch} CLIP checkpoint")
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} inputs of this run are missing:\n  " + "\n  ".join(problems))


def _need_dir(config: RecoConfig, key: str, what: str, problems: list[str]) -> bool:
    value = getattr(config, key)
    if value is None:
        problems.append(f"{key}: not set (expected {what})")
        return False
    if not Path(value).expanduser().is_dir():
        problems.append(f"{key}: directory not found: {Path(value).expanduser()}")
        return False
    return True


def _need_weights(problems: list[str], key: str, value: Optional[str], tags: Sequence[str], expected: str) -> None:
    """A weights value is 'random', a library tag or a file; only an unset value or an absent file is
    reported here (the builder reads the file and reports what is wrong inside it)."""
    if value is None or not str(value).strip():
        problems.append(f"{key}: not set (expected {expected})")
    elif value != RANDOM and value not in tags and not Path(value).expanduser().is_file():
        problems.append(f"{key}: file not found: {Path(value).expanduser()} (expected {expected})")


def _clip_tags(arch: str) -> tuple[str, ...]:
    spec = find_clip(arch)
    return spec.tags if spec is not None else ()


def _index_available(config: RecoConfig) -> bool:
    from entry.collection import collection_of

    return collection_of(config).index_exists()


def _references_to_compute(config: RecoConfig, categories: Optional[Sequence[str]]) -> bool:
    """True unless every needed reference embedding is in the per-category cache (or aliased to a context)."""
    if categories is None:
        return True
    from entry.reference_cache import FileReferenceCache, reference_cache_root, references_to_compute
    from entry.reference_setting import used_contexts

    names = list(dict.fromkeys(used_contexts(config) + list(categories)))
    return bool(references_to_compute(config, names, FileReferenceCache(reference_cache_root(config), config)))
