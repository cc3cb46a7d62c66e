"""Replace a folder whole: at every instant its path holds the old folder or the new one, never a mix.

`replace_folder(new, target)` swaps the two paths with one renameat2(RENAME_EXCHANGE) call where the
system offers it (Linux >= 3.15 on the usual file systems), then removes the old folder, which the swap
left at `new`'s path. Elsewhere it falls back to two renames (target -> `.{name}.old-{pid}`, new ->
target); a kill between them leaves no folder at `target` for a moment, and `recover_folder(target)`,
which every writer calls before it starts, puts the old one back. Leftovers (the old folder after a
swap, a staging folder of a killed run) are removed by `recover_folder` too; callers hold a lock on
the target so that no live run's staging folder is taken for a leftover.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc: Optional[ctypes.CDLL] = None


def _renameat2() -> Optional[Callable]:
    global _libc
    with contextlib.suppress(OSError):
        _libc = _libc or ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = getattr(_libc, "renameat2", None)
        if function is not None:
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            function.restype = ctypes.c_int
        return function
    return None


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the system cannot (then nothing changed)."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system or kernel cannot swap
        return False
    raise OSError(error, os.strerror(error), str(a), None, str(b))


def old_prefix(target: Path) -> str:
    return f".{target.name}.old-"


def staging_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def replace_folder(new: Path, target: Path) -> None:
    """Move the folder `new` onto `target` (same parent), replacing the folder there if any."""
    new, target = Path(new).absolute(), Path(target).absolute()
    if not target.exists():
        os.replace(new, target)
        return
    if exchange_paths(new, target):
        shutil.rmtree(new, ignore_errors=True)  # the old folder, now at new's path
        return
    old = target.parent / f"{old_prefix(target)}{os.getpid()}"
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(target: Path) -> list[str]:
    """Finish or roll back a replacement a kill interrupted; remove staging leftovers. Call it with the
    target's lock held. Returns what was done, for the log."""
    target = Path(target).absolute()
    done = []
    if not target.parent.is_dir():
        return done
    olds = sorted(p for p in target.parent.iterdir() if p.name.startswith(old_prefix(target)))
    if olds and not target.exists():  # killed between the two renames of the fallback: roll back
        os.replace(olds.pop(), target)
        done.append(f"restored {target} from an interrupted replacement")
    for leftover in olds + sorted(p for p in target.parent.iterdir() if p.name.startswith(staging_prefix(target))):
        shutil.rmtree(leftover, ignore_errors=True)
        done.append(f"removed the leftover {leftover.name}")
    return done
