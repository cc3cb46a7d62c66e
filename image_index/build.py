"""Building the ImageNet index (image_index.storage for the layout): embed ImageNet images, sharded and
resumable.

A build keeps its finished shards in `.{tag}_{split}.partial-<plan>/` beside the index directory until
the merge, which stages the index and publishes it with image_index.storage.publish. Models and datasets come
in as callables (no networks/ or datasets/ imports).

Building from an entry script (single process or `torchrun --nproc_per_node=N`):

    rank, world_size, _ = utils.distributed.init_distributed()
    model, _ = networks.build_clip(config.clip_arch, config.weights.clip, device=device, precision="fp16")
    size = networks.clip_image_size(model)
    build_index(
        datasets.imagenet.list_imagenet_images(dir_imagenet, split),
        embed_fn=lambda x: F.normalize(model.encode_image(x), dim=-1),
        out_dir=index_dir(dir_imagenet, config.clip_arch, split),
        meta={"clip_arch": config.clip_arch, "split": split, "image_size": size,
              "clip_weights": reco_api.collection.clip_weights_record(settings.models.clip, memo)},
        make_dataset=lambda paths: datasets.imagenet.IndexBuildDataset(paths, size),
        batch_size=config.index_batch_size, num_workers=config.n_workers, shard_size=config.index_shard_size,
        device=device, rank=rank, world_size=world_size, barrier=utils.distributed.barrier, logger=logger)
    utils.distributed.cleanup()
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from image_index.storage import (EMBEDDINGS_FILE, FAILED_FILE, FILENAMES_FILE, FORMAT_VERSION, META_FILE,
                                 fresh_tmp_dir, load_index, publish, write_json, write_lines)
from utils.file_lock import folder_lock
from utils.io import atomic_write, save_json


def build_index(image_paths: Sequence[str | os.PathLike], embed_fn: Callable, out_dir: str | os.PathLike,
                meta: dict[str, Any], *, make_dataset: Callable, batch_size: int = 64, num_workers: int = 4,
                shard_size: int = 8192, device: Any = "cpu", rank: int = 0, world_size: int = 1,
                progress: bool = True, barrier: Optional[Callable[[], None]] = None,
                logger: Optional[logging.Logger] = None, prefetch_factor: int = 2,
                autocast_dtype: torch.dtype = torch.float16, names: Optional[Sequence[str]] = None) -> Path:
    """Embed `image_paths` into the index at `out_dir`: sharded, resumable, torchrun-aware.

    embed_fn(images (B, 3, S, S) on `device`) -> (B, D), called under inference_mode (and autocast to
    `autocast_dtype` on CUDA: float16 as the original, or bfloat16, the same speed on recent GPUs);
    rows are L2-normalised here in float32 and stored as float16.
    make_dataset(paths) -> Dataset whose item i is (i, image (3, S, S), ok) (IndexBuildDataset; the
    image may be uint8, embed_fn then normalises it on the device).
    meta: at least clip_arch and split (image_size recommended), written to meta.json.
    Work is cut into shards of `shard_size` images (the last shard of each run is lost at worst); the
    shards still missing when the job starts are dealt round-robin to the ranks (shards r, r+W, ... on a
    fresh build), so the split is deterministic; rank 0 merges once all ranks have passed `barrier`.
    Unreadable images are left out of the index, counted and listed in failed_images.txt.
    names: what filenames.txt stores for each path (default: the basenames, ImageNet's format; a folder
    collection stores relative paths, basenames need not be unique there).
    Finished shards are only reused by a build with the same paths, shard_size and meta (keep meta
    deterministic; it holds the CLIP weights' identity, so shards of two weights never mix): a build whose
    plan differs from an interrupted one's logs that and starts afresh, in its own work directory (the
    old one is only removed once this build completes, so going back to the old setting still resumes
    it). Returns out_dir on every rank once the index is complete.
    """
    out_dir, logger = Path(out_dir), logger or logging.getLogger("reco")
    paths = [str(p) for p in image_paths]
    names = [os.path.basename(p) for p in paths] if names is None else [str(n) for n in names]
    if len(names) != len(paths):
        raise ValueError(f"build_index: {len(names)} names for {len(paths)} images")
    _check_build_args(paths, names, meta, batch_size, shard_size, rank, world_size)
    if world_size > 1 and barrier is None:
        raise ValueError("build_index with world_size > 1 needs a barrier (e.g. utils.distributed.barrier)")
    sync = barrier or (lambda: None)
    if _complete(out_dir, rank, logger):
        return out_dir
    # One build per index at a time: a second job waits for the first (rank 0 holds the lock for its job,
    # whose other ranks wait at the barrier), then finds the index complete.
    lock = (folder_lock(out_dir.parent, f"the index {out_dir}", wait_s=float("inf"), on_wait=logger.warning,
                        lock_name=f".{out_dir.name}.lock") if rank == 0 else contextlib.nullcontext())
    with lock:
        sync()
        if _complete(out_dir, rank, logger):
            return out_dir
        return _build_unlocked(paths, names, embed_fn, out_dir, meta, make_dataset=make_dataset,
                               batch_size=batch_size, num_workers=num_workers, shard_size=shard_size,
                               device=device, rank=rank, world_size=world_size, progress=progress, sync=sync,
                               logger=logger, prefetch_factor=prefetch_factor, autocast_dtype=autocast_dtype)


def _complete(out_dir: Path, rank: int, logger: logging.Logger) -> bool:
    if not (out_dir / META_FILE).is_file():
        return False
    load_index(out_dir)  # a complete index is there (published atomically); check it opens
    if rank == 0:
        logger.info("ImageNet index already built: %s", out_dir)
    return True


def _build_unlocked(paths: list[str], names: list[str], embed_fn: Callable, out_dir: Path, meta: dict[str, Any], *,
                    make_dataset: Callable, batch_size: int, num_workers: int, shard_size: int, device: Any,
                    rank: int, world_size: int, progress: bool, sync: Callable[[], None], logger: logging.Logger,
                    prefetch_factor: int, autocast_dtype: torch.dtype) -> Path:
    plan = json.dumps({"paths": paths, "shard_size": shard_size, "meta": meta}, sort_keys=True, default=str)
    work = out_dir.parent / f".{out_dir.name}.partial-{hashlib.sha1(plan.encode()).hexdigest()[:12]}"
    plan_record = {"n_images": len(paths), "shard_size": shard_size, "meta": meta}
    if rank == 0:
        _report_other_builds(out_dir, work, plan_record, logger)
    work.mkdir(parents=True, exist_ok=True)
    if rank == 0 and not (work / "plan.json").is_file():
        save_json(work / "plan.json", plan_record)
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
                     prefetch_factor=prefetch_factor, desc=out_dir.name, autocast_dtype=autocast_dtype)
    sync()
    if rank == 0:
        tmp = fresh_tmp_dir(out_dir)
        try:
            n_kept, dim, failed = _merge_shards(work, n_shards, paths, names, tmp)
            write_json(tmp / META_FILE, {**meta, "dim": dim, "count": n_kept, "n_failed": len(failed),
                                         "dtype": "float16", "format_version": FORMAT_VERSION, "source": "build"})
            publish(tmp, out_dir, logger)
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

def _check_build_args(paths: list[str], names: list[str], meta: dict[str, Any], batch_size: int, shard_size: int,
                      rank: int, world_size: int) -> None:
    if not paths:
        raise ValueError("build_index: no images given")
    missing = [key for key in ("clip_arch", "split") if key not in meta]
    if missing:
        raise ValueError(f"build_index: meta needs {missing}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be positive, got {batch_size}, {shard_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    if len(set(names)) != len(names):
        raise ValueError("build_index: image names must be unique (the index stores them: basenames by default)")
    if any("\n" in name for name in names):
        raise ValueError("build_index: image names may not contain newlines")


def _report_other_builds(out_dir: Path, work: Path, plan: dict[str, Any], logger: logging.Logger) -> None:
    """Log each interrupted build of `out_dir` with another plan (e.g. other CLIP weights): its shards are
    not resumed by this build, which starts afresh; they stay until this build completes (then removed)."""
    for other in sorted(out_dir.parent.glob(f".{out_dir.name}.partial-*")):
        if other == work:
            continue
        try:
            recorded = json.loads((other / "plan.json").read_text())
            changes = _plan_changes(recorded, plan) if isinstance(recorded, dict) else ["plan.json is not a record"]
        except (OSError, ValueError) as e:
            changes = [f"its plan.json is unreadable ({e})"]
        logger.warning("not resuming the interrupted build in %s (%d finished shard(s)): it was made with another "
                       "setting (%s); this build embeds every image again", other,
                       len(list(other.glob("shard_*.done.json"))), "; ".join(changes) or "another image list")


def _plan_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """'key: old -> new' for each top-level value and meta value of two build plans that differ."""
    def flat(plan: dict[str, Any]) -> dict[str, Any]:
        meta = plan.get("meta") if isinstance(plan.get("meta"), dict) else {}
        return {**{k: v for k, v in plan.items() if k != "meta"}, **{f"meta.{k}": v for k, v in meta.items()}}

    old, new = flat(recorded), flat(current)
    return [f"{key}: {json.dumps(old.get(key), default=str)} -> {json.dumps(new.get(key), default=str)}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _shard_files(work: Path, shard: int) -> tuple[Path, Path]:
    return work / f"shard_{shard:06d}.npy", work / f"shard_{shard:06d}.done.json"


def _plan_digest(work: Path) -> str:
    """The digest of the build plan a work directory is named after (its shard markers record it too)."""
    return work.name.rsplit("-", 1)[-1]


def shard_is_done(work: Path, shard: int) -> bool:
    """A shard counts only once its marker is written, which happens after its embeddings file, and only
    if the marker records the plan of this work directory (a shard's own record of what made it)."""
    npy, done = _shard_files(work, shard)
    if not (done.is_file() and npy.is_file()):
        return False
    try:
        return json.loads(done.read_text()).get("plan") == _plan_digest(work)
    except (OSError, ValueError, AttributeError):
        return False


def _embed_shards(paths: list[str], shards: list[int], work: Path, embed_fn: Callable, make_dataset: Callable, *,
                  batch_size: int, num_workers: int, shard_size: int, device: Any, progress: bool,
                  logger: logging.Logger, prefetch_factor: int, desc: str, autocast_dtype: torch.dtype) -> None:
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
                             "failed": shard["failed"], "plan": _plan_digest(work)})
            shard.clear()
        bar.update(len(rows))

    autocast = torch.autocast("cuda", dtype=autocast_dtype) if cuda else contextlib.nullcontext()
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


def _merge_shards(work: Path, n_shards: int, paths: list[str], names: list[str],
                  tmp: Path) -> tuple[int, int, list[str]]:
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
    write_lines(tmp / FILENAMES_FILE, [name for i, name in enumerate(names) if i not in failed_set])
    write_lines(tmp / FAILED_FILE, [paths[i] for i in failed])
    return count, dim, [paths[i] for i in failed]
