"""Own-images stage of main_reco.py: segment an image or a folder of images with your own class names.

A thin caller of the Python API (reco_api.ReCo): this module only lists the files, writes the outputs
and makes the output folder appear whole or not at all.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from tqdm import tqdm

from datasets import images as own
from reco_api.model import ReCo, check_categories
from entry.preflight import check_run_inputs
from entry.reco_common import check_index_size
from utils import timing
from utils.config import ConfigError, RecoConfig, config_to_dict
from utils.device import setup_logging
from utils.io import save_json, save_png
from utils.visualise import label_palette, save_legend

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
    try:
        return check_categories(names)
    except ValueError as e:
        raise ConfigError(f"categories: {e}") from None


def run_own_images(config: RecoConfig, images: str, categories_arg: Optional[str], out: Optional[str],
                   crf: bool = True) -> dict:
    """Segment `images` (a file or a folder, recursively) into OUT/masks, OUT/overlays, OUT/legend.png
    and OUT/summary.json. Unreadable or too large images are skipped and listed."""
    if out is None:
        raise ConfigError("--out: give an output folder for the masks and overlays")
    categories = parse_categories(categories_arg, config.categories)
    check_run_inputs(config, stage="own_images", categories=categories)
    check_index_size(config)  # n_imgs against the index, before the models are loaded
    paths = own.list_images(images)
    stems = own.output_stems(paths, images)
    if Path(images).is_file():  # one named file that cannot be read is an error, not a skipped image
        single = own.load_image(images)
        own.inference_size(single.width, single.height, config.image_short_side)
    out_dir = Path(out)
    with staged_output(out_dir) as stage:
        setup_logging(stage / "reco.log")
        timing.set_output_dir(out_dir)  # timings.json is written there once the run has succeeded
        logger.info("segmenting %d images in %s into %d categories -> %s", len(paths), images, len(categories), out_dir)
        save_json(stage / "config.json", {**config_to_dict(config), "categories": categories, "images": str(images)})
        model = ReCo(config)
        model.references(categories)  # retrieval and co-segmentation of new classes, before any image
        model.release_retrieval_clip()  # not needed for segmenting: its memory is freed
        save_legend(stage / "legend.png", categories, label_palette(len(categories)))

        summary: dict = {"categories": categories, "images": {}, "skipped": []}
        progress = tqdm(total=len(paths), desc="segmenting images", unit="image")
        for start in range(0, len(paths), config.batch_size):
            loaded = []
            for path, stem in zip(paths[start:start + config.batch_size], stems[start:start + config.batch_size]):
                try:
                    with timing.stage("data loading"):
                        image = own.load_image(path, model.max_image_pixels)
                        # a too-elongated image is a counted skip here rather than an error mid-batch
                        own.inference_size(image.width, image.height, config.image_short_side, model.max_inference_pixels)
                        loaded.append((stem, image))
                except (OSError, ValueError) as e:  # unreadable, over the pixel limit, too thin
                    logger.warning("skipped %s", e)
                    summary["skipped"].append(str(path))
            results = model.segment_batch([image for _, image in loaded], categories, crf=crf)
            for (stem, _), result in zip(loaded, results):
                with timing.stage("writing"):
                    save_png(stage / "masks" / f"{stem}.png", result.labels)
                    save_png(stage / "overlays" / f"{stem}.png", result.overlay_array)
                summary["images"][stem] = result.fractions
            progress.update(len(paths[start:start + config.batch_size]))
        progress.close()
        save_json(stage / "summary.json", summary)
        if summary["skipped"]:
            logger.warning("%d unreadable images skipped (listed in summary.json)", len(summary["skipped"]))
        logger.info("wrote %d masks to %s", len(summary["images"]), out_dir / "masks")
    return summary


@contextlib.contextmanager
def staged_output(out_dir: Path) -> Iterator[Path]:
    """A new folder beside `out_dir` to write into, moved onto `out_dir` only if the block succeeds.

    A failed or interrupted run leaves `out_dir` as it was: absent, or holding the previous run's
    files (a successful run replaces those it writes again and appends to reco.log).
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out: {out_dir} exists and is not a folder")
    created = [p for p in [out_dir.parent, *out_dir.parent.parents] if not p.exists()]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield stage
        _close_log_files_under(stage)
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes a private folder; give it the usual permissions
        if not out_dir.exists():
            os.replace(stage, out_dir)
        else:
            _merge_into(stage, out_dir)
    except BaseException:
        _close_log_files_under(stage)
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # parents this run made for --out (innermost first)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _merge_into(stage: Path, out_dir: Path) -> None:
    for path in sorted(stage.rglob("*")):
        if path.is_dir():
            continue
        target = out_dir / path.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "reco.log" and path.parent == stage and target.is_file():
            with open(target, "ab") as f:
                f.write(path.read_bytes())
        else:
            os.replace(path, target)
    shutil.rmtree(stage)


def _close_log_files_under(folder: Path) -> None:
    """Detach the run's log file so that the folder can be moved or removed."""
    reco_logger = logging.getLogger("reco")
    for handler in list(reco_logger.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(folder.resolve()):
            reco_logger.removeHandler(handler)
            handler.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
