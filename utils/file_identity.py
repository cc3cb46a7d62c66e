"""A file known by its content: a SHA-256, computed once and remembered by the file's stat.

A replaced weights file of the same name, size and even modification time has another content hash,
so every artefact whose record holds the hash notices the change. Hashing a 1.7 GB CLIP takes seconds,
so the hash is remembered per (path, size, mtime, ctime, inode): in memory for the process, and in a
small JSON memo file when the caller names one (written atomically; a damaged memo is ignored). ctime
changes whenever a file's content or inode is changed, and cannot be set back by a user, so a file
rewritten in place with its old mtime restored is hashed again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

CHUNK_BYTES = 8 << 20
MEMO_FILE_NAME = ".file_hashes.json"  # the memo's name in dir_ckpt (ReCo and ReCo+ share it)
_MEMORY: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _read_memo(memo: Path) -> dict[str, str]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(memo.read_text())
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
    return {}


def _write_memo(memo: Path, entries: dict[str, str]) -> None:
    with contextlib.suppress(OSError):  # a memo that cannot be written only costs a re-hash later
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{memo.name}.", suffix=".tmp", dir=memo.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f, indent=0, sort_keys=True)
            os.replace(tmp, memo)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise


def content_hash(path: str | os.PathLike, memo: Optional[str | os.PathLike] = None) -> str:
    """"sha256:<hex>" of the file's bytes; remembered by its stat in memory and in `memo` (a JSON file)."""
    path = Path(path)
    key = _stat_key(path)
    if key in _MEMORY:
        return _MEMORY[key]
    memo_key = json.dumps(key)
    entries = _read_memo(Path(memo)) if memo is not None else {}
    digest = entries.get(memo_key)
    if digest is None:
        hasher = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                hasher.update(chunk)
        digest = f"sha256:{hasher.hexdigest()}"
        if _stat_key(path) != key:  # written to while it was read: do not remember a torn hash
            return content_hash(path, memo)
        if memo is not None:
            alive = {k: v for k, v in entries.items() if _still_current(k)}
            alive[memo_key] = digest
            _write_memo(Path(memo), alive)
    _MEMORY[key] = digest
    return digest


def _still_current(memo_key: str) -> bool:
    """A memo entry whose file still has that stat (older entries are dropped, so the memo stays small)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        key = tuple(json.loads(memo_key))
        return _stat_key(Path(key[0])) == key
    return False
