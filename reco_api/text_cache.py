"""Text embeddings of class names (SPEC 3), memoised in memory and cached on disk beside the per-category
reference cache: one small file per (CLIP architecture, weights identity, prompt template set, precision,
class name), shared by the command line, the Python API and the web demo.

    {reference_cache_dir}/text/{arch slug}_{setting hash}/{name slug}_{name digest}.pt

Each file holds the name and the full setting record it was computed with (read back with
`torch.load(weights_only=True)`: tensors, strings and numbers only, nothing executed); a file whose record
does not match, or that cannot be read, is recomputed and rewritten, never trusted. Weights are identified
by reco_api.reference_setting.weights_identity, the record every cached artefact uses.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn

from networks.text_tower import encode_text_truncated
from reco.prompt_templates import PROMPT_TEMPLATES
from reco.text import text_embeddings
from reco_api.reference_setting import Record, setting_differences, setting_hash, weights_identity
from reco_api.settings import ModelSpec
from utils.io import torch_save
from utils.naming import fit_file_name, slug
from utils.progress import counting_bar

logger = logging.getLogger("reco")

TEXT_CACHE_FOLDER = "text"  # inside reference_cache_dir
MAX_NAME_BYTES = 160  # of the name slug in a file name (the whole name stays under 255 bytes)

# load() -> (CLIP model, tokenizer): called only when some name must be embedded
LoadTextTower = Callable[[], tuple[nn.Module, Callable]]


def embed_prompts(clip_model: nn.Module, tokenizer: Callable, names: Sequence[str], tower: str,
                  templates: Sequence[str] = PROMPT_TEMPLATES) -> torch.Tensor:
    """(N, D) text embeddings of N names (SPEC 3), a causal text tower run only as far as the prompts
    are long, with a progress bar over the prompts."""
    return text_embeddings(clip_model, tokenizer, names, templates, encode=encode_text_truncated,
                           progress=counting_bar(f"embedding {tower} prompts", "prompt"))


def text_setting(spec: ModelSpec, precision: str, templates: Sequence[str] = PROMPT_TEMPLATES) -> Record:
    """What a name's text embedding depends on besides the name: the CLIP (arch and weights identity), the
    prompt templates (a digest of their text, in order) and the precision the tower runs in."""
    return {"text_tower": {"arch": spec.arch, "weights": weights_identity(spec.weights)},
            "templates": hashlib.sha1("\n".join(templates).encode()).hexdigest()[:16],
            "precision": precision}


class TextEmbeddings:
    """names -> (N, D) float32 text embeddings by one CLIP text tower: memoised, else read from the cache
    files, else embedded (all the names found in neither, in one pass) and written.

    Thread-safe. `load` is called only when a name must be embedded, and its models are not kept here (a
    caller that keeps them returns the same ones each time). cache_root None: memory only.
    """

    def __init__(self, spec: ModelSpec, precision: str, load: LoadTextTower, tower: str,
                 cache_root: Optional[Path], device: Optional[torch.device] = None,
                 templates: Sequence[str] = PROMPT_TEMPLATES) -> None:
        self.setting = text_setting(spec, precision, templates)
        self.templates = tuple(templates)
        self.tower = tower
        self.device = device
        self._load = load
        weights = self.setting["text_tower"]["weights"]
        # unset weights or an absent file cannot be loaded: nothing recorded can be known to match them
        self._trusted = weights.get("kind") != "unset" and not (weights.get("kind") == "file" and
                                                                weights.get("bytes") is None)
        self.directory = None if cache_root is None else \
            Path(cache_root) / TEXT_CACHE_FOLDER / f"{slug(spec.arch)}_{setting_hash(self.setting)}"
        self._memo: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def __call__(self, names: Sequence[str]) -> torch.Tensor:
        with self._lock:
            unseen = [name for name in dict.fromkeys(names) if name not in self._memo]
            for name in unseen:
                cached = self._read(name)
                if cached is not None:
                    self._memo[name] = cached
            new = [name for name in unseen if name not in self._memo]
            if new:
                self._embed(new)
            embedded = torch.stack([self._memo[name] for name in names])
        return embedded if self.device is None else embedded.to(self.device)

    def _embed(self, names: list[str]) -> None:
        clip_model, tokenizer = self._load()
        embedded = embed_prompts(clip_model, tokenizer, names, self.tower, self.templates).detach().cpu().float()
        del clip_model  # when `load` built it: freed before the caller goes on
        for name, embedding in zip(names, embedded):
            self._memo[name] = embedding
            self._write(name, embedding)

    def path(self, name: str) -> Optional[Path]:
        """The cache file of `name` (None without a cache folder)."""
        if self.directory is None:
            return None
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]  # distinct names never share a file
        return self.directory / f"{fit_file_name(slug(name), MAX_NAME_BYTES)}_{digest}.pt"

    def _read(self, name: str) -> Optional[torch.Tensor]:
        path = self.path(name)
        if path is None or not self._trusted or not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            embedding = _checked_entry(entry, name)
            differences = setting_differences(entry.get("setting"), self.setting)
            if differences:
                logger.info("embedding '%s' again: its text cache %s was made with another setting (%s)",
                            name, path, "; ".join(differences))
                return None
            return embedding
        except Exception as e:  # a damaged cache file is recomputed, never trusted
            logger.warning("recomputing the text embedding of '%s': unreadable cache file %s (%s)", name, path, e)
        return None

    def _write(self, name: str, embedding: torch.Tensor) -> None:
        path = self.path(name)
        if path is None:
            return
        try:
            torch_save({"name": name, "setting": self.setting, "embedding": embedding.clone()}, path)
        except OSError as e:  # a read-only or full disk costs the next run the embedding, not this run
            logger.warning("could not write the text cache file %s (%s)", path, e)


def _checked_entry(entry: Any, name: str) -> torch.Tensor:
    if not isinstance(entry, dict) or entry.get("name") != name:
        raise ValueError(f"it does not hold the embedding of '{name}'")
    embedding = entry.get("embedding")
    if not isinstance(embedding, torch.Tensor) or embedding.ndim != 1 or not torch.isfinite(embedding).all():
        raise ValueError("its embedding is not a finite vector")
    return embedding.float()
