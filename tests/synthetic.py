"""Tiny synthetic datasets in the real on-disk layouts, for everyone's tests (deterministic per seed).

The scenes, colours, Cityscapes and ImageNet writers are the demo's (demo/world.py), re-exported here;
this module adds the other layouts. Builders return `SyntheticSplit`s whose `labels` are the expected
full-resolution scored-class maps (int64, -1 = ignore) keyed like the dataset items.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from demo.world import (  # noqa: F401  (re-exported for the tests)
    BACKGROUND_COLOUR, CITYSCAPES_IGNORE_LABEL_ID, CITYSCAPES_LABEL_IDS, CLASS_COLOURS, COCO_STUFF_COARSE_IDS,
    COCO_STUFF_FINE_NAMES, COCO_STUFF_IDS_0BASED, DEFAULT_WNIDS, IGNORE_COLOUR, KITTI_STEP_IDS, SCENE_CLASSES,
    SyntheticSplit, _lookup, _save, draw_scene, render, write_cityscapes, write_imagenet,
)


def write_coco_stuff(root: str | Path, n_val: int = 3, n_train10k: int = 3, size: tuple[int, int] = (48, 64),
                     seed: int = 0, mat_dtype: str | Sequence[str] = "uint8",
                     grayscale: bool = True) -> dict[str, SyntheticSplit]:
    """Curated val under `root` and COCO-Stuff-10k train under the sibling f"{root}10k".

    val: labels PNG, 0-based ids, 255 = unlabeled. train: .mat key "S", 1-based ids, 0 = unlabeled,
    dtype `mat_dtype` (one name, or a sequence cycled over the files). train.txt lists the images in
    reverse-sorted order (file order must be kept). With `grayscale`, val image 0 and train image 1
    are single-channel JPEGs. Returns {"val": ..., "train": ...}; labels are expected coarse ids.
    """
    import scipy.io

    root, rng = Path(root), np.random.default_rng(seed)
    root_10k = Path(str(root).rstrip("/") + "10k")
    dtypes = [mat_dtype] if isinstance(mat_dtype, str) else list(mat_dtype)
    classes = [COCO_STUFF_FINE_NAMES[c] for c in SCENE_CLASSES]
    colours = {COCO_STUFF_FINE_NAMES[c]: CLASS_COLOURS[c] for c in SCENE_CLASSES}
    val = SyntheticSplit(root, "val", classes=classes, class_colours=colours)
    ids = [f"{139 + 100 * i:012d}" for i in range(n_val)]
    for i, image_id in enumerate(ids):
        scene = draw_scene(*size, rng)
        image = root / "images" / "val2017" / f"{image_id}.jpg"
        label = root / "annotations" / "val2017" / f"{image_id}.png"
        _save(image, render(scene), gray=grayscale and i == 0)
        _save(label, _lookup(scene, COCO_STUFF_IDS_0BASED, 255).astype(np.uint8))
        val.pairs.append((image, label))
        val.names.append(f"{image_id}.png")
        val.labels.append(_lookup(scene, COCO_STUFF_COARSE_IDS, -1))
    _write_lines(root / "curated" / "val2017" / "Coco164kFull_Stuff_Coarse.txt", ids)

    train = SyntheticSplit(root_10k, "train", classes=classes, class_colours=colours)
    names = [f"COCO_train2014_{77 + 10 * i:012d}" for i in range(n_train10k)][::-1]
    for i, name in enumerate(names):
        scene = draw_scene(*size, rng)
        image, label = root_10k / "images" / f"{name}.jpg", root_10k / "annotations" / f"{name}.mat"
        _save(image, render(scene), gray=grayscale and i == 1)
        s = _lookup(scene, {c: v + 1 for c, v in COCO_STUFF_IDS_0BASED.items()}, 0)
        label.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(label, {"S": s.astype(dtypes[i % len(dtypes)]), "names": np.array(["x"], dtype=object)})
        train.pairs.append((image, label))
        train.names.append(f"{name}.png")
        train.labels.append(_lookup(scene, COCO_STUFF_COARSE_IDS, -1))
    _write_lines(root_10k / "imageLists" / "train.txt", names)
    return {"val": val, "train": train}


def write_kitti_step(root: str | Path, split: str = "val",
                     sequences: Optional[dict[str, tuple[tuple[int, int], int]]] = None,
                     seed: int = 0) -> SyntheticSplit:
    """{root}/{split}/<seq>/<frame>.png + {root}/panoptic_maps/{split}/<seq>/<frame>.png.

    `sequences`: seq -> ((H, W), n_frames); default two sizes {"0000": ((40, 120), 2), "0001": ((48, 96), 2)}.
    Panoptic maps: R = semantic id (255 = ignore), G/B = random instance ids.
    """
    root, rng = Path(root), np.random.default_rng(seed)
    sequences = sequences or {"0000": ((40, 120), 2), "0001": ((48, 96), 2)}
    out = SyntheticSplit(root, split, classes=list(SCENE_CLASSES), class_colours=dict(CLASS_COLOURS))
    for seq in sorted(sequences):
        (height, width), n_frames = sequences[seq]
        for frame in range(n_frames):
            scene = draw_scene(height, width, rng)
            image = root / split / seq / f"{frame:06d}.png"
            label = root / "panoptic_maps" / split / seq / f"{frame:06d}.png"
            _save(image, render(scene))
            panoptic = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            panoptic[..., 0] = _lookup(scene, KITTI_STEP_IDS, 255)
            _save(label, panoptic)
            out.pairs.append((image, label))
            out.names.append(f"{seq}/{frame:06d}.png")
            out.labels.append(_lookup(scene, KITTI_STEP_IDS, -1))
    return out


def write_corrupt_jpeg(path: str | Path, kind: str = "truncated") -> Path:
    """A file named like a JPEG that PIL cannot decode: 'truncated' (valid header, cut data) or 'garbage'."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        path.write_bytes(b"this is not an image" * 10)
    elif kind == "truncated":
        import io

        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    else:
        raise ValueError(f"kind must be 'truncated' or 'garbage', got {kind!r}")
    return path


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
