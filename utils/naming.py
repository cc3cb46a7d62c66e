"""File-name slugs of architecture, category and setting names (one spelling everywhere), and the safe
file-name form of names users give (class names, contexts, suffixes)."""
from __future__ import annotations

import hashlib
import re


def slug(text: str, lower: bool = True) -> str:
    """Runs of characters other than ASCII letters and digits become one '_': 'DeiT-S/16-SIN' -> 'deit_s_16_sin'.

    `lower=False` keeps the case ('ViT-L/14@336px' -> 'ViT_L_14_336px', the original's index tag).
    """
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"
    return text.lower() if lower else text


# Most file systems allow 255 bytes per file name; room is left for prefixes, suffixes and temp names.
NAME_MAX_BYTES = 255
_UNSAFE_IN_FILE_NAMES = ("/", "\\", "\0")


def fit_file_name(text: str, max_bytes: int) -> str:
    """`text` itself when its UTF-8 form has at most `max_bytes` bytes; else its longest prefix that fits
    with '_' and 8 hex digits of its SHA-1 (distinct long texts stay distinct)."""
    if len(text.encode()) <= max_bytes:
        return text
    digest = "_" + hashlib.sha1(text.encode()).hexdigest()[:8]
    head = text.encode()[: max(0, max_bytes - len(digest))].decode(errors="ignore")
    return head + digest


def file_name_part(name: str, max_bytes: int = NAME_MAX_BYTES - 64) -> str:
    """A user's name (a class, a context category) as part of one file name inside a run's folder.

    An ordinary name is kept exactly (coseg_traffic light.png). One holding '/', '\\' or a NUL byte, or
    longer than `max_bytes` UTF-8 bytes, becomes its slug, shortened with a hash of the real name, so it
    can never name another folder; the real name stays inside the file (or its record).
    """
    if not any(c in name for c in _UNSAFE_IN_FILE_NAMES) and name not in ("", ".", "..") \
            and len(name.encode()) <= max_bytes:
        return name
    return fit_file_name(slug(name) + "_" + hashlib.sha1(name.encode()).hexdigest()[:8], max_bytes)


def file_name_problem(value: str, max_bytes: int) -> str | None:
    """Why `value` cannot be put into file and folder names as it is (None when it can)."""
    if any(c in value for c in _UNSAFE_IN_FILE_NAMES):
        return "it holds '/', '\\' or a NUL byte"
    if len(value.encode()) > max_bytes:
        return f"it is longer than {max_bytes} bytes"
    return None
