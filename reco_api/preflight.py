"""Before a ReCo run starts: every folder and weights file the run will need, checked at once.

A run that stops at the first missing path, and then at the next one after the user fixed it, costs a
round trip per key. `check_run_inputs` lists every missing or unset path of the run in one ConfigError
(the entry point prefixes it with the config file). Only what this run needs is asked for: the
collection and the retrieval CLIP only when some reference embedding must be computed, the benchmark
only for a benchmark run, DenseCLIP only when text attention or DenseCLIP inference is on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from networks.clip_registry import find_clip
from networks.encoder_registry import get_encoder
from networks.weights import RANDOM
from reco_api.collection import collection_of
from reco_api.reference_cache import FileReferenceCache, references_to_compute
from reco_api.settings import ReferenceSettings
from utils.config import ConfigError, shown_path

STAGES = ("index", "benchmark", "own_images")


def check_run_inputs(settings: ReferenceSettings, *, stage: str, dir_dataset: Optional[str] = None,
                     categories: Optional[Sequence[str]] = None, reference_pickle: Optional[Path] = None) -> None:
    """ConfigError listing every input of the run that is unset or missing (nothing when all are there).

    stage: "index" (only the collection's index), "benchmark" (evaluation / pseudo-masks / references;
    needs `dir_dataset`) or "own_images". categories: the class names whose reference embeddings the run
    needs (with the contexts); reference_pickle: the benchmark's reference pickle, which replaces retrieval.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    models, collection = settings.models, settings.collection
    problems: list[str] = []
    if stage == "benchmark":
        _need_dir("dir_dataset", dir_dataset, "the benchmark root", problems)
    needs_index = stage == "index" or (
        (reference_pickle is None or not reference_pickle.is_file()) and _references_to_compute(settings, categories))
    index_built = False
    if needs_index:
        if collection.collection_dir is not None:  # retrieval from an image folder instead of ImageNet
            if _need_dir("collection_dir", collection.collection_dir, "a folder of images", problems):
                index_built = _index_available(settings)
        elif _need_dir("dir_imagenet", collection.dir_imagenet, "the ImageNet root holding train/<wnid>/*.JPEG",
                       problems):
            index_built = _index_available(settings)
        if not index_built or stage != "index":  # text queries need the retrieval CLIP even with an index
            _need_weights(problems, "weights.clip", models.clip.weights, _clip_tags(models.clip.arch),
                          f"the {models.clip.arch} CLIP checkpoint")
    if stage != "index":
        encoder = get_encoder(models.encoder.arch)
        _need_weights(problems, "weights.encoder", models.encoder.weights, encoder.tags, encoder.weights)
        if models.text_attention or models.dense_clip_inference:
            _need_weights(problems, "weights.dense_clip", models.dense_clip.weights,
                          _clip_tags(models.dense_clip.arch), f"the {models.dense_clip.arch} CLIP checkpoint")
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} inputs of this run are missing:\n  " + "\n  ".join(problems))


def _need_dir(key: str, value: Optional[str], what: str, problems: list[str]) -> bool:
    if value is None:
        problems.append(f"{key}: not set (expected {what})")
        return False
    if not Path(value).expanduser().is_dir():
        problems.append(f"{key}: directory not found: {shown_path(value)}")
        return False
    return True


def _need_weights(problems: list[str], key: str, value: Optional[str], tags: Sequence[str], expected: str) -> None:
    """A weights value is 'random', a library tag or a file; only an unset value or an absent file is
    reported here (the builder reads the file and reports what is wrong inside it)."""
    if value is None or not str(value).strip():
        problems.append(f"{key}: not set (expected {expected})")
    elif value != RANDOM and value not in tags and not Path(value).expanduser().is_file():
        problems.append(f"{key}: file not found: {shown_path(value)} (expected {expected})")


def _clip_tags(arch: str) -> tuple[str, ...]:
    spec = find_clip(arch)
    return spec.tags if spec is not None else ()


def _index_available(settings: ReferenceSettings) -> bool:
    return collection_of(settings.collection, settings.models.clip.arch).index_available()


def _references_to_compute(settings: ReferenceSettings, categories: Optional[Sequence[str]]) -> bool:
    """True unless every needed reference embedding is in the per-category cache (or aliased to a context)."""
    if categories is None:
        return True
    names = list(dict.fromkeys(settings.contexts + list(categories)))
    return bool(references_to_compute(settings, names, FileReferenceCache(settings)))
