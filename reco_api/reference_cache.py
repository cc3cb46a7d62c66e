"""The per-category reference cache on disk: one small file per category and setting, shared by benchmark
runs, open-vocabulary runs, own-image runs and the Python API."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional, Sequence

import torch

from reco_api.reference_setting import category_setting, setting_differences, setting_hash
from reco_api.settings import ReferenceSettings
from reco.references import ReferenceCache, reference_problem
from utils.io import torch_save
from utils.naming import fit_file_name, slug

logger = logging.getLogger("reco")

MAX_NAME_BYTES = 160  # of the category slug in a cache file name (the whole name stays under 255)


class FileReferenceCache(ReferenceCache):
    """One small file per category and setting: {root}/{setting slug}_{setting hash}/{category}__{contexts hash}.pt.

    Each file holds the category's name, the contexts it eliminated and the full `category_setting`
    record it was computed with; an entry whose record does not match the current setting is recomputed.
    """

    def __init__(self, settings: ReferenceSettings) -> None:
        self.setting = category_setting(settings)
        models = settings.models
        readable = "_".join([
            slug(models.encoder.arch), "retrieval", slug(models.clip.arch), settings.collection.retrieval_tag,
            f"k{settings.n_imgs}",
        ] + ([f"ta_{slug(models.dense_clip.arch)}"] if models.text_attention else [])
          + (["slicebug"] if settings.reproduce_seed_slice_bug else []))
        self.directory = Path(settings.cache_root) / f"{readable}_{setting_hash(self.setting)}"
        self._loaded: dict[Path, Optional[torch.Tensor]] = {}  # each file is read at most once per run

    def _path(self, name: str, contexts: tuple[str, ...]) -> Path:
        digest = hashlib.sha1("\n".join(contexts).encode()).hexdigest()[:10] if contexts else "none"
        name_digest = hashlib.sha1(name.encode()).hexdigest()[:6]  # distinct names never share a file
        # a very long name is shortened (its digest keeps it distinct); the file holds the real name
        return self.directory / f"{fit_file_name(slug(name), MAX_NAME_BYTES)}_{name_digest}__ctx_{digest}.pt"

    def get(self, name: str, contexts: tuple[str, ...]) -> Optional[torch.Tensor]:
        path = self._path(name, contexts)
        if path not in self._loaded:
            self._loaded[path] = self._read(path, name, contexts)
        return self._loaded[path]

    def _read(self, path: Path, name: str, contexts: tuple[str, ...]) -> Optional[torch.Tensor]:
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry["name"] != name or tuple(entry["contexts"]) != contexts:
                return None
            differences = setting_differences(entry.get("setting"), self.setting)
            if differences:
                logger.info("recomputing the reference of '%s': its cache %s was made with another setting (%s)",
                            name, path, "; ".join(differences))
                return None
            reference = entry["reference"].float()
            problem = reference_problem(reference)
            if problem:
                logger.warning("recomputing the reference of '%s': its cache %s %s", name, path, problem)
                return None
            return reference
        except Exception as e:  # a damaged cache entry is recomputed, never trusted
            logger.warning("ignoring unreadable reference cache %s (%s)", path, e)
        return None

    def put(self, name: str, contexts: tuple[str, ...], reference: torch.Tensor) -> None:
        path = self._path(name, contexts)
        problem = reference_problem(reference.detach().float())
        if problem:  # never cached: a later run would trust it
            raise ValueError(f"the reference embedding of '{name}' just computed (for {path}) {problem}")
        torch_save({"name": name, "contexts": list(contexts), "setting": self.setting,
                    "reference": reference.detach().cpu()}, path)
        self._loaded[path] = reference.detach().cpu().float()


def references_to_compute(settings: ReferenceSettings, names: Sequence[str], cache: FileReferenceCache) -> list[str]:
    """The names among `names` whose reference must be computed: neither in the cache nor reusing a
    context's reference (an alias). A context is looked up with the contexts before it eliminated."""
    contexts = settings.contexts
    return [name for name in names if not _cached_or_aliased(name, cache, contexts, settings.aliases)]


def _cached_or_aliased(name: str, cache: FileReferenceCache, contexts: list[str], aliases: dict[str, str]) -> bool:
    if name in contexts:
        return cache.get(name, tuple(contexts[:contexts.index(name)])) is not None
    if aliases.get(name) in contexts:
        return True
    return cache.get(name, tuple(contexts)) is not None
