"""The demo's synthetic world, also used by the tests: colour-coded scenes and ImageNet-like images.

Every scene is drawn from large regions of five classes, each painted in a fixed saturated colour
(`CLASS_COLOURS`), so a colour-coded encoder (demo/colour_models.py) can segment the images perfectly:
    sky (top band) | building (middle, left) / vegetation (middle, right) | road (bottom band),
    a car rectangle on the road edge and an ignored patch at the bottom centre (black; label = void).
All classes stay inside the central crop of the SPEC 10 evaluation transform for aspect ratios <= 2.

Writers produce the real on-disk layouts (deterministic per seed) and return `SyntheticSplit`s whose
`labels` are the expected full-resolution scored-class maps (int64, -1 = ignore), so the demo and the
tests can compare against exact answers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

SCENE_CLASSES = ("road", "building", "vegetation", "sky", "car")
OWN_CLASSES = list(SCENE_CLASSES)  # the demo's own images are segmented with these names


def demo_words(context_categories: Sequence[str]) -> list[str]:
    """Every word of the demo world, in the order that fixes its colours: the Cityscapes classes, the
    config's contexts, the own images' classes. The command line's --demo and the API's demo_model both
    derive the world's colours from this list, so they agree."""
    from datasets import metadata

    return metadata.categories("cityscapes") + list(context_categories) + OWN_CLASSES
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "road": (255, 0, 255), "building": (255, 0, 0), "vegetation": (0, 255, 0),
    "sky": (0, 0, 255), "car": (255, 255, 0),
}
IGNORE_COLOUR = (0, 0, 0)
BACKGROUND_COLOUR = (128, 128, 128)

# `tree` (a context category) looks like vegetation, as in the real world.
SCENE_COLOUR_OF = {"tree": CLASS_COLOURS["vegetation"], **CLASS_COLOURS}

# Scene class -> id in each dataset's label files, and the prediction category name it stands for.
CITYSCAPES_LABEL_IDS = {"road": 7, "building": 11, "vegetation": 21, "sky": 23, "car": 26}
CITYSCAPES_IGNORE_LABEL_ID = 1          # 'ego vehicle' (labelIds < 7 are void)
KITTI_STEP_IDS = {"road": 0, "building": 2, "vegetation": 8, "sky": 10, "car": 13}
COCO_STUFF_IDS_0BASED = {"road": 148, "building": 95, "vegetation": 168, "sky": 156, "car": 2}
COCO_STUFF_FINE_NAMES = {"road": "road", "building": "building other", "vegetation": "tree",
                         "sky": "sky other", "car": "car"}
COCO_STUFF_COARSE_IDS = {"road": 21, "building": 20, "vegetation": 22, "sky": 23, "car": 11}
DEFAULT_WNIDS = ("n09000001", "n09000002", "n09000003", "n09000004", "n09000005")  # one per SCENE_CLASSES


def distinct_colours(n: int, fixed: Sequence[tuple[int, int, int]] = ()) -> list[tuple[int, int, int]]:
    """`fixed` colours first, then grid colours >= 0.3 (in [0, 1] RGB) from them, from each other and from grey."""
    colours = [tuple(int(c) for c in f) for f in fixed]
    levels = (0, 85, 170, 255)  # a 4x4x4 grid: neighbours are 1/3 apart
    candidates = [(r, g, b) for r in levels for g in levels for b in levels]
    grey = np.array([128, 128, 128]) / 255
    for candidate in candidates:
        if len(colours) == n:
            break
        c = np.array(candidate) / 255
        if np.linalg.norm(c - grey) < 0.3:
            continue
        if all(np.linalg.norm(c - np.array(o) / 255) >= 0.3 for o in colours):
            colours.append(candidate)
    if len(colours) < n:
        raise ValueError(f"could not find {n} distinct colours")
    return colours


def colour_world(words: Sequence[str]) -> tuple[dict[str, int], list[tuple[int, int, int]]]:
    """word -> colour index, and the colours. Scene classes keep their scene colour, `tree` shares
    vegetation's; every other word gets its own distinct colour."""
    fixed = [CLASS_COLOURS[c] for c in SCENE_CLASSES]
    others = [w for w in dict.fromkeys(words) if w not in SCENE_COLOUR_OF]
    colours = distinct_colours(len(fixed) + len(others), fixed)
    vocabulary = {w: fixed.index(SCENE_COLOUR_OF[w]) for w in words if w in SCENE_COLOUR_OF}
    vocabulary.update({w: len(fixed) + i for i, w in enumerate(others)})
    return vocabulary, colours


@dataclass
class SyntheticSplit:
    """What a builder wrote. `pairs`, `names` and `labels` follow the dataset's item order."""

    root: Path
    split: str
    pairs: list[tuple[Path, Path]] = field(default_factory=list)      # (image, label file)
    names: list[str] = field(default_factory=list)                    # expected item names (SPEC 11)
    labels: list[np.ndarray] = field(default_factory=list)            # expected eval ids, full resolution
    classes: list[str] = field(default_factory=list)                  # prediction category names used
    class_colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # category -> RGB


def draw_scene(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """int64 (H, W) map of indices into SCENE_CLASSES, -1 for the ignored patch."""
    scene = np.empty((height, width), dtype=np.int64)
    h1 = int(height * rng.uniform(0.25, 0.35))
    h2 = int(height * rng.uniform(0.6, 0.7))
    split_col = int(width * rng.uniform(0.4, 0.6))
    scene[:h1] = SCENE_CLASSES.index("sky")
    scene[h1:h2, :split_col] = SCENE_CLASSES.index("building")
    scene[h1:h2, split_col:] = SCENE_CLASSES.index("vegetation")
    scene[h2:] = SCENE_CLASSES.index("road")
    car_left = int(width * rng.uniform(0.3, 0.45))
    scene[h2 - height // 10: h2 + height // 8, car_left: car_left + width // 5] = SCENE_CLASSES.index("car")
    scene[height - max(1, height // 10):, int(width * 0.45): int(width * 0.55)] = -1
    return scene


def render(scene: np.ndarray, colours: Optional[dict[str, tuple[int, int, int]]] = None) -> np.ndarray:
    """uint8 (H, W, 3) image painting each scene class in its colour (ignored patch black)."""
    colours = colours or CLASS_COLOURS
    lut = np.array([colours[c] for c in SCENE_CLASSES] + [IGNORE_COLOUR], dtype=np.uint8)
    return lut[scene]  # index -1 picks the last row: IGNORE_COLOUR


def _lookup(scene: np.ndarray, ids: dict[str, int], ignore: int) -> np.ndarray:
    lut = np.array([ids[c] for c in SCENE_CLASSES] + [ignore], dtype=np.int64)
    return lut[scene]


def write_cityscapes(root: str | Path, split: str = "val", n_images: int = 4, size: tuple[int, int] = (64, 128),
                     cities: Sequence[str] = ("aachen", "bochum"), seed: int = 0) -> SyntheticSplit:
    """leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png + gtFine/.../{stem}_gtFine_labelIds.png."""
    root, rng = Path(root), np.random.default_rng(seed)
    out = SyntheticSplit(root, split, classes=list(SCENE_CLASSES), class_colours=dict(CLASS_COLOURS))
    records = []
    for i in range(n_images):
        city = cities[i % len(cities)]
        stem = f"{city}_{i:06d}_{19 + i:06d}"
        scene = draw_scene(*size, rng)
        image = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
        label = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
        _save(image, render(scene))
        _save(label, _lookup(scene, CITYSCAPES_LABEL_IDS, CITYSCAPES_IGNORE_LABEL_ID).astype(np.uint8))
        expected = _lookup(scene, {c: v - 7 for c, v in CITYSCAPES_LABEL_IDS.items()}, -1)
        records.append((image.as_posix(), image, label, expected))
    for _, image, label, expected in sorted(records, key=lambda r: r[0]):  # the dataset's sorted order
        out.pairs.append((image, label))
        out.names.append(label.name)
        out.labels.append(expected)
    return out


def write_imagenet(root: str | Path, split: str = "train", wnids: Sequence[str] = DEFAULT_WNIDS,
                   n_per_class: int = 3, size: tuple[int, int] = (40, 56),
                   colours: Optional[Sequence[tuple[int, int, int]]] = None, seed: int = 0) -> dict[str, list[Path]]:
    """ImageNet layout: train {root}/train/{wnid}/{wnid}_{n}.JPEG; val {root}/val/{wnid}/ILSVRC2012_val_{k:08d}.JPEG.

    Each image is a rectangle of its class colour covering ~60-80% of a grey, slightly noisy background.
    Default colours: CLASS_COLOURS in SCENE_CLASSES order (wnid i stands for scene class i).
    Returns wnid -> written paths.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    root, rng = Path(root), np.random.default_rng(seed)
    colours = list(colours) if colours is not None else [CLASS_COLOURS[c] for c in SCENE_CLASSES]
    if len(colours) < len(wnids):
        raise ValueError(f"{len(wnids)} wnids but only {len(colours)} colours")
    height, width = size
    written: dict[str, list[Path]] = {}
    counter = 0
    for wnid, colour in zip(wnids, colours):
        for n in range(n_per_class):
            counter += 1
            name = f"{wnid}_{n + 1}.JPEG" if split == "train" else f"ILSVRC2012_val_{counter:08d}.JPEG"
            noise = rng.integers(-8, 9, size=(height, width, 3))
            image = np.clip(np.array(BACKGROUND_COLOUR) + noise, 0, 255).astype(np.uint8)
            rh, rw = int(height * rng.uniform(0.75, 0.9)), int(width * rng.uniform(0.75, 0.9))
            top, left = int(rng.integers(0, height - rh + 1)), int(rng.integers(0, width - rw + 1))
            image[top:top + rh, left:left + rw] = colour
            path = root / split / wnid / name
            _save(path, image)
            written.setdefault(wnid, []).append(path)
    return written


def _save(path: Path, array: np.ndarray, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if gray:
        image = image.convert("L")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=95, subsampling=0)  # 4:4:4 keeps colours crisp
    else:
        image.save(path, format="PNG")


def write_photos(directory: str | Path, sizes: Sequence[tuple[int, int]] = ((60, 80), (97, 131), (200, 150)),
                 classes: Sequence[str] = SCENE_CLASSES, seed: int = 0) -> dict[str, np.ndarray]:
    """"Own images": scenes of several sizes (one in a sub-folder, one PNG, the others JPEG).

    Returns stem -> expected mask (int64 indices into `classes`, -1 = ignore), at the image's size.
    """
    directory, rng = Path(directory), np.random.default_rng(seed)
    remap = np.array([list(classes).index(c) for c in SCENE_CLASSES])  # scene index -> the user's class order
    expected = {}
    for i, (height, width) in enumerate(sizes):
        scene = draw_scene(height, width, rng)
        stem = f"sub/scene{i}" if i == 1 else f"scene{i}"
        _save(directory / f"{stem}.{'png' if i == 2 else 'jpg'}", render(scene))
        expected[stem] = np.where(scene >= 0, remap[np.maximum(scene, 0)], -1)
    return expected
