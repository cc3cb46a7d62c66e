"""The retrieval collection of a ReCo config: ImageNet (the default) or any folder of images.

    ImageNet:  dir_imagenet/{split}/<wnid>/*.JPEG      index {dir_imagenet}/index/{clip tag}_{split}/
               (the authors' published pickle in dir_imagenet is converted instead of embedding)
    a folder:  collection_dir/**/<any image PIL reads>  index {collection_dir}/index/{clip tag}_{name}/
               (name = collection_name, default the folder's name; the index/ folder itself is skipped)

Index directories are named by collection and CLIP, so several coexist. An ImageNet index stores
basenames (the original's format); a folder's index stores paths relative to collection_dir, since
basenames need not be unique there.

A built index records the identity of the CLIP weights it embedded with (meta.json "clip_weights": the
record every artefact uses, reco_api.reference_setting.weights_identity, a file's by its content hash), so
retrieval with other weights is refused (check_index_weights) although the directory name, which holds
only the architecture, is the same. Indexes without that record (older builds, the authors' converted
pickle) are used as before.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from PIL import Image

from datasets import imagenet
from image_index.published import ensure_index
from image_index.storage import (CLIP_WEIGHTS_KEY, META_FILE, REBUILD_HINT, ImageNetIndex, IndexNotFoundError,
                                 index_dir, index_tag, load_index, missing_index_message, published_pickle_hint,
                                 published_pickle_path)
from reco_api.reference_setting import Record, setting_differences, weights_identity
from reco_api.settings import CollectionSettings, ModelSpec
from utils.config import ConfigError, require_dir

INDEX_FOLDER = "index"


@dataclass(frozen=True)
class Collection:
    """key: the config key that names `root` (for errors); name: what index directories are named after."""

    key: str
    root: Path
    name: str
    clip_arch: str
    is_imagenet: bool

    @property
    def index_dir(self) -> Path:
        if self.is_imagenet:
            return index_dir(self.root, self.clip_arch, self.name)
        return self.root / INDEX_FOLDER / f"{index_tag(self.clip_arch)}_{self.name}"

    @property
    def published_pickle(self) -> Optional[Path]:
        """The authors' pickle that replaces the build (ImageNet only)."""
        return published_pickle_path(self.root, self.clip_arch, self.name) if self.is_imagenet else None

    def index_available(self) -> bool:
        """True if the index is built or the authors' pickle is there to be converted."""
        pickle = self.published_pickle
        return self.index_dir.exists() or (pickle is not None and pickle.is_file())

    def require_index(self) -> None:
        """IndexNotFoundError saying how to build the index, unless it is available."""
        if self.index_available():
            return
        if self.is_imagenet:
            raise IndexNotFoundError(missing_index_message(self.root, self.clip_arch, self.name))
        raise IndexNotFoundError(self._missing_folder_index_message())

    def list_images(self) -> list[Path]:
        """The images to index, in index row order."""
        if self.is_imagenet:
            return imagenet.list_imagenet_images(self.root, self.name)
        return list_folder_images(self.root)

    def index_names(self, paths: list[Path]) -> list[str]:
        """What filenames.txt stores for each path: ImageNet basenames, else paths relative to the root."""
        if self.is_imagenet:
            return [p.name for p in paths]
        return [Path(p).relative_to(self.root).as_posix() for p in paths]

    def path_of(self, filename: str) -> Path:
        """The image of an index filename. An entry that would lie outside the collection (absolute, with
        a '..' part, or for ImageNet anything but a basename) is refused, naming the index."""
        if not _inside_collection(filename, basename_only=self.is_imagenet):
            raise ConfigError(f"{self.index_dir / 'filenames.txt'}: the entry {filename!r} lies outside "
                              f"{self.root}; this index was not built from the collection: move {self.index_dir} "
                              f"away and rebuild it")
        if self.is_imagenet:
            return imagenet.imagenet_path(self.root, self.name, filename)
        return self.root / filename

    def load_index(self, expected_dim: Optional[int] = None) -> ImageNetIndex:
        if self.is_imagenet:
            return ensure_index(self.root, self.clip_arch, self.name, expected_dim=expected_dim)
        if not self.index_dir.exists():
            raise IndexNotFoundError(self._missing_folder_index_message())
        return load_index(self.index_dir, expected_dim=expected_dim, expected_arch=self.clip_arch)

    def _missing_folder_index_message(self) -> str:
        return (f"no index of collection_dir {self.root} for clip_arch={self.clip_arch!r}: expected "
                f"{self.index_dir}/. Build it with `{REBUILD_HINT}`")

    def missing_images_message(self) -> str:
        if self.is_imagenet:
            return (f"dir_imagenet: no images in {self.root / self.name}/<wnid>/*.JPEG to build the index from; "
                    f"{published_pickle_hint(self.root, self.clip_arch, self.name)}")
        return f"collection_dir: no image files under {self.root} (searched recursively, {INDEX_FOLDER}/ skipped)"


def _inside_collection(filename: str, basename_only: bool) -> bool:
    """Whether an index entry names a file under the collection's root, read from its text alone."""
    path = PurePosixPath(filename)
    if not filename or "\0" in filename or path.is_absolute() or ".." in path.parts:
        return False
    return not basename_only or (len(path.parts) == 1 and not filename.startswith("."))


def collection_of(settings: CollectionSettings, clip_arch: str) -> Collection:
    """The retrieval collection indexed with `clip_arch` (its directory must exist)."""
    if settings.collection_dir is None:
        return Collection("dir_imagenet", require_dir(settings, "dir_imagenet"), settings.imagenet_split,
                          clip_arch, is_imagenet=True)
    root = require_dir(settings, "collection_dir").resolve()
    return Collection("collection_dir", root, settings.label, clip_arch, is_imagenet=False)


def clip_weights_record(clip: ModelSpec, memo: Optional[Path] = None) -> Record:
    """What an index build records of its CLIP weights (meta.json "clip_weights"); `memo`: the file
    remembering content hashes (ReferenceSettings.hash_memo), so a large CLIP is hashed once."""
    return weights_identity(clip.weights, memo)


def check_index_weights(collection: Collection, clip: ModelSpec, memo: Optional[Path] = None) -> None:
    """ConfigError (one line) when the built index of `collection` records other CLIP weights than
    `clip` (compared as every artefact's record is: reference_setting.setting_differences). Nothing to
    check without a built index or without the record (older builds, the converted published pickle).
    Only records are compared (the weights file's content hash, remembered by its stat): no model is built."""
    try:
        recorded = json.loads((collection.index_dir / META_FILE).read_text()).get(CLIP_WEIGHTS_KEY)
    except (OSError, ValueError, AttributeError):  # absent or unreadable: load_index reports it
        return
    if recorded is None:
        return
    current = clip_weights_record(clip, memo)
    if not setting_differences({"arch": clip.arch, "weights": recorded}, {"arch": clip.arch, "weights": current}):
        return
    directory = collection.index_dir
    raise ConfigError(f"weights.clip: the index {directory} was built with other CLIP weights "
                      f"({_describe_weights(recorded)}, recorded in its {META_FILE}) than weights.clip="
                      f"{clip.weights!r} ({_describe_weights(current)}); remove {directory} to rebuild it with "
                      f"these weights (`{REBUILD_HINT}`), or point weights.clip at the weights it was built with")


def _describe_weights(record: Any) -> str:
    if not isinstance(record, dict):
        return json.dumps(record)
    kind, name = record.get("kind"), record.get("name")
    if kind == "file":
        if record.get("bytes") is None:
            return f"the file {name}, absent"
        return f"the file {name}, {record['bytes']} bytes, {str(record.get('sha256'))[:19]}"
    if kind in ("folder", "tag"):
        return f"the open_clip {kind} {name}"
    return str(kind)


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions PIL can open ('.jpg', '.png', '.webp', ...)."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def list_folder_images(root: str | os.PathLike) -> list[Path]:
    """Every file under `root` whose extension PIL reads, recursively, sorted by relative path; the
    top-level index/ folder (where the indexes live) and hidden entries are skipped. Unreadable files
    among them are left to the build, which counts and lists them."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"collection_dir: directory not found: {root}")
    extensions = image_extensions()
    found = []
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and not (here == root and d == INDEX_FOLDER)]
        found += [here / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in extensions]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
