"""The authors' published index pickle (SPEC 2): convert it into the index layout of image_index.storage.

`filename_to_{tag}_{split}_img_embedding.pkl` is a dict basename -> float32 (D,) tensor. It is read
through utils.io.safe_load_pickle with streaming decoders (_PublishedReader), and the staged index is
published with image_index.storage.publish, so nothing visible is written unless the whole file is valid.
"""
from __future__ import annotations

import io
import logging
import os
import re
import shutil
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from image_index.storage import (EMBEDDINGS_FILE, EMBEDDINGS_FP32_FILE, FILENAMES_FILE, FORMAT_VERSION, META_FILE,
                                 ImageNetIndex, IndexNotFoundError, fresh_tmp_dir, index_dir, load_index,
                                 missing_index_message, publish, published_pickle_path, write_json, write_lines)
from utils.io import safe_load_pickle

# SPEC 2: the extraction script's default input size per CLIP (recorded in meta.json of converted pickles).
DEFAULT_IMAGE_SIZES = {"RN50": 224, "RN50x16": 384, "RN50x64": 448, "ViT-B/32": 224, "ViT-B/16": 224,
                       "ViT-L/14": 224, "ViT-L/14@336px": 336}


def convert_published_pickle(pkl_path: str | os.PathLike, out_dir: str | os.PathLike, clip_arch: str, split: str,
                             *, expected_dim: Optional[int] = None,
                             logger: Optional[logging.Logger] = None) -> Path:
    """Convert the authors' `filename_to_{tag}_{split}_img_embedding.pkl` (dict basename -> float32 (D,)
    tensor, SPEC 2) into the index layout at `out_dir`, keeping the dict order.

    Read through utils.io.safe_load_pickle (no code in the file can run; CUDA storages land on the
    CPU) with streaming decoders (_PublishedReader): each row is spilled as float32 to an unnamed
    temporary file as it is read, so peak memory stays near 1.3x the pickle's size (the unpickler's
    memo keeps the raw bytes until the end). Values are cast as they are (not re-normalised).
    embeddings.npy holds the float16 rows. If any value is not exactly a float16 number, the float32
    rows are also kept, in embeddings_fp32.npy, with bounds for exact retrieval (meta "float32_rows":
    the largest ||e32 - e16||_2 and ||e16||_2 over the rows; reco.retrieval.ExactRows); the original's
    float16-computed embeddings (SPEC 2) need no such copy.
    Nothing visible is written unless the whole file is read and valid.
    """
    pkl_path, out_dir, logger = Path(pkl_path), Path(out_dir), logger or logging.getLogger("reco")
    logger.info("converting the published index %s -> %s", pkl_path, out_dir)
    # Rows spill to an unnamed temporary file beside the pickle: nothing visible is created before the
    # whole file has been read and checked, and the rows never sit in RAM with the unpickler's memo.
    with tempfile.TemporaryFile(dir=pkl_path.parent) as spill:
        filenames, order, dim, fits_float16 = _read_published_pickle(pkl_path, spill)
        if not filenames or dim == 0:
            raise ValueError(f"{pkl_path}: the published index is empty")
        if expected_dim is not None and dim != expected_dim:
            raise ValueError(f"{pkl_path} holds {dim}-dim embeddings but the CLIP in use ({clip_arch}) gives "
                             f"{expected_dim}-dim ones: it was made with another CLIP")
        tmp = fresh_tmp_dir(out_dir)
        try:
            float32_rows = _write_npy_from_spill(tmp, spill, order, len(filenames), dim,
                                                 keep_float32=not fits_float16)
            write_lines(tmp / FILENAMES_FILE, filenames)
            meta = {"clip_arch": clip_arch, "split": split, "dim": dim, "count": len(filenames),
                    "image_size": DEFAULT_IMAGE_SIZES.get(clip_arch), "n_failed": 0, "dtype": "float16",
                    "format_version": FORMAT_VERSION, "source": "published_pickle", "source_file": pkl_path.name}
            if float32_rows is not None:
                meta["float32_rows"] = float32_rows
                logger.info("the published embeddings are not all float16 numbers: their float32 values are "
                            "kept in %s for exact retrieval (largest float16 rounding %.2e)",
                            EMBEDDINGS_FP32_FILE, float32_rows["max_residual"])
            write_json(tmp / META_FILE, meta)
            publish(tmp, out_dir, logger)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %d embeddings (dim %d) into %s", len(filenames), dim, out_dir)
    return out_dir


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
    """Stands in the unpickled dict for an embedding already copied into the row blocks."""

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
    """Decoders handed to safe_load_pickle: every embedding is cast to float32 into a row block as it is
    read; full blocks go to `spill` (an unnamed temporary file), so the rows never pile up in RAM.
    fits_float16 stays True while every value read is exactly a float16 number."""

    def __init__(self, spill: Any) -> None:
        self.spill = spill
        self.block: Optional[np.ndarray] = None
        self.count = 0
        self.dim: Optional[int] = None
        self.fits_float16 = True

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
            self.block = np.empty((_ROW_BLOCK, self.dim), dtype=np.float32)
        elif len(values) != self.dim:
            raise ValueError(f"embeddings of different sizes: {self.dim} and {len(values)}")
        self.block[self.count % _ROW_BLOCK] = values
        self.count += 1
        if self.count % _ROW_BLOCK == 0:
            self._spill(self.block)
        return _Row(self.count - 1)

    def _spill(self, rows: np.ndarray) -> None:
        if self.fits_float16:
            self.fits_float16 = bool(np.array_equal(rows.astype(np.float16).astype(np.float32), rows))
        self.spill.write(memoryview(rows))

    def finish(self) -> None:
        if self.count % _ROW_BLOCK:
            self._spill(self.block[: self.count % _ROW_BLOCK])
        self.spill.flush()
        self.block = None


def _write_npy_from_spill(tmp: Path, spill: Any, order: Optional[np.ndarray], count: int, dim: int, *,
                          keep_float32: bool) -> Optional[dict[str, Any]]:
    """embeddings.npy (count, dim) float16 (and with keep_float32 embeddings_fp32.npy) in tmp from the
    spilled float32 rows, streamed with plain reads and writes (no memory maps of the output, so the
    copy adds no resident memory); `order` gathers rows when not None. Returns the "float32_rows" meta
    entry with keep_float32, else None."""
    outputs = [(EMBEDDINGS_FILE, np.float16)] + ([(EMBEDDINGS_FP32_FILE, np.float32)] if keep_float32 else [])
    files = [open(tmp / name, "wb") for name, _ in outputs]
    max_residual = max_norm = 0.0
    try:
        for f, (_, dtype) in zip(files, outputs):
            np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                     "shape": (count, dim)})
        for block in _spilled_blocks(spill, order, count, dim):
            half = block.astype(np.float16)
            files[0].write(memoryview(half).cast("B"))
            if keep_float32:
                files[1].write(memoryview(block).cast("B"))
                for s in range(0, len(block), 8192):  # float64 in small pieces: bounds that hold exactly
                    half64 = half[s: s + 8192].astype(np.float64)
                    max_norm = max(max_norm, float(np.linalg.norm(half64, axis=1).max()))
                    max_residual = max(max_residual, float(np.linalg.norm(block[s: s + 8192] - half64, axis=1).max()))
    finally:
        for f in files:
            f.close()
    if not keep_float32:
        return None
    # 1e-9: rounding of the float64 norms, so that both stay upper bounds
    return {"file": EMBEDDINGS_FP32_FILE, "max_residual": max_residual * (1 + 1e-9),
            "max_norm": max_norm * (1 + 1e-9)}


def _spilled_blocks(spill: Any, order: Optional[np.ndarray], count: int, dim: int):
    """The spilled float32 rows in index order, in blocks of _ROW_BLOCK rows (one reused buffer)."""
    if order is None:
        spill.seek(0)
        buffer = np.empty((_ROW_BLOCK, dim), dtype=np.float32)
        for start in range(0, count, _ROW_BLOCK):
            block = buffer[: min(_ROW_BLOCK, count - start)]
            view = memoryview(block).cast("B")
            if spill.readinto(view) != len(view):
                raise RuntimeError("the temporary copy of the published rows is truncated")
            yield block
    else:
        rows = np.memmap(spill, dtype=np.float32, mode="r", shape=(int(order.max()) + 1, dim))
        try:
            for start in range(0, count, _ROW_BLOCK):
                yield np.ascontiguousarray(rows[order[start: start + _ROW_BLOCK]])
        finally:
            del rows


def _read_published_pickle(path: Path, spill: Any) -> tuple[list[str], Optional[np.ndarray], int, bool]:
    """Basenames in dict order, the spill-file row of each (None when in order), the dimension and whether
    every value is a float16 number; the float32 rows are in `spill`."""
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
    return filenames, None if in_order else order, reader.dim or 0, reader.fits_float16


def ensure_index(dir_imagenet: str | os.PathLike, clip_arch: str, split: str, expected_dim: Optional[int] = None,
                 logger: Optional[logging.Logger] = None) -> ImageNetIndex:
    """The index of (clip_arch, split): loaded if built, else converted from the authors' published
    pickle if it is in dir_imagenet, else IndexNotFoundError saying how to get one."""
    directory = index_dir(dir_imagenet, clip_arch, split)
    if not directory.exists():
        pkl = published_pickle_path(dir_imagenet, clip_arch, split)
        if not pkl.is_file():
            raise IndexNotFoundError(missing_index_message(dir_imagenet, clip_arch, split))
        convert_published_pickle(pkl, directory, clip_arch, split, expected_dim=expected_dim, logger=logger)
    return load_index(directory, expected_dim=expected_dim, expected_arch=clip_arch)
