"""One process at a time per folder: an advisory lock on `{folder}/.lock` that holds the owner's PID.

The lock is an flock(2) lock, so the kernel releases it when its process ends, however it ends: a
folder locked by a killed process is free again at once. The holder removes the file before it lets
go, and a process that locked a file no longer at the path tries again, so removing it is safe; a
file left by a killed process is simply locked and removed by the next holder.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

LOCK_NAME = ".lock"


class FolderInUseError(RuntimeError):
    """Another live process holds the folder's lock."""


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text().strip()
        if text:
            return f"PID {int(text.split()[0])}"
    return "an unknown PID"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str, wait_s: float = 0.0,
                on_wait: Optional[Callable[[str], None]] = None, lock_name: str = LOCK_NAME) -> Iterator[None]:
    """Hold `folder`'s lock (the file `lock_name` in it) for the block. If another process holds it, wait
    up to `wait_s` seconds (calling `on_wait` once with a message naming the holder's PID), then raise
    FolderInUseError with one line naming `what` and the holder. The lock file is removed when the
    block ends (a killed holder leaves it; the next holder removes it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / lock_name
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            message = f"{what} is in use by another process ({_holder(path)})"
            if time.monotonic() >= deadline:
                raise FolderInUseError(f"{message}; wait for it to finish or stop it") from None
            if on_wait is not None and not told:
                on_wait(f"{message}; waiting for it")
                told = True
            time.sleep(0.2)
            continue
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder removed the file between our open and our lock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked: a waiter on this file retries on the next one
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
