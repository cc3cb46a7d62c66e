"""The weights of a TorchScript archive (OpenAI's CLIP releases), read without running any of its code.

`torch.jit.load` compiles the archive's code and runs it (a class's `__setstate__` runs while loading,
and can write files). This reader never does: it unpickles `data.pkl` with a restricted unpickler in
which every scripted object becomes a plain attribute holder, and the only callables are our own tensor
rebuilders over the archive's storage records (`data/<key>`). The code files are only parsed (`ast`,
never executed) for each class's `__parameters__` and `__buffers__` declarations, which say which tensor
attributes `state_dict()` holds. Any other global, a class not declared in the archive, or a class that
defines `__setstate__` is refused with an error naming it.

The result has exactly the keys and tensors of `torch.jit.load(path).state_dict()`.
"""
from __future__ import annotations

import ast
import collections
import os
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Optional, Union

import torch

from utils.io import UnsafePickleError

# Storage classes named in persistent ids -> element dtype (the file format's fixed spelling).
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in _STORAGE_DTYPES.values()}
# How TorchScript tags typed lists and dicts in data.pkl; the value itself is all we keep.
_CONTAINER_TAGS = ("build_intlist", "build_floatlist", "build_doublelist", "build_boollist", "build_tensorlist")
_STORAGE_KEY = re.compile(r"[A-Za-z0-9_]+")
_MAX_DEPTH = 200


class TorchScriptArchiveError(ValueError):
    """The file is not a TorchScript archive this reader accepts (one line says why)."""


@dataclass(frozen=True)
class _ClassDeclaration:
    parameters: tuple[str, ...]
    buffers: tuple[str, ...]
    is_module: bool
    methods: frozenset[str]


class _Record:
    """A scripted object as plain data: its TorchScript class name and its attributes."""

    type_name = ""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(name, str) for name in state):
            raise UnsafePickleError(f"class '{self.type_name}' is stored through its own __getstate__ "
                                    f"(a {type(state).__name__}, not its attributes)")
        self.attributes = state


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def read_torchscript_state_dict(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """The state dict of the TorchScript module in `path`, on the CPU, without executing anything.

    Raises TorchScriptArchiveError (one line, without the path: callers name the file and the key).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive)
            _check_byte_order(archive, prefix)
            classes = _class_declarations(archive, prefix)
            root = _unpickle_data(archive, prefix, classes)
    except zipfile.BadZipFile as error:
        raise TorchScriptArchiveError(f"not a readable zip archive ({error})") from None
    except UnsafePickleError as error:
        raise TorchScriptArchiveError(f"refused: {error}") from None
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise TorchScriptArchiveError(f"data.pkl is not a readable TorchScript pickle "
                                      f"({type(error).__name__}: {error})") from None
    if not isinstance(root, _Record) or not classes[root.type_name].is_module:
        raise TorchScriptArchiveError(f"data.pkl holds no TorchScript module (a {type(root).__name__})")
    state_dict: dict[str, torch.Tensor] = {}
    _collect(root, "", classes, state_dict, depth=0)
    return state_dict


def _archive_prefix(archive: zipfile.ZipFile) -> str:
    """The one top folder every entry lives in ('RN50x16/'), as torch writes archives."""
    pickles = [name for name in archive.namelist() if PurePosixPath(name).name == "data.pkl"
               and len(PurePosixPath(name).parts) == 2]
    if len(pickles) != 1:
        raise TorchScriptArchiveError(f"expected one <folder>/data.pkl in the archive, found {len(pickles)}")
    return pickles[0][: -len("data.pkl")]


def _check_byte_order(archive: zipfile.ZipFile, prefix: str) -> None:
    names = set(archive.namelist())
    order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip() \
        if prefix + "byteorder" in names else "little"
    if order != "little" or sys.byteorder != "little":
        raise TorchScriptArchiveError(f"tensors stored {order}-endian on a {sys.byteorder}-endian machine")


def _class_declarations(archive: zipfile.ZipFile, prefix: str) -> dict[str, _ClassDeclaration]:
    """Qualified class name ('__torch__.torch.nn.modules.conv.Conv2d') -> its declarations, parsed from
    the archive's code files (ast only: nothing is compiled or run)."""
    classes: dict[str, _ClassDeclaration] = {}
    code = prefix + "code/"
    for name in archive.namelist():
        if not (name.startswith(code) and name.endswith(".py")):
            continue
        qualifier = name[len(code):-len(".py")].replace("/", ".")
        try:
            tree = ast.parse(archive.read(name).decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError) as error:
            raise TorchScriptArchiveError(f"cannot parse the code file {name} ({type(error).__name__})") from None
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes[f"{qualifier}.{node.name}"] = _declaration(node)
    for type_name, declaration in classes.items():
        if "__setstate__" in declaration.methods:
            raise TorchScriptArchiveError(f"refused: class '{type_name}' defines __setstate__, code that "
                                          "torch.jit.load would run; a weights file needs none")
    return classes


def _declaration(node: ast.ClassDef) -> _ClassDeclaration:
    lists: dict[str, tuple[str, ...]] = {}
    for statement in node.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                and isinstance(statement.targets[0], ast.Name) \
                and statement.targets[0].id in ("__parameters__", "__buffers__"):
            value = statement.value
            names = value.elts if isinstance(value, (ast.List, ast.Tuple)) else []
            lists[statement.targets[0].id] = tuple(e.value for e in names
                                                   if isinstance(e, ast.Constant) and isinstance(e.value, str))
    bases = {base.id if isinstance(base, ast.Name) else getattr(base, "attr", "") for base in node.bases}
    methods = frozenset(s.name for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return _ClassDeclaration(parameters=lists.get("__parameters__", ()), buffers=lists.get("__buffers__", ()),
                             is_module="Module" in bases or "__parameters__" in lists, methods=methods)


class _ArchiveUnpickler(pickle.Unpickler):
    """Scripted classes -> _Record subclasses; tensors -> our rebuilders over the archive's storages."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str,
                 classes: dict[str, _ClassDeclaration]) -> None:
        super().__init__(file)
        self._archive, self._prefix, self._classes = archive, prefix, classes
        self._record_types: dict[str, type] = {}
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return self._record_type(f"{module}.{name}")
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"):
            return _REBUILDERS[name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and name in _CONTAINER_TAGS:
            return _container
        if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
            return _untagged
        raise UnsafePickleError(f"global '{module}.{name}' is not allowed in a weights archive (only "
                                "tensors, containers and the archive's own module classes are)")

    def _record_type(self, type_name: str) -> type:
        if type_name not in self._classes:
            raise UnsafePickleError(f"class '{type_name}' is not declared in the archive's code")
        if type_name not in self._record_types:
            self._record_types[type_name] = type("Record", (_Record,), {"type_name": type_name})
        return self._record_types[type_name]

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _, numel = pid
        if key not in self._storages:
            self._storages[key] = self._read_storage(key, storage_type.dtype, numel)
        storage = self._storages[key]
        if storage.dtype != storage_type.dtype or storage.numel() != numel:
            raise UnsafePickleError(f"storage record {key} is used with two different types or sizes")
        return storage

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """The record data/<key> as a flat (numel,) tensor, read straight into its memory."""
        if not _STORAGE_KEY.fullmatch(key) or numel < 0:
            raise UnsafePickleError(f"malformed storage record name {key!r}")
        try:
            info = self._archive.getinfo(f"{self._prefix}data/{key}")
        except KeyError:
            raise UnsafePickleError(f"storage record data/{key} is missing") from None
        flat = torch.empty(numel, dtype=dtype)
        nbytes = numel * flat.element_size()
        if info.file_size != nbytes:
            raise UnsafePickleError(f"storage record data/{key} holds {info.file_size} bytes, "
                                    f"{nbytes} expected")
        if nbytes:
            view = memoryview(flat.view(torch.uint8).numpy()).cast("B")
            with self._archive.open(info) as f:
                filled = 0
                while filled < nbytes:
                    count = f.readinto(view[filled:])
                    if not count:
                        raise UnsafePickleError(f"storage record data/{key} is truncated")
                    filled += count
        return flat


def _unpickle_data(archive: zipfile.ZipFile, prefix: str, classes: dict[str, _ClassDeclaration]) -> Any:
    with archive.open(prefix + "data.pkl") as f:
        return _ArchiveUnpickler(f, archive, prefix, classes).load()


def _strided(storage: Any, offset: Any, size: Any, stride: Any, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """A tensor over a flat storage, after checking that it stays inside it."""
    if not isinstance(storage, torch.Tensor):
        raise UnsafePickleError("a tensor must be rebuilt from a storage record")
    if not (isinstance(offset, int) and all(isinstance(n, int) and n >= 0 for n in (*size, *stride))
            and len(size) == len(stride) and offset >= 0):
        raise UnsafePickleError("malformed tensor size, stride or offset")
    if dtype is not None and dtype != storage.dtype:
        raise UnsafePickleError(f"tensor of {dtype} over a {storage.dtype} storage")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= storage.numel():
        raise UnsafePickleError("a tensor reaches past the end of its storage record")
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _rebuild_v1(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _strided(storage, offset, size, stride)


def _rebuild_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    return _strided(storage, offset, size, stride)


def _rebuild_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, backward_hooks: Any,
                dtype: Any, metadata: Any = None) -> torch.Tensor:
    return _strided(storage, offset, size, stride, dtype)


_REBUILDERS = {"_rebuild_tensor": _rebuild_v1, "_rebuild_tensor_v2": _rebuild_v2, "_rebuild_tensor_v3": _rebuild_v3}


def _container(value: Any) -> Any:
    return value


def _untagged(value: Any, type_tag: Any) -> Any:
    return value


def _collect(record: _Record, prefix: str, classes: dict[str, _ClassDeclaration],
             out: dict[str, torch.Tensor], depth: int) -> None:
    """Parameters, then buffers, then submodules, each in attribute order: nn.Module.state_dict's order."""
    if depth > _MAX_DEPTH:
        raise TorchScriptArchiveError(f"modules nested deeper than {_MAX_DEPTH} levels")
    declaration = classes[record.type_name]
    attributes = getattr(record, "attributes", {})
    for declared in (declaration.parameters, declaration.buffers):
        for name in [name for name in attributes if name in declared]:
            value = attributes[name]
            if value is None:  # e.g. a Linear without bias: absent from state_dict, as in torch
                continue
            if not isinstance(value, torch.Tensor):
                raise TorchScriptArchiveError(f"{prefix}{name} is declared a tensor but holds a {type(value).__name__}")
            out[prefix + name] = value
    for name, value in attributes.items():
        if isinstance(value, _Record) and classes[value.type_name].is_module:
            _collect(value, f"{prefix}{name}.", classes, out, depth + 1)
