"""File-name slugs of architecture, category and setting names (one spelling everywhere)."""
from __future__ import annotations

import re


def slug(text: str, lower: bool = True) -> str:
    """Runs of characters other than ASCII letters and digits become one '_': 'DeiT-S/16-SIN' -> 'deit_s_16_sin'.

    `lower=False` keeps the case ('ViT-L/14@336px' -> 'ViT_L_14_336px', the original's index tag).
    """
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"
    return text.lower() if lower else text
