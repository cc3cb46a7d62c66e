"""The ImageNet index on disk (docs/DESIGN.md, "The ImageNet index on disk"): layout and loading.

    {dir_imagenet}/index/{tag}_{split}/embeddings.npy   float16 (N, D), rows L2-normalised, memory-mapped
                                      /filenames.txt    N image basenames, same order (sorted path order)
                                      /meta.json        clip_arch, split, dim, count, image_size,
                                                        clip_weights (the identity of the CLIP weights a
                                                        build embedded with; absent in older builds and
                                                        converted pickles), ...
                                      /failed_images.txt  images that could not be read (build only)
                                      /embeddings_fp32.npy  float32 (N, D), only for a converted pickle whose
                                                        values float16 cannot hold (exact retrieval)

The directory is published by one rename of a complete temporary directory (fresh_tmp_dir, publish),
so it exists complete or not at all. Its two writers live beside this module: image_index.build
(build_index: embed ImageNet, sharded and resumable) and image_index.published
(convert_published_pickle: the authors' published pickle, and ensure_index, which loads an index or
converts that pickle first); both import their shared helpers from here.
These modules do the index file I/O; models and datasets come in as callables (no networks/ or
datasets/ imports).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from utils.naming import slug

EMBEDDINGS_FILE, FILENAMES_FILE, META_FILE, FAILED_FILE = "embeddings.npy", "filenames.txt", "meta.json", \
    "failed_images.txt"
EMBEDDINGS_FP32_FILE = "embeddings_fp32.npy"
FORMAT_VERSION = 1
CLIP_WEIGHTS_KEY = "clip_weights"  # meta.json: the CLIP weights' identity, recorded by the caller of the build
REBUILD_HINT = "python main_reco.py --config CFG --stage index"


# The only index pickle the authors published (scripts/download_artefacts.sh --index fetches it).
PUBLISHED_INDEXES = (("ViT-L/14@336px", "train"),)


def published_pickle_hint(dir_imagenet: str | os.PathLike, clip_arch: str, split: str) -> str:
    """How a pickle could replace the build: download the authors' one where it exists, else say that there
    is none for this CLIP and split (a pickle in their format under the expected name would still do)."""
    pkl = published_pickle_path(dir_imagenet, clip_arch, split)
    if (clip_arch, split) in PUBLISHED_INDEXES:
        return (f"or download the authors' {pkl.name} (bash scripts/download_artefacts.sh DATASET DIR --index) "
                f"and put it at {pkl} (converted on first use)")
    published = ", ".join(f"{arch} {sp}" for arch, sp in PUBLISHED_INDEXES)
    return (f"the authors published an index pickle only for {published}, so for clip_arch={clip_arch!r}, "
            f"split={split!r} the index must be built (a pickle in their format at {pkl} would be converted)")


class IndexNotFoundError(FileNotFoundError):
    """Neither an index nor the authors' published pickle is there; the message says how to get one."""


def index_tag(clip_arch: str) -> str:
    """'ViT-L/14@336px' -> 'ViT_L_14_336px' (the original's file-name tag, SPEC 2)."""
    return slug(clip_arch, lower=False)


def index_dir(dir_imagenet: str | os.PathLike, clip_arch: str, split: str) -> Path:
    return Path(dir_imagenet).expanduser() / "index" / f"{index_tag(clip_arch)}_{split}"


def published_pickle_path(dir_imagenet: str | os.PathLike, clip_arch: str, split: str) -> Path:
    """Where the authors' `filename_to_{tag}_{split}_img_embedding.pkl` is expected (SPEC 2)."""
    return Path(dir_imagenet).expanduser() / f"filename_to_{index_tag(clip_arch)}_{split}_img_embedding.pkl"


@dataclass
class ImageNetIndex:
    """embeddings (N, D) float16 read-only memmap; filenames N basenames; meta from meta.json.

    float32_rows: (N, D) float32 read-only memmap of the values the float16 rows were rounded from
    (a converted published pickle, when float16 cannot hold them), else None. Its bounds are in
    meta["float32_rows"] (max_residual >= max ||e32 - e16||_2, max_norm >= max ||e16||_2).
    """

    embeddings: np.ndarray
    filenames: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    directory: Optional[Path] = None
    float32_rows: Optional[np.ndarray] = None

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.filenames)


def load_index(directory: str | os.PathLike, expected_dim: Optional[int] = None,
               expected_arch: Optional[str] = None) -> ImageNetIndex:
    """Open an index directory (memory-mapped, instant) and check it fits the CLIP in use."""
    directory = Path(directory)
    missing = [name for name in (EMBEDDINGS_FILE, FILENAMES_FILE, META_FILE) if not (directory / name).is_file()]
    if missing:
        raise ValueError(f"incomplete ImageNet index at {directory}: missing {', '.join(missing)}; move it away "
                         f"and rebuild it with `{REBUILD_HINT}`")
    meta = json.loads((directory / META_FILE).read_text())
    embeddings = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r")
    if embeddings.ndim != 2 or embeddings.dtype != np.float16:
        raise ValueError(f"{directory / EMBEDDINGS_FILE}: expected a float16 (N, D) array, "
                         f"got {embeddings.dtype} {embeddings.shape}")
    filenames = (directory / FILENAMES_FILE).read_text().splitlines()
    count = meta.get("count", embeddings.shape[0])
    if not len(filenames) == embeddings.shape[0] == count:
        raise ValueError(f"corrupt ImageNet index at {directory}: {embeddings.shape[0]} embeddings, "
                         f"{len(filenames)} filenames, meta count {count}; rebuild it with `{REBUILD_HINT}`")
    built_with = f"CLIP {meta.get('clip_arch', '?')} ({embeddings.shape[1]}-dim embeddings)"
    how = (f"Use the index of this CLIP (another clip_arch gives another index directory), or move {directory} "
           f"away and rebuild it with `{REBUILD_HINT}`.")
    if expected_dim is not None and embeddings.shape[1] != expected_dim:
        raise ValueError(f"the ImageNet index at {directory} was built with another CLIP: {built_with}, but the "
                         f"CLIP in use gives {expected_dim}-dim embeddings. {how}")
    if expected_arch is not None and meta.get("clip_arch", expected_arch) != expected_arch:
        raise ValueError(f"the ImageNet index at {directory} was built with another CLIP: {built_with}, but the "
                         f"config uses clip_arch={expected_arch!r}. {how}")
    return ImageNetIndex(embeddings, filenames, meta, directory, _load_float32_rows(directory, meta, embeddings))


def _load_float32_rows(directory: Path, meta: dict[str, Any], embeddings: np.ndarray) -> Optional[np.ndarray]:
    """The float32 originals named in meta["float32_rows"] (memmap), checked against the float16 rows."""
    entry = meta.get("float32_rows")
    if entry is None:
        return None
    path = directory / EMBEDDINGS_FP32_FILE
    if not isinstance(entry, dict) or not all(isinstance(entry.get(key), (int, float))
                                              for key in ("max_residual", "max_norm")):
        raise ValueError(f"corrupt ImageNet index at {directory}: meta.json float32_rows must hold max_residual "
                         f"and max_norm; move it away and convert the published pickle again")
    if not path.is_file():
        raise ValueError(f"incomplete ImageNet index at {directory}: missing {EMBEDDINGS_FP32_FILE}; move it away "
                         f"and convert the published pickle again")
    rows = np.load(path, mmap_mode="r")
    if rows.dtype != np.float32 or rows.shape != embeddings.shape:
        raise ValueError(f"{path}: expected a float32 {embeddings.shape} array like {EMBEDDINGS_FILE}, got "
                         f"{rows.dtype} {rows.shape}; move the index away and convert the published pickle again")
    return rows


def missing_index_message(dir_imagenet: str | os.PathLike, clip_arch: str, split: str) -> str:
    """What to do when neither the index of (clip_arch, split) nor the authors' pickle is there."""
    return (f"no ImageNet index for clip_arch={clip_arch!r}, split={split!r}: expected "
            f"{index_dir(dir_imagenet, clip_arch, split)}/. Build it with `{REBUILD_HINT}` (resumable; "
            f"`torchrun --nproc_per_node=N main_reco.py ...` for several GPUs); "
            f"{published_pickle_hint(dir_imagenet, clip_arch, split)}")


def fresh_tmp_dir(out_dir: Path) -> Path:
    """An empty staging directory beside out_dir (same file system, so the final rename is atomic).

    Staging directories left by dead processes of this host (killed during a merge or a conversion)
    are removed; those of live processes (e.g. other ranks converting at the same time) are left alone.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace("-", "_")
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-{host}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{host}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(tmp: Path, out_dir: Path, logger: logging.Logger) -> None:
    """fsync the staged files, then rename the directory into place in one step."""
    for f in tmp.iterdir():
        with open(f, "rb") as handle:
            os.fsync(handle.fileno())
    if out_dir.exists():  # another process published first: keep its index
        logger.info("%s appeared meanwhile; keeping it", out_dir)
        return
    os.rename(tmp, out_dir)
    fd = os.open(out_dir.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_lines(path: Path, lines: Sequence[str]) -> None:
    with open(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """For files in a staging directory (atomic through the directory rename; normal permissions)."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
