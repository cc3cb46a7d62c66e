"""Safe file I/O: atomic writes and a restricted unpickler for the authors' published pickles.

Every cache, checkpoint and result file goes through `atomic_write` (temp file in the same directory,
fsync, rename), so an interrupted job never leaves a half-written file under the final name.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def strict_json_value(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, so that it is strict JSON (RFC 8259).

    Metrics of a class absent from both ground truth and prediction are NaN: they become null.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return strict_json_value(obj.item())
    if isinstance(obj, dict):
        return {key: strict_json_value(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json_value(value) for value in obj]
    return obj


def save_json(path: str | os.PathLike, obj: Any, indent: int = 2, sort_keys: bool = False) -> None:
    """Atomically write strict JSON: NaN and infinities are written as null (see strict_json_value)."""
    with atomic_write(path, "w") as f:
        json.dump(strict_json_value(obj), f, indent=indent, sort_keys=sort_keys, allow_nan=False)
        f.write("\n")


def describe_exception(error: BaseException) -> str:
    """One line saying what went wrong: the type and the first line of the message.

    Some readers raise errors whose message alone says nothing (torch.load of a text file raises
    KeyError: 101, of random bytes IndexError); others span many lines (torch's weights_only refusal).
    """
    lines = str(error).strip().splitlines()
    first = lines[0].strip() if lines else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Atomically `torch.save` a checkpoint or state_dict."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def save_pickle(obj: Any, path: str | os.PathLike) -> None:
    """Atomically pickle `obj` (tensors should be on the CPU)."""
    with atomic_write(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def save_png(path: str | os.PathLike, array: np.ndarray, text: Optional[Mapping[str, str]] = None) -> None:
    """Atomically write a uint8 array as PNG: (H, W) -> mode "L", (H, W, 3) -> RGB; `text`: tEXt chunks
    (read back as PIL's `Image.open(path).text`)."""
    from PIL import Image, PngImagePlugin

    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"save_png expects uint8, got {array.dtype} for {path}")
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    with atomic_write(path, "wb") as f:
        Image.fromarray(array).save(f, format="PNG", pnginfo=info)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


def _load_storage_from_bytes(data: bytes) -> Any:
    # A storage inside a plain pickle is a nested torch.save archive; weights_only refuses code and
    # map_location puts storages saved on CUDA onto the CPU.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_device_tensor_from_numpy(data: Any, dtype: torch.dtype, device: str, requires_grad: bool):
    tensor = torch.from_numpy(data).to(dtype=dtype)
    tensor.requires_grad = requires_grad
    return tensor


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles spell a bytes object as _codecs.encode(text, "latin1"); nothing else is allowed.
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode(encoding)


# The functions numpy's own pickles call to rebuild arrays and scalars, taken from numpy's public
# pickle protocol (__reduce__) rather than from its private numpy.core / numpy._core modules.
_NUMPY_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_NUMPY_SCALAR = np.float64(0).__reduce__()[0]
# torch._utils._rebuild_*: the globals torch's pickles name (fixed by the file format); torch has no
# public alias for them, so the restricted unpickler must reference them here.
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): __import__("collections").OrderedDict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "complex"): complex,
    ("builtins", "bool"): bool,
    ("builtins", "str"): str,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): getattr(torch._utils, "_rebuild_tensor_v3", None),
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): _rebuild_device_tensor_from_numpy,
    ("torch", "Size"): torch.Size,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("numpy._core.multiarray", "scalar"): _NUMPY_SCALAR,
    ("torch", "device"): torch.device,
}
for _name in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"):
    _SAFE_GLOBALS[("torch", f"{_name}Storage")] = getattr(torch, f"{_name}Storage")
for _dtype in ("float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"):
    _SAFE_GLOBALS[("torch", _dtype)] = getattr(torch, _dtype)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, overrides: Optional[Mapping[tuple[str, str], Any]] = None) -> None:
        super().__init__(file)
        self._globals = {**_SAFE_GLOBALS, **(overrides or {})}

    def find_class(self, module: str, name: str) -> Any:
        target = self._globals.get((module, name))
        if target is None:
            raise UnsafePickleError(
                f"refusing to unpickle global '{module}.{name}': only plain containers, numbers, strings, "
                "numpy arrays and torch tensors are allowed"
            )
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r} in a plain pickle")


def safe_load_pickle(path: str | os.PathLike, overrides: Optional[Mapping[tuple[str, str], Any]] = None) -> Any:
    """Load a pickle holding only dicts/lists/tuples/str/numbers, numpy arrays and torch tensors.

    Tensors saved on CUDA land on the CPU. Any other global (a class, a function such as os.system)
    raises `UnsafePickleError` naming it, before anything it refers to is called.
    `overrides` replaces the callables of allowed globals with the caller's own (e.g. a streaming
    tensor decoder, image_index.published.convert_published_pickle); it cannot allow any other global.
    """
    path = Path(path)
    unknown = sorted(set(overrides or ()) - set(_SAFE_GLOBALS))
    if unknown:
        raise ValueError(f"overrides may only replace allowed globals, not {unknown}")
    if not path.is_file():
        raise FileNotFoundError(f"pickle not found: {path}")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, overrides).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, RuntimeError) as e:
        raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
