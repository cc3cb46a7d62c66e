"""The ImageNet index on disk (DESIGN "The ImageNet index on disk"): load, build, convert, ensure.

    {dir_imagenet}/index/{tag}_{split}/embeddings.npy   float16 (N, D), rows L2-normalised, memory-mapped
                                      /filenames.txt    N image basenames, same order (sorted path order)
                                      /meta.json        clip_arch, split, dim, count, image_size, ...
                                      /failed_images.txt  images that could not be read (build only)

The directory is published by one rename of a complete temporary directory, so it exists complete or
not at all. A build keeps its finished shards in `.{tag}_{split}.partial-<plan>/` beside it until the
merge. This module does the index file I/O; models and datasets come in as callables (no networks/ or
datasets/ imports).

Building from an entry script (single process or `torchrun --nproc_per_node=N`):

    rank, world_size, _ = utils.distributed.init_distributed()
    model, _ = networks.build_clip(config.clip_arch, config.weights.clip, device=device, precision="fp16")
    size = networks.clip_image_size(model)
    build_index(
        datasets.imagenet.list_imagenet_images(dir_imagenet, split),
        embed_fn=lambda x: F.normalize(model.encode_image(x), dim=-1),
        out_dir=index_dir(dir_imagenet, config.clip_arch, split),
        meta={"clip_arch": config.clip_arch, "split": split, "image_size": size},
        make_dataset=lambda paths: datasets.imagenet.IndexBuildDataset(paths, size),
        batch_size=config.index_batch_size, num_workers=config.n_workers, shard_size=config.index_shard_size,
        device=device, rank=rank, world_size=world_size, barrier=utils.distributed.barrier, logger=logger)
    utils.distributed.cleanup()
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
import contextlib
import io
import re
import struct
import tempfile
import warnings
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from utils.io import atomic_write, safe_load_pickle, save_json

EMBEDDINGS_FILE, FILENAMES_FILE, META_FILE, FAILED_FILE = "embeddings.npy", "filenames.txt", "meta.json", \
    "failed_images.txt"
FORMAT_VERSION = 1
REBUILD_HINT = "python main_reco.py --config CFG --stage index"
# SPEC 2: the extraction script's default input size per CLIP (recorded in meta.json of converted pickles).
DEFAULT_IMAGE_SIZES = {"RN50": 224, "RN50x16": 384, "RN50x64": 448, "ViT-B/32": 224, "ViT-B/16": 224,
                       "ViT-L/14": 224, "ViT-L/14@336px": 336}


class IndexNotFoundError(FileNotFoundError):
    """Neither an index nor the authors' published pickle is there; the message says how to get one."""


def index_tag(clip_arch: str) -> str:
    """'ViT-L/14@336px' -> 'ViT_L_14_336px' (the original's file-name tag, SPEC 2)."""
    return clip_arch.replace("-", "_").replace("/", "_").replace("@", "_")


def index_dir(dir_imagenet: str | os.PathLike, clip_arch: str, split: str) -> Path:
    return Path(dir_imagenet).expanduser() / "index" / f"{index_tag(clip_arch)}_{split}"


def published_pickle_path(dir_imagenet: str | os.PathLike, clip_arch: str, split: str) -> Path:
    """Where the authors' `filename_to_{tag}_{split}_img_embedding.pkl` is expected (SPEC 2)."""
    return Path(dir_imagenet).expanduser() / f"filename_to_{index_tag(clip_arch)}_{split}_img_embedding.pkl"


@dataclass
class ImageNetIndex:
    """embeddings (N, D) float16 read-only memmap; filenames N basenames; meta from meta.json."""

    embeddings: np.ndarray
    filenames: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    directory: Optional[Path] = None

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
    return ImageNetIndex(embeddings, filenames, meta, directory)


def build_index(image_paths: Sequence[str | os.PathLike], embed_fn: Callable, out_dir: str | os.PathLike,
                meta: dict[str, Any], *, make_dataset: Callable, batch_size: int = 64, num_workers: int = 4,
                shard_size: int = 8192, device: Any = "cpu", rank: int = 0, world_size: int = 1,
                progress: bool = True, barrier: Optional[Callable[[], None]] = None,
                logger: Optional[logging.Logger] = None, prefetch_factor: int = 4) -> Path:
    """Embed `image_paths` into the index at `out_dir`: sharded, resumable, torchrun-aware.

    embed_fn(images (B, 3, S, S) on `device`) -> (B, D), called under inference_mode (and fp16
    autocast on CUDA); rows are L2-normalised here in float32 and stored as float16.
    make_dataset(paths) -> Dataset whose item i is (i, image (3, S, S), ok) (IndexBuildDataset).
    meta: at least clip_arch and split (image_size recommended), written to meta.json.
    Work is cut into shards of `shard_size` images (the last shard of each run is lost at worst); the
    shards still missing when the job starts are dealt round-robin to the ranks (shards r, r+W, ... on a
    fresh build), so the split is deterministic; rank 0 merges once all ranks have passed `barrier`.
    Unreadable images are left out of the index, counted and listed in failed_images.txt.
    Finished shards are only reused by a build with the same paths, shard_size and meta (keep meta
    deterministic). Returns out_dir on every rank once the index is complete.
    """
    out_dir, logger = Path(out_dir), logger or logging.getLogger("reco")
    paths = [str(p) for p in image_paths]
    _check_build_args(paths, meta, batch_size, shard_size, rank, world_size)
    if world_size > 1 and barrier is None:
        raise ValueError("build_index with world_size > 1 needs a barrier (e.g. utils.distributed.barrier)")
    sync = barrier or (lambda: None)
    if (out_dir / META_FILE).is_file():
        load_index(out_dir)  # a complete index is there (published atomically); check it opens
        if rank == 0:
            logger.info("ImageNet index already built: %s", out_dir)
        return out_dir
    plan = json.dumps({"paths": paths, "shard_size": shard_size, "meta": meta}, sort_keys=True, default=str)
    work = out_dir.parent / f".{out_dir.name}.partial-{hashlib.sha1(plan.encode()).hexdigest()[:12]}"
    work.mkdir(parents=True, exist_ok=True)
    if rank == 0 and not (work / "plan.json").is_file():
        save_json(work / "plan.json", {"n_images": len(paths), "shard_size": shard_size, "meta": meta})
    sync()  # nobody writes a shard before every rank has listed the finished ones
    n_shards = -(-len(paths) // shard_size)
    todo = [s for s in range(n_shards) if not shard_is_done(work, s)]
    mine = todo[rank::world_size]
    if rank == 0:
        logger.info("ImageNet index %s: %d images in %d shards, %d done, %d to embed on %d process(es)",
                    out_dir.name, len(paths), n_shards, n_shards - len(todo), len(todo), world_size)
    if mine:
        _embed_shards(paths, mine, work, embed_fn, make_dataset, batch_size=batch_size, num_workers=num_workers,
                     shard_size=shard_size, device=device, progress=progress and rank == 0, logger=logger,
                     prefetch_factor=prefetch_factor, desc=out_dir.name)
    sync()
    if rank == 0:
        tmp = _fresh_tmp_dir(out_dir)
        try:
            n_kept, dim, failed = _merge_shards(work, n_shards, paths, tmp)
            _write_json(tmp / META_FILE, {**meta, "dim": dim, "count": n_kept, "n_failed": len(failed),
                                          "dtype": "float16", "format_version": FORMAT_VERSION, "source": "build"})
            _publish(tmp, out_dir, logger)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for partial in out_dir.parent.glob(f".{out_dir.name}.partial-*"):  # also those of other settings
            shutil.rmtree(partial, ignore_errors=True)
        if failed:
            logger.warning("%d unreadable image(s) skipped, listed in %s (e.g. %s)", len(failed),
                           out_dir / FAILED_FILE, failed[0])
        logger.info("ImageNet index written: %s (%d images)", out_dir, n_kept)
    sync()
    return out_dir


def convert_published_pickle(pkl_path: str | os.PathLike, out_dir: str | os.PathLike, clip_arch: str, split: str,
                             *, expected_dim: Optional[int] = None,
                             logger: Optional[logging.Logger] = None) -> Path:
    """Convert the authors' `filename_to_{tag}_{split}_img_embedding.pkl` (dict basename -> float32 (D,)
    tensor, SPEC 2) into the index layout at `out_dir`, keeping the dict order.

    Read through utils.io.safe_load_pickle (no code in the file can run; CUDA storages land on the
    CPU) with streaming decoders (_PublishedReader): each row is cast to float16 as it is read and
    spilled to an unnamed temporary file, so peak memory stays near 1.3x the pickle's size (the
    unpickler's memo keeps the raw bytes until the end). Values are cast as they are (not re-normalised).
    Nothing visible is written unless the whole file is read and valid.
    """
    pkl_path, out_dir, logger = Path(pkl_path), Path(out_dir), logger or logging.getLogger("reco")
    logger.info("converting the published index %s -> %s", pkl_path, out_dir)
    # Rows spill to an unnamed temporary file beside the pickle: nothing visible is created before the
    # whole file has been read and checked, and the rows never sit in RAM with the unpickler's memo.
    with tempfile.TemporaryFile(dir=pkl_path.parent) as spill:
        filenames, order, dim = _read_published_pickle(pkl_path, spill)
        if not filenames or dim == 0:
            raise ValueError(f"{pkl_path}: the published index is empty")
        if expected_dim is not None and dim != expected_dim:
            raise ValueError(f"{pkl_path} holds {dim}-dim embeddings but the CLIP in use ({clip_arch}) gives "
                             f"{expected_dim}-dim ones: it was made with another CLIP")
        tmp = _fresh_tmp_dir(out_dir)
        try:
            _write_npy_from_spill(tmp / EMBEDDINGS_FILE, spill, order, len(filenames), dim)
            _write_lines(tmp / FILENAMES_FILE, filenames)
            _write_json(tmp / META_FILE, {"clip_arch": clip_arch, "split": split, "dim": dim,
                                          "count": len(filenames), "image_size": DEFAULT_IMAGE_SIZES.get(clip_arch),
                                          "n_failed": 0, "dtype": "float16", "format_version": FORMAT_VERSION,
                                          "source": "published_pickle", "source_file": pkl_path.name})
            _publish(tmp, out_dir, logger)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %d embeddings (dim %d) into %s", len(filenames), dim, out_dir)
    return out_dir


def ensure_index(dir_imagenet: str | os.PathLike, clip_arch: str, split: str, expected_dim: Optional[int] = None,
                 logger: Optional[logging.Logger] = None) -> ImageNetIndex:
    """The index of (clip_arch, split): loaded if built, else converted from the authors' published
    pickle if it is in dir_imagenet, else IndexNotFoundError saying how to get one."""
    directory = index_dir(dir_imagenet, clip_arch, split)
    if not directory.exists():
        pkl = published_pickle_path(dir_imagenet, clip_arch, split)
        if not pkl.is_file():
            raise IndexNotFoundError(
                f"no ImageNet index for clip_arch={clip_arch!r}, split={split!r}: expected {directory}/. Build it "
                f"with `{REBUILD_HINT}` (resumable; `torchrun --nproc_per_node=N main_reco.py ...` for several "
                f"GPUs), or download the authors' {pkl.name} and put it at {pkl} (converted on first use)")
        convert_published_pickle(pkl, directory, clip_arch, split, expected_dim=expected_dim, logger=logger)
    return load_index(directory, expected_dim=expected_dim, expected_arch=clip_arch)


def _check_build_args(paths: list[str], meta: dict[str, Any], batch_size: int, shard_size: int, rank: int,
                      world_size: int) -> None:
    if not paths:
        raise ValueError("build_index: no images given")
    missing = [key for key in ("clip_arch", "split") if key not in meta]
    if missing:
        raise ValueError(f"build_index: meta needs {missing}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be positive, got {batch_size}, {shard_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    names = [os.path.basename(p) for p in paths]
    if len(set(names)) != len(names):
        raise ValueError("build_index: image basenames must be unique (the index stores basenames)")
    if any("\n" in name for name in names):
        raise ValueError("build_index: image basenames may not contain newlines")


def _fresh_tmp_dir(out_dir: Path) -> Path:
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


def _publish(tmp: Path, out_dir: Path, logger: logging.Logger) -> None:
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


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    with open(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    """For files in a staging directory (atomic through the directory rename; normal permissions)."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# --------------------------------------------------------------------------------------------- build

def _shard_files(work: Path, shard: int) -> tuple[Path, Path]:
    return work / f"shard_{shard:06d}.npy", work / f"shard_{shard:06d}.done.json"


def shard_is_done(work: Path, shard: int) -> bool:
    """A shard counts only once its marker is written, which happens after its embeddings file."""
    npy, done = _shard_files(work, shard)
    return done.is_file() and npy.is_file()


def _embed_shards(paths: list[str], shards: list[int], work: Path, embed_fn: Callable, make_dataset: Callable, *,
                  batch_size: int, num_workers: int, shard_size: int, device: Any, progress: bool,
                  logger: logging.Logger, prefetch_factor: int, desc: str) -> None:
    """Embed the images of `shards` (in order) with one DataLoader; write each shard when complete.

    Batches never straddle a shard, so an image is embedded in the same batch whatever the number of
    processes or the point a build resumed from. On CUDA the device->host copy of batch i overlaps the
    forward pass of batch i+1.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    device = torch.device(device)
    cuda = device.type == "cuda"
    spans = {s: (s * shard_size, min((s + 1) * shard_size, len(paths))) for s in shards}
    flat = np.array([i for s in shards for i in range(*spans[s])], dtype=np.int64)
    batches, offset = [], 0
    for s in shards:
        n = spans[s][1] - spans[s][0]
        batches += [list(range(offset + b, offset + min(b + batch_size, n))) for b in range(0, n, batch_size)]
        offset += n
    loader = DataLoader(make_dataset([paths[i] for i in flat]), batch_sampler=batches, num_workers=num_workers,
                        pin_memory=cuda, prefetch_factor=prefetch_factor if num_workers > 0 else None,
                        persistent_workers=num_workers > 0)
    bar = tqdm(total=len(flat), unit="img", desc=f"index {desc}", disable=not progress, dynamic_ncols=True,
               smoothing=0.05)
    shard: dict[str, Any] = {}

    def take(local: torch.Tensor, emb: torch.Tensor, ok: torch.Tensor, event: Any) -> None:
        if event is not None:
            event.synchronize()
        rows = flat[local.numpy()]
        s = int(rows[0]) // shard_size
        if shard.get("id") != s:
            start, stop = spans[s]
            shard.update(id=s, start=start, rows=np.zeros((stop - start, emb.shape[1]), np.float16), filled=0,
                         failed=[])
        shard["rows"][rows - shard["start"]] = emb.numpy()
        for g in rows[~ok.numpy().astype(bool)]:
            shard["failed"].append(int(g))
            logger.warning("unreadable image skipped: %s", paths[g])
        shard["filled"] += len(rows)
        if shard["filled"] == len(shard["rows"]):
            npy, done = _shard_files(work, s)
            with atomic_write(npy) as f:
                np.save(f, shard["rows"])
            save_json(done, {"shard": s, "start": spans[s][0], "stop": spans[s][1], "dim": int(emb.shape[1]),
                             "failed": shard["failed"]})
            shard.clear()
        bar.update(len(rows))

    autocast = torch.autocast("cuda", dtype=torch.float16) if cuda else contextlib.nullcontext()
    pending = None
    try:
        with torch.inference_mode():
            for local, images, ok in loader:
                with autocast:
                    emb = embed_fn(images.to(device, non_blocking=True))
                if emb.ndim != 2 or emb.shape[0] != len(local):
                    raise ValueError(f"embed_fn must return (B, D), got shape {tuple(emb.shape)} for B={len(local)}")
                emb = F.normalize(emb.float(), dim=-1).to(torch.float16)  # norm in float32, stored as float16
                event = None
                if cuda:
                    host = torch.empty(emb.shape, dtype=torch.float16, pin_memory=True)
                    host.copy_(emb, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                    emb = host
                if pending is not None:
                    take(*pending)
                pending = (local, emb, ok, event)
            if pending is not None:
                take(*pending)
    finally:
        bar.close()
        del loader


def _merge_shards(work: Path, n_shards: int, paths: list[str], tmp: Path) -> tuple[int, int, list[str]]:
    """Concatenate the shards (minus unreadable images) into tmp/; returns (count, dim, failed paths)."""
    markers = []
    for s in range(n_shards):
        if not shard_is_done(work, s):
            raise RuntimeError(f"shard {s} in {work} is missing although every rank finished (did one fail?); "
                               f"run the build again to resume")
        markers.append(json.loads(_shard_files(work, s)[1].read_text()))
    dims = {m["dim"] for m in markers}
    if len(dims) != 1:
        raise RuntimeError(f"shards in {work} have different embedding sizes {sorted(dims)}")
    dim = dims.pop()
    failed = sorted(g for m in markers for g in m["failed"])
    count = len(paths) - len(failed)
    if count == 0:
        raise ValueError(f"none of the {len(paths)} images could be read (e.g. {paths[0]})")
    out = np.lib.format.open_memmap(tmp / EMBEDDINGS_FILE, mode="w+", dtype=np.float16, shape=(count, dim))
    position = 0
    for s, marker in enumerate(markers):
        rows = np.load(_shard_files(work, s)[0], mmap_mode="r")
        if rows.shape != (marker["stop"] - marker["start"], dim):
            raise RuntimeError(f"shard {s} in {work} has shape {rows.shape}; delete it and run the build again")
        keep = np.ones(len(rows), dtype=bool)
        keep[np.asarray(marker["failed"], dtype=np.int64) - marker["start"]] = False
        out[position: position + int(keep.sum())] = rows[keep]
        position += int(keep.sum())
    out.flush()
    del out
    failed_set = set(failed)
    _write_lines(tmp / FILENAMES_FILE, [os.path.basename(p) for i, p in enumerate(paths) if i not in failed_set])
    _write_lines(tmp / FAILED_FILE, [paths[i] for i in failed])
    return count, dim, [paths[i] for i in failed]


# ------------------------------------------------------------------------- the authors' published pickle

# torch's legacy storage archive, as `pickle` stores every tensor storage (torch.storage._load_from_bytes):
# magic number, protocol version and sys-info pickles (constant), then the persistent id
# ('storage', torch.<T>Storage, key, location, numel, None), the key list, numel as int64 and the raw data.
_LEGACY_PREFIX = (b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.\x80\x02}q\x00(X\x10\x00\x00\x00"
                  b"protocol_versionq\x01M\xe9\x03X\r\x00\x00\x00little_endianq\x02\x88X\n\x00\x00\x00type_sizesq"
                  b"\x03}q\x04(X\x05\x00\x00\x00shortq\x05K\x02X\x03\x00\x00\x00intq\x06K\x04X\x04\x00\x00\x00"
                  b"longq\x07K\x04uu.")
_LEGACY_STORAGE = re.compile(rb"\x80\x02\(X\x07\x00\x00\x00storageq\x00ctorch\n(Float|Half|Double)Storage\nq\x01"
                             rb"X(.{4})", re.S)
_LEGACY_NUMEL = re.compile(rb"q\x03(?:K(.)|M(..)|J(.{4}))Ntq\x04Q\.\x80\x02\]q\x00X(.{4})", re.S)
_NUMPY_DTYPES = {b"Float": "<f4", b"Half": "<f2", b"Double": "<f8"}
_ROW_BLOCK = 65536


class _Row:
    """Stands in the unpickled dict for an embedding already copied into the float16 blocks."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _parse_legacy_storage(data: bytes) -> Optional[np.ndarray]:
    """The storage's values as a read-only numpy view of `data`, or None if the layout is not the
    expected one (the caller then uses torch.load(weights_only=True)). Executes nothing."""
    if not data.startswith(_LEGACY_PREFIX):
        return None
    m = _LEGACY_STORAGE.match(data, len(_LEGACY_PREFIX))
    if m is None:
        return None
    key_len = struct.unpack("<I", m.group(2))[0]
    key, p = data[m.end(): m.end() + key_len], m.end() + key_len
    if data[p: p + 3] != b"q\x02X":
        return None
    loc_len = struct.unpack("<I", data[p + 3: p + 7])[0]
    n = _LEGACY_NUMEL.match(data, p + 7 + loc_len)  # the location ('cpu', 'cuda:0', ...) is ignored
    if n is None:
        return None
    numel = (n.group(1)[0] if n.group(1) else struct.unpack("<H", n.group(2))[0] if n.group(2)
             else struct.unpack("<i", n.group(3))[0])
    p = n.end() + struct.unpack("<I", n.group(4))[0]
    if data[n.end(): p] != key or data[p: p + 4] != b"q\x01a.":
        return None
    dtype = np.dtype(_NUMPY_DTYPES[m.group(1)])
    if struct.unpack("<q", data[p + 4: p + 12])[0] != numel or len(data) != p + 12 + numel * dtype.itemsize:
        return None
    return np.frombuffer(data, dtype=dtype, count=numel, offset=p + 12)


class _PublishedReader:
    """Decoders handed to safe_load_pickle: every embedding is cast to float16 into a row block as it is
    read; full blocks go to `spill` (an unnamed temporary file), so the rows never pile up in RAM."""

    def __init__(self, spill: Any) -> None:
        self.spill = spill
        self.block: Optional[np.ndarray] = None
        self.count = 0
        self.dim: Optional[int] = None

    def load_storage(self, data: bytes) -> np.ndarray:
        values = _parse_legacy_storage(data)
        if values is None:  # other torch versions' archives (e.g. zip): torch's own safe loader
            with warnings.catch_warnings():  # TypedStorage deprecation notices
                warnings.simplefilter("ignore", UserWarning)
                storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                tensor = torch.empty(0, dtype=storage.dtype).set_(storage.untyped(), 0, (storage.size(),), (1,))
            values = tensor.float().numpy()
        return values

    def rebuild_tensor(self, storage: Any, offset: int, size: Sequence[int], stride: Sequence[int],
                       *_: Any) -> _Row:
        size = tuple(size)
        if not (len(size) == 1 or (len(size) == 2 and size[0] == 1)):
            raise ValueError(f"expected embeddings of shape (D,), got {size}")
        numel, step = size[-1], (stride[-1] if size[-1] > 1 else 1)
        values = np.asarray(storage)[offset: offset + (numel - 1) * step + 1: step]
        if len(values) != numel:
            raise ValueError(f"tensor of {numel} values does not fit its storage")
        return self.append(values)

    def append(self, values: np.ndarray) -> _Row:
        if self.dim is None:
            self.dim = len(values)
            self.block = np.empty((_ROW_BLOCK, self.dim), dtype=np.float16)
        elif len(values) != self.dim:
            raise ValueError(f"embeddings of different sizes: {self.dim} and {len(values)}")
        self.block[self.count % _ROW_BLOCK] = values
        self.count += 1
        if self.count % _ROW_BLOCK == 0:
            self.spill.write(memoryview(self.block))
        return _Row(self.count - 1)

    def finish(self) -> None:
        if self.count % _ROW_BLOCK:
            self.spill.write(memoryview(self.block[: self.count % _ROW_BLOCK]))
        self.spill.flush()
        self.block = None


def _write_npy_from_spill(path: Path, spill: Any, order: Optional[np.ndarray], count: int, dim: int) -> None:
    """embeddings.npy (count, dim) float16 from the spilled rows, streamed with plain reads and writes
    (no memory maps, so the copy adds no resident memory); `order` gathers rows when not None."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(np.float16).str, "fortran_order": False,
                                                 "shape": (count, dim)})
        if order is None:
            spill.seek(0)
            buffer = np.empty((_ROW_BLOCK, dim), dtype=np.float16)
            for start in range(0, count, _ROW_BLOCK):
                view = memoryview(buffer[: min(_ROW_BLOCK, count - start)]).cast("B")
                if spill.readinto(view) != len(view):
                    raise RuntimeError("the temporary copy of the published rows is truncated")
                f.write(view)
        else:
            rows = np.memmap(spill, dtype=np.float16, mode="r", shape=(int(order.max()) + 1, dim))
            for start in range(0, count, _ROW_BLOCK):
                f.write(memoryview(np.ascontiguousarray(rows[order[start: start + _ROW_BLOCK]])).cast("B"))
            del rows


def _read_published_pickle(path: Path, spill: Any) -> tuple[list[str], Optional[np.ndarray], int]:
    """Basenames in dict order, the spill-file row of each (None when in order) and the dimension; the
    float16 rows are in `spill`."""
    reader = _PublishedReader(spill)
    obj = safe_load_pickle(path, overrides={("torch.storage", "_load_from_bytes"): reader.load_storage,
                                            ("torch._utils", "_rebuild_tensor"): reader.rebuild_tensor,
                                            ("torch._utils", "_rebuild_tensor_v2"): reader.rebuild_tensor})
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict basename -> embedding, got {type(obj).__name__}")
    filenames, order = [], np.empty(len(obj), dtype=np.int64)
    for position, key in enumerate(list(obj)):
        value = obj.pop(key)  # drop each entry as soon as it is accounted for
        if not isinstance(key, str) or "\n" in key:
            raise ValueError(f"{path}: keys must be image basenames, got {key!r}")
        if not isinstance(value, _Row):  # numpy arrays or tensors rebuilt another way
            if isinstance(value, torch.Tensor):
                value = value.detach().float().cpu().numpy()
            value = reader.append(np.asarray(value, dtype=np.float32).reshape(-1))
        order[position] = value.index
        filenames.append(key)
    reader.finish()
    in_order = reader.count == len(order) and np.array_equal(order, np.arange(len(order)))
    return filenames, None if in_order else order, reader.dim or 0
