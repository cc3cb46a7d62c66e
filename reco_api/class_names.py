"""Class names as a user types them: one set of rules for the command line, the Python API and the web page.

* A list (Python) is taken name by name.
* A string is a JSON list (`["cat", "grass"]`) when it starts with "[", else names separated by commas
  or line breaks (`cat, grass, sky`).
* Names are stripped; an empty name, a duplicate or more than 255 names (an 8-bit mask) is an error.
* Segmenting needs at least two classes: with one, every pixel is that class and the answer says nothing.
  A single name holding spaces ("cat grass sky") is most likely several names without commas; the message
  says how to separate them.
"""
from __future__ import annotations

import json
import re
from typing import Sequence, Union

MAX_CATEGORIES = 255  # the masks are 8-bit


def split_class_names(text: str) -> list[str]:
    """Names from one string: a JSON list, or names separated by commas or line breaks."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            names = json.loads(stripped)
        except ValueError as e:
            raise ValueError(f"class names {text!r} start with '[' but are not a JSON list ({e})") from None
        if not isinstance(names, list):
            raise ValueError(f"class names {text!r} are not a JSON list")
        return names
    return re.split(r"[,\n]", text)


def check_categories(categories: Union[str, Sequence[str]]) -> list[str]:
    """Class names, stripped: a list, or one string (a JSON list, or names separated by commas).

    An empty list, an empty name, a duplicate or more than 255 names is a ValueError saying which.
    """
    if isinstance(categories, str):
        categories = split_class_names(categories)
    names = []
    for name in categories:
        if not isinstance(name, str):
            raise ValueError(f"class names must be strings, got {name!r}")
        names.append(name.strip())
    if not names or names == [""]:
        raise ValueError("no class names given: name at least two classes, e.g. ['cat', 'grass']")
    if any(not name for name in names):
        raise ValueError(f"empty class name in {names}")
    seen: set[str] = set()
    duplicates = sorted({name for name in names if name in seen or seen.add(name)})
    if duplicates:
        raise ValueError(f"duplicate class names {duplicates}")
    if len(names) > MAX_CATEGORIES:
        raise ValueError(f"at most {MAX_CATEGORIES} classes fit an 8-bit mask, got {len(names)}")
    return names


def check_segmentation_classes(categories: Union[str, Sequence[str]]) -> list[str]:
    """check_categories, and at least two classes (one class labels every pixel with it)."""
    names = check_categories(categories)
    if len(names) == 1:
        name = names[0]
        hint = (f'; if you meant {len(name.split())} classes, separate them with commas: "{", ".join(name.split())}"'
                if len(name.split()) > 1 else "")
        raise ValueError(f"only one class given ({name!r}): segmenting needs at least two, since every pixel "
                         f"would be {name!r}{hint}")
    return names
