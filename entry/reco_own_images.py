"""Own-images stage of main_reco.py: segment a folder of images with your own class names."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from datasets import images as own
from entry.reco_common import build_dense_clip, build_encoder, compute_references
from reco.inference import predict
from reco.references import stack_references
from utils.config import ConfigError, RecoConfig, config_to_dict
from utils.crf import dense_crf, denormalise_image, resolve_crf_backend
from utils.device import resolve_device, setup_logging
from utils.io import save_json, save_png
from utils.visualise import label_palette, overlay, save_legend

logger = logging.getLogger("reco")


def parse_categories(argument: Optional[str], configured: Optional[list[str]]) -> list[str]:
    """Class names from --categories ("a,b,c" or a text file, one per line) or the config's `categories`."""
    if argument is not None:
        path = Path(argument)
        if path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines()]
            names = [line for line in lines if line and not line.startswith("#")]
        else:
            names = [name.strip() for name in argument.split(",")]
    elif configured:
        names = [name.strip() for name in configured]
    else:
        raise ConfigError("categories: give --categories \"cat,grass,sky\" (or a text file) or set `categories` in the config")
    if any(not name for name in names):
        raise ConfigError(f"categories: empty class name in {names}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"categories: duplicate class names {duplicates}")
    if len(names) > 255:
        raise ConfigError(f"categories: at most 255 classes fit an 8-bit mask, got {len(names)}")
    return names


@torch.no_grad()
def run_own_images(config: RecoConfig, image_dir: str, categories_arg: Optional[str], out: Optional[str],
                   crf: bool = True) -> dict:
    if out is None:
        raise ConfigError("--out: give an output folder for the masks and overlays")
    categories = parse_categories(categories_arg, config.categories)
    paths = own.list_images(image_dir)
    stems = own.output_stems(paths, image_dir)
    out_dir = Path(out)
    setup_logging(out_dir / "reco.log")
    device = resolve_device(config.device)
    logger.info("segmenting %d images in %s into %d categories -> %s", len(paths), image_dir, len(categories), out_dir)
    save_json(out_dir / "config.json", {**config_to_dict(config), "categories": categories, "images": image_dir})

    encoder = build_encoder(config, device)
    dense = build_dense_clip(config, device)
    # Building the whole index is hours of work: own images ask for it explicitly (--stage index).
    references = compute_references(config, categories, device, encoder, dense, build_missing_index=False)
    matrix = stack_references(references, categories).to(device)
    text = dense.embed_text(categories) if dense is not None and config.dense_clip_inference else None
    dense_clip = dense.dense_clip if text is not None else None
    crf_backend = resolve_crf_backend(config.crf_backend, device)
    palette = label_palette(len(categories))
    save_legend(out_dir / "legend.png", categories, palette)

    summary: dict = {"categories": categories, "images": {}, "skipped": []}
    for path, stem in zip(tqdm(paths, desc="segmenting images", unit="image"), stems):
        try:
            image = own.load_image(path)
        except OSError as e:
            logger.warning("skipped %s", e)
            summary["skipped"].append(str(path))
            continue
        tensor = own.inference_tensor(image, config.image_short_side).to(device)[None]
        scores = predict(tensor, encoder, matrix, dense_clip, text)[0]  # (N, h, w)
        if crf:
            scores = dense_crf(denormalise_image(tensor[0].cpu()), torch.log_softmax(scores, dim=0), backend=crf_backend)
        labels = scores.argmax(dim=0).float()[None, None]
        labels = F.interpolate(labels, size=(image.height, image.width), mode="nearest")[0, 0].to(torch.uint8)
        mask = labels.cpu().numpy()
        save_png(out_dir / "masks" / f"{stem}.png", mask)
        save_png(out_dir / "overlays" / f"{stem}.png", overlay(own.as_array(image), mask, palette))
        counts = np.bincount(mask.ravel(), minlength=len(categories)) / mask.size
        summary["images"][stem] = {name: float(counts[i]) for i, name in enumerate(categories)}
    save_json(out_dir / "summary.json", summary)
    if summary["skipped"]:
        logger.warning("%d unreadable images skipped (listed in summary.json)", len(summary["skipped"]))
    logger.info("wrote %d masks to %s", len(summary["images"]), out_dir / "masks")
    return summary
