"""One process at a time per folder: an advisory lock on `{folder}/.lock` that holds the owner's PID.

The lock is an flock(2) lock, so the kernel releases it when its process ends, however it ends: a
folder locked by a killed process is free again at once, with nothing to clean up. The `.lock` file
itself stays behind (removing it would race with a process that has just opened it); it is empty of
meaning once its process has gone.
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
                on_wait: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Hold `folder`'s lock for the block. If another process holds it, wait up to `wait_s` seconds
    (calling `on_wait` once with a message naming the holder's PID), then raise FolderInUseError
    with one line naming `what`, the folder and the holder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                message = f"{what} {folder} is in use by another process ({_holder(path)})"
                if time.monotonic() >= deadline:
                    raise FolderInUseError(f"{message}; wait for it to finish or stop it") from None
                if on_wait is not None and not told:
                    on_wait(f"{message}; waiting for it")
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
