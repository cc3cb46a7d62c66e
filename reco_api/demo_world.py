"""The demo's synthetic world in Python and in the web demo: meaningful answers with no weights, offline.

`python main_reco.py --demo [--out DIR]` writes a world (default ./reco_demo) and its retrieval index.
`demo_model(DIR)` then gives a ReCo on that world with its colour-coded models, so a newcomer sees the
Python API (and `python -m reco_api.demo --demo`, the web page) give the known answer: a word's text
embedding is its colour, so an image of the world is segmented almost perfectly into classes such as
"road, building, vegetation, sky, car" (any Cityscapes class or context word of the world can be named).

    from reco_api import demo_model
    model = demo_model("reco_demo")
    result = model.segment("reco_demo/world/photos/scene0.jpg", "road, building, vegetation, sky, car")
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from demo.registry import register_colour_models
from demo.world import OWN_CLASSES, colour_world, demo_words
from reco_api.config_checks import reco_config
from reco_api.model import ReCo
from utils.config import load_reco_config

DEFAULT_DEMO_DIR = "reco_demo"
DEMO_CONFIG = "demo_config.yaml"
DEMO_CLASSES = ", ".join(OWN_CLASSES)  # what the demo's own photos show


def demo_model(out: Union[str, os.PathLike] = DEFAULT_DEMO_DIR, device: Union[str, torch.device, None] = None,
               **overrides: Any) -> ReCo:
    """A ReCo on the demo world in `out` (written by `python main_reco.py --demo --out OUT`), with its
    colour-coded models registered for the rest of the process. Keyword arguments replace config keys."""
    out = Path(out).expanduser()
    config_path = out / DEMO_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"no demo world in {out.absolute()}: write it first with "
                                f"`python main_reco.py --demo --out {out}` (offline, about a minute)")
    contexts = load_reco_config(config_path).context_categories  # read before its architectures exist
    register_colour_models(*colour_world(demo_words(contexts)))
    return ReCo(reco_config(config_path, overrides), device=device)


def demo_photo(out: Union[str, os.PathLike] = DEFAULT_DEMO_DIR) -> Optional[Path]:
    """The first of the demo world's own photos, if it is there."""
    photos = sorted((Path(out).expanduser() / "world" / "photos").glob("*.*"))
    return photos[0] if photos else None
