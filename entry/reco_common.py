"""Config -> models and reference embeddings, shared by the ReCo stages (entry-side: reads the config)."""
from __future__ import annotations

import json
from dataclasses import dataclass
import logging
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from tqdm import tqdm

import networks
from datasets import imagenet
from entry.collection import collection_of
from networks.clip import DenseCLIP
from networks.text_tower import encode_text_truncated
from entry.reference_cache import FileReferenceCache, reference_cache_root, references_to_compute
from entry.reference_setting import used_contexts
from reco.inference import predict
from reco.references import compute_reference_embeddings
from reco.retrieval import ExactRows, retrieve_top_k
from reco.text import text_embeddings
from utils import timing
from utils.progress import counting_bar
from utils.config import ConfigError, RecoConfig, resolve_clip_precision

logger = logging.getLogger("reco")


class DenseClipModels:
    """DenseCLIP (visual, dense) and the text embeddings of its CLIP's text tower (memoised per name).

    The models are built by `load` on first use (`dense_clip` or `embed_text`), so a run whose references
    come from the pickle and that does not use DenseCLIP at inference never loads them.
    """

    def __init__(self, load: Callable[[], tuple[nn.Module, nn.Module, Callable]]) -> None:
        self._load = load
        self._models: Optional[tuple[nn.Module, nn.Module, Callable]] = None
        self._embedded: dict[str, torch.Tensor] = {}

    def _loaded(self) -> tuple[nn.Module, nn.Module, Callable]:
        if self._models is None:
            self._models = self._load()
        return self._models

    @classmethod
    def of(cls, dense_clip: nn.Module, clip_model: nn.Module, tokenizer: Callable) -> "DenseClipModels":
        """Already-built models (e.g. passed to reco_api.ReCo)."""
        return cls(lambda: (dense_clip, clip_model, tokenizer))

    @property
    def loaded(self) -> bool:
        return self._models is not None

    @property
    def dense_clip(self) -> nn.Module:
        return self._loaded()[0]

    def embed_text(self, names: Sequence[str]) -> torch.Tensor:
        """names -> (N, D) float32 text embeddings (SPEC 3)."""
        new = [n for n in dict.fromkeys(names) if n not in self._embedded]
        if new:
            _, clip_model, tokenizer = self._loaded()
            self._embedded.update(zip(new, embed_prompts(clip_model, tokenizer, new, "DenseCLIP")))
        return torch.stack([self._embedded[n] for n in names])


def embed_prompts(clip_model: nn.Module, tokenizer: Callable, names: Sequence[str], tower: str) -> torch.Tensor:
    """(N, D) text embeddings of N names (SPEC 3), a causal text tower run only as far as the prompts
    are long, with a progress bar over the prompts."""
    return text_embeddings(clip_model, tokenizer, names, encode=encode_text_truncated,
                           progress=counting_bar(f"embedding {tower} prompts", "prompt"))


@dataclass(frozen=True)
class InferenceModels:
    """What segmenting an image needs: the dense encoder, the (N, C) unit-norm reference matrix, and
    DenseCLIP with the (N, D) text embeddings of the N categories (both None without DenseCLIP inference)."""

    encoder: nn.Module
    references: torch.Tensor
    dense_clip: Optional[nn.Module] = None
    text: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if (self.dense_clip is None) != (self.text is None):
            raise ValueError("DenseCLIP inference needs both the DenseCLIP model and the text embeddings")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) ImageNet-normalised -> class probabilities (B, N, H, W) (SPEC 9.1)."""
        return predict(images, self.encoder, self.references, self.dense_clip, self.text)


def inference_models(config: RecoConfig, categories: Sequence[str], encoder: nn.Module,
                     references: torch.Tensor, dense: Optional[DenseClipModels]) -> InferenceModels:
    """Bundle the models; DenseCLIP and its text embeddings only with `dense_clip_inference`."""
    if dense is None or not config.dense_clip_inference:
        return InferenceModels(encoder, references)
    return InferenceModels(encoder, references, dense.dense_clip, dense.embed_text(categories))


def clip_precision(config: RecoConfig, device: torch.device) -> str:
    """The config's clip_precision on `device` (utils.config.resolve_clip_precision)."""
    return resolve_clip_precision(config.clip_precision, device.type)


def build_encoder(config: RecoConfig, device: torch.device) -> nn.Module:
    with timing.stage("models"):
        return networks.build_encoder(config.encoder_arch, config.weights.encoder, key="weights.encoder").to(device)


def build_dense_clip(config: RecoConfig, device: torch.device) -> Optional[DenseClipModels]:
    """DenseCLIP and its text tower (built on first use), or None when neither text attention nor
    DenseCLIP inference is on."""
    if not (config.text_attention or config.dense_clip_inference):
        return None

    def load() -> tuple[nn.Module, nn.Module, Callable]:
        with timing.stage("models"):
            clip_model, tokenizer = networks.build_clip(
                config.dense_clip_arch, config.weights.dense_clip, device=device,
                precision=clip_precision(config, device), key="weights.dense_clip",
            )
            return DenseCLIP(clip_model).to(device).eval(), clip_model, tokenizer

    return DenseClipModels(load)


def compute_references(
    config: RecoConfig,
    categories: Sequence[str],
    device: torch.device,
    encoder: nn.Module,
    dense: Optional[DenseClipModels],
    on_reference: Optional[Callable[[str, torch.Tensor, torch.Tensor], None]] = None,
    build_missing_index: bool = True,
    retrieval_clip: Optional[Callable[[], tuple[nn.Module, Callable]]] = None,
    progress: Optional[Callable[[Iterable, str], Iterable]] = None,
) -> dict[str, torch.Tensor]:
    """Retrieve k ImageNet images per category and co-segment them (SPEC 4, 7), with the file cache.

    `retrieval_clip()` gives the retrieval CLIP and its tokenizer when one is kept loaded (the Python
    API); by default it is built for the retrieval and dropped. `progress(items, desc)` wraps the
    loops over categories (default: tqdm bars).
    """
    contexts = used_contexts(config)
    cache = FileReferenceCache(reference_cache_root(config), config)
    names = list(dict.fromkeys(contexts + list(categories)))
    missing = references_to_compute(config, names, cache)
    paths: dict[str, list[Path]] = {}
    if missing:
        with timing.stage("retrieval", log=True):
            paths = retrieve(config, missing, device, build_missing_index, retrieval_clip)

    def retrieve_images(name: str) -> torch.Tensor:
        if name not in paths:  # cached when checked, but the entry became unreadable since
            paths.update(retrieve(config, [name], device, build_missing_index, retrieval_clip))
        return load_images(paths[name]).to(device)

    text = None
    if dense is not None and config.text_attention:
        with timing.stage("text", log=True):
            embedded = dense.embed_text(names)
        text = {n: embedded[i] for i, n in enumerate(names)}
    bars = progress or (lambda items, desc: tqdm(items, desc=f"co-segmenting {desc}", unit="category"))
    with timing.stage("co-segmentation", log=True):
        return compute_reference_embeddings(
            categories,
            retrieve_images,
            encoder,
            dense_clip=dense.dense_clip if dense is not None and config.text_attention else None,
            text_embedding=(lambda n: text[n]) if text is not None else None,
            context_categories=contexts,
            aliases=config.reference_aliases,
            reproduce_slice_bug=config.reproduce_seed_slice_bug,
            cache=cache,
            on_reference=on_reference,
            progress=lambda items, desc: _timed_per_category(bars(items, desc)),
        )


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


def retrieve(config: RecoConfig, names: Sequence[str], device: torch.device,
             build_missing_index: bool = True,
             retrieval_clip: Optional[Callable[[], tuple[nn.Module, Callable]]] = None) -> dict[str, list[Path]]:
    """Top-k image paths of the retrieval collection (ImageNet or collection_dir) for each name, by CLIP
    text-to-image similarity on its index.

    A missing index is built first (or converted from the authors' pickle) when `build_missing_index`;
    otherwise the error says how to build it.
    """
    collection = collection_of(config)
    if build_missing_index and not collection.index_exists():
        from entry.reco_index import run_index_stage

        logger.info("no index of %s yet: building it (every image is embedded once)", collection.root)
        run_index_stage(config)
    check_index_size(config)
    with timing.stage("models"):
        clip_model, tokenizer = (retrieval_clip or (lambda: build_retrieval_clip(config, device)))()
    with timing.stage("text", log=True):
        queries = embed_prompts(clip_model, tokenizer, list(names), "retrieval")
    del clip_model  # when built here: freed before the index is read
    index = collection.load_index(expected_dim=queries.shape[1])
    if len(index.filenames) < config.n_imgs:
        raise ConfigError(f"n_imgs: {config.n_imgs} images asked for but the index at {index.directory} holds "
                          f"{len(index.filenames)}")
    exact = None
    if index.float32_rows is not None:  # a converted pickle whose float32 values float16 cannot hold
        bounds = index.meta["float32_rows"]
        exact = ExactRows(index.float32_rows, bounds["max_residual"], bounds["max_norm"])
    top = retrieve_top_k(queries, index.embeddings, config.n_imgs, device=device, exact_rows=exact)
    logger.info("retrieved %d images for each of %d categories", config.n_imgs, len(names))
    return {name: [collection.path_of(index.filenames[i]) for i in row] for name, row in zip(names, top.tolist())}


def check_index_size(config: RecoConfig) -> None:
    """n_imgs against the built index's image count (its meta.json), before any model is loaded.

    Nothing to check while the index is not built yet (or only the authors' pickle is there): the count is
    checked again once the index is read.
    """
    try:
        collection = collection_of(config)
    except ConfigError:  # dir_imagenet / collection_dir unset or missing: reported by whoever needs it
        return
    meta_file = collection.index_dir / "meta.json"
    try:
        count = int(json.loads(meta_file.read_text())["count"])
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: load_index reports it later
        return
    if count < config.n_imgs:
        raise ConfigError(f"n_imgs: {config.n_imgs} images per category asked for, but the index at "
                          f"{meta_file.parent} holds only {count} images")


def build_retrieval_clip(config: RecoConfig, device: torch.device) -> tuple[nn.Module, Callable]:
    """The retrieval CLIP (index and text queries) and its tokenizer."""
    return networks.build_clip(
        config.clip_arch, config.weights.clip, device=device, precision=clip_precision(config, device),
        key="weights.clip",
    )


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


def index_exists(config: RecoConfig) -> bool:
    """True if the retrieval collection's index is built (or, for ImageNet, the authors' pickle is there)."""
    return collection_of(config).index_exists()
