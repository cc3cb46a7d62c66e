"""Reference embeddings of class names: retrieval from the collection's index, co-segmentation, and the
per-category cache (SPEC 4, 7). A missing index is reported (IndexNotFoundError), never built here:
building it is a stage of the program (entry/reco_index.py)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

from datasets import imagenet
from reco.references import compute_reference_embeddings
from reco.retrieval import ExactRows, retrieve_top_k
from reco_api.collection import Collection, check_index_weights, collection_of
from reco_api.models import DenseClipModels, build_retrieval_clip, clip_precision
from reco_api.reference_cache import FileReferenceCache, references_to_compute
from reco_api.settings import ReferenceSettings
from reco_api.text_cache import TextEmbeddings
from utils import timing
from utils.config import ConfigError
from utils.device import cpu_has_fast_bf16

logger = logging.getLogger("reco")

RetrievalClip = Callable[[], tuple[nn.Module, Callable]]
QueryEmbeddings = Callable[[Sequence[str]], torch.Tensor]  # names -> (N, D) retrieval queries


def compute_references(
    settings: ReferenceSettings,
    categories: Sequence[str],
    device: torch.device,
    encoder: nn.Module,
    dense: Optional[DenseClipModels],
    on_reference: Optional[Callable[[str, torch.Tensor, torch.Tensor], None]] = None,
    retrieval_text: Optional[QueryEmbeddings] = None,
    progress: Optional[Callable[[Iterable, str], Iterable]] = None,
) -> dict[str, torch.Tensor]:
    """Retrieve k images per category and co-segment them (SPEC 4, 7), with the file caches.

    Only the names whose reference is in no cache are retrieved and co-segmented, and only their text is
    embedded (the text embeddings are cached too). `retrieval_text(names)` gives the retrieval queries when
    they are kept across calls (the Python API: `retrieval_text_embeddings`); by default the retrieval
    CLIP is built for the names in no text cache and dropped. `progress(items, desc)` wraps the loops over
    categories (default: tqdm bars). IndexNotFoundError when a reference must be computed and the
    collection has no index.
    """
    contexts = settings.contexts
    text_attention = dense is not None and settings.models.text_attention
    cache = FileReferenceCache(settings)
    names = list(dict.fromkeys(contexts + list(categories)))
    missing = references_to_compute(settings, names, cache)
    paths: dict[str, list[Path]] = {}
    queries = retrieval_text or retrieval_text_embeddings(settings, device)
    if missing:
        with timing.stage("retrieval", log=True):
            paths = retrieve(settings, missing, device, queries)

    def retrieve_images(name: str) -> torch.Tensor:
        if name not in paths:  # cached when checked, but the entry became unreadable since
            paths.update(retrieve(settings, [name], device, queries))
        return load_images(paths[name]).to(device)

    if text_attention and missing:  # in one pass; a name found unreadable later is embedded then
        with timing.stage("text", log=True):
            dense.embed_text(missing)
    bars = progress or (lambda items, desc: tqdm(items, desc=f"co-segmenting {desc}", unit="category"))
    with timing.stage("co-segmentation", log=True):
        return compute_reference_embeddings(
            categories,
            retrieve_images,
            encoder,
            dense_clip=dense.dense_clip if text_attention else None,
            text_embedding=(lambda n: dense.embed_text([n])[0]) if text_attention else None,
            context_categories=contexts,
            aliases=settings.aliases,
            reproduce_slice_bug=settings.reproduce_seed_slice_bug,
            cache=cache,
            on_reference=on_reference,
            progress=lambda items, desc: _timed_per_category(bars(items, desc)),
        )


def references_need_retrieval(settings: ReferenceSettings, categories: Sequence[str]) -> bool:
    """True unless every reference of `categories` (and of the contexts) is cached or aliased."""
    names = list(dict.fromkeys(settings.contexts + list(categories)))
    return bool(references_to_compute(settings, names, FileReferenceCache(settings)))


def _timed_per_category(items: Iterable) -> Iterator:
    """Yield the categories of a co-segmentation loop, recording the time spent on each (timings.json)."""
    for item in items:
        start = time.perf_counter()
        yield item
        seconds = time.perf_counter() - start
        timer = timing.current()
        if timer is not None:
            timer.add_item("co-segmentation", str(item), seconds)
        if seconds > 0.05:  # cached categories take no time: only those co-segmented are logged
            logger.info("co-segmented %s in %.2f s", item, seconds)


def retrieval_collection(settings: ReferenceSettings) -> Collection:
    """The collection references are retrieved from, indexed by the retrieval CLIP."""
    return collection_of(settings.collection, settings.models.clip.arch)


def retrieval_text_embeddings(settings: ReferenceSettings, device: torch.device,
                              retrieval_clip: Optional[RetrievalClip] = None) -> TextEmbeddings:
    """The retrieval queries of names: the retrieval CLIP's text embeddings, cached beside the references.

    `retrieval_clip()` gives the CLIP and its tokenizer when one is kept loaded (the Python API); by
    default it is built for the names in no cache and dropped once they are embedded.
    """
    def load() -> tuple[nn.Module, Callable]:
        with timing.stage("models"):
            return (retrieval_clip or (lambda: build_retrieval_clip(settings.models, device)))()

    models = settings.models
    return TextEmbeddings(models.clip, clip_precision(models.clip_precision, device), load, "retrieval",
                          settings.cache_root, device)


def retrieve(settings: ReferenceSettings, names: Sequence[str], device: torch.device,
             retrieval_text: Optional[QueryEmbeddings] = None) -> dict[str, list[Path]]:
    """Top-k image paths of the retrieval collection (ImageNet or collection_dir) for each name, by CLIP
    text-to-image similarity on its index (IndexNotFoundError when there is none)."""
    collection = retrieval_collection(settings)
    collection.require_index()
    check_index_size(settings)
    check_index_weights(collection, settings.models.clip, settings.hash_memo)  # before the text is embedded
    with timing.stage("text", log=True):
        queries = (retrieval_text or retrieval_text_embeddings(settings, device))(list(names))
    index = collection.load_index(expected_dim=queries.shape[1])
    if len(index.filenames) < settings.n_imgs:
        raise ConfigError(f"n_imgs: {settings.n_imgs} images asked for but the index at {index.directory} holds "
                          f"{len(index.filenames)}")
    exact = None
    if index.float32_rows is not None:  # a converted pickle whose float32 values float16 cannot hold
        bounds = index.meta["float32_rows"]
        exact = ExactRows(index.float32_rows, bounds["max_residual"], bounds["max_norm"])
    top = retrieve_top_k(queries, index.embeddings, settings.n_imgs, device=device, exact_rows=exact,
                         fast_bf16=cpu_has_fast_bf16())
    logger.info("retrieved %d images for each of %d categories", settings.n_imgs, len(names))
    return {name: [collection.path_of(index.filenames[i]) for i in row] for name, row in zip(names, top.tolist())}


def check_index_size(settings: ReferenceSettings) -> None:
    """n_imgs against the built index's image count (its meta.json), before any model is loaded.

    Nothing to check while the index is not built yet (or only the authors' pickle is there): the count is
    checked again once the index is read.
    """
    try:
        collection = retrieval_collection(settings)
    except ConfigError:  # dir_imagenet / collection_dir unset or missing: reported by whoever needs it
        return
    meta_file = collection.index_dir / "meta.json"
    try:
        count = int(json.loads(meta_file.read_text())["count"])
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: load_index reports it later
        return
    if count < settings.n_imgs:
        raise ConfigError(f"n_imgs: {settings.n_imgs} images per category asked for, but the index at "
                          f"{meta_file.parent} holds only {count} images")


def load_images(paths: Sequence[Path]) -> torch.Tensor:
    """The retrieved images (k, 3, 224, 224); unreadable ones are skipped and logged."""
    images, failed = [], []
    for path in paths:
        try:
            images.append(imagenet.load_retrieved_images([path]))
        except (OSError, ValueError) as e:
            failed.append(f"{path} ({e})")
    if failed:
        logger.warning("skipped %d unreadable retrieved images: %s", len(failed), "; ".join(failed[:5]))
    if not images:
        raise ValueError(f"none of the {len(paths)} retrieved images could be read, e.g. {failed[0]}")
    return torch.cat(images)
