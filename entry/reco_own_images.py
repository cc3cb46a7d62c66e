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
from reco_api.class_names import check_segmentation_classes, split_class_names
from reco_api.model import ReCo
from reco_api.preflight import check_run_inputs
from reco_api.reference_setting import run_setting
from reco_api.references import check_index_size
from reco_api.settings import reference_settings
from utils import timing
from utils.config import ConfigError, RecoConfig, config_to_dict
from utils.device import setup_logging
from utils.file_lock import FolderInUseError, folder_lock
from utils.folder_swap import recover_folder, replace_folder, staging_prefix
from utils.io import save_json, save_png
from utils.progress import FirstFewWarnings
from utils.visualise import label_palette, save_legend

logger = logging.getLogger("reco")


# A --categories value without commas ending like this is a mistyped file name, not a class name
CLASS_FILE_SUFFIXES = (".txt", ".csv", ".json", ".lst", ".list", ".yaml", ".yml")


def parse_categories(argument: Optional[str], configured: Optional[list[str]]) -> list[str]:
    """Class names from --categories (a text file, one per line; a JSON list; or "a, b, c") or the
    config's `categories` (reco_api/class_names.py has the rules)."""
    if argument is not None:
        path = Path(argument)
        if path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines()]
            names = [line for line in lines if line and not line.startswith("#")]
            source = f"--categories {argument}"
        elif "," not in argument and not argument.lstrip().startswith("[") and (
                path.suffix.lower() in CLASS_FILE_SUFFIXES or "/" in argument):
            raise ConfigError(f"--categories: file not found: {path.absolute()} (to name the classes instead, "
                              'separate them with commas: "cat, grass, sky")')
        else:
            source = "--categories"
            try:
                names = split_class_names(argument)
            except ValueError as e:
                raise ConfigError(f"--categories: {e}") from None
    elif configured:
        names, source = [name.strip() for name in configured], "categories"
    else:
        raise ConfigError("categories: give --categories \"cat,grass,sky\" (or a text file) or set `categories` in the config")
    try:
        return check_segmentation_classes(names)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def run_own_images(config: RecoConfig, images: str, categories_arg: Optional[str], out: Optional[str],
                   crf: bool = True) -> dict:
    """Segment `images` (a file or a folder, recursively) into OUT/masks, OUT/overlays, OUT/legend.png
    and OUT/summary.json. Unreadable or too large images are skipped and listed."""
    if out is None:
        raise ConfigError("--out: give an output folder for the masks and overlays")
    categories = parse_categories(categories_arg, config.categories)
    settings = reference_settings(config)
    check_run_inputs(settings, stage="own_images", categories=categories)
    check_index_size(settings)  # n_imgs against the index, before the models are loaded
    paths = own.list_images(images, exclude=out)  # an OUT inside the images: its masks are not inputs
    stems = own.output_stems(paths, images)
    if Path(images).is_file():  # one named file that cannot be read is an error, not a skipped image
        single = own.load_image(images)
        own.inference_size(single.width, single.height, config.image_short_side)
    out_dir = Path(out)
    with staged_output(out_dir) as stage:
        setup_logging(stage / "reco.log")
        timing.set_output_dir(out_dir)  # timings.json is written there once the run has succeeded
        logger.info("segmenting %d images in %s into %d categories -> %s", len(paths), images, len(categories), out_dir)
        save_json(stage / "config.json", {**config_to_dict(config), "categories": categories, "images": str(images),
                                          "setting": run_setting(settings)})
        model = ReCo(config)
        model.references(categories)  # retrieval and co-segmentation of new classes, before any image
        model.release_retrieval_clip()  # not needed for segmenting: its memory is freed
        save_legend(stage / "legend.png", categories, label_palette(len(categories)))

        summary: dict = {"categories": categories, "images": {}, "skipped": []}
        skip_warnings = FirstFewWarnings(logger, listed_in="summary.json")
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
                    skip_warnings.warn("skipped %s", e)
                    summary["skipped"].append(str(path))
            results = model.segment_batch([image for _, image in loaded], categories, crf=crf)
            for (stem, _), result in zip(loaded, results):
                with timing.stage("writing"):
                    save_png(stage / "masks" / f"{stem}.png", result.labels)
                    save_png(stage / "overlays" / f"{stem}.png", result.overlay_array)
                summary["images"][stem] = result.fractions
            progress.update(len(paths[start:start + config.batch_size]))
        progress.close()
        if not summary["images"]:  # leaves OUT as it was (the staged outputs are dropped)
            raise ConfigError(f"--images: none of the {len(paths)} images could be read or segmented "
                              f"(the first: {summary['skipped'][0]}; see the warnings above)")
        save_json(stage / "summary.json", summary)
        if summary["skipped"]:
            logger.warning("%d unreadable images skipped (listed in summary.json)", len(summary["skipped"]))
        logger.info("wrote %d masks to %s", len(summary["images"]), out_dir / "masks")
    return summary


@contextlib.contextmanager
def staged_output(out_dir: Path) -> Iterator[Path]:
    """A new folder beside `out_dir` to write into, put in place of `out_dir` whole only if the block succeeds.

    At every instant `out_dir` is the earlier run's folder or this run's (utils/folder_swap.py), never a
    mix; a failed, interrupted or killed run leaves the earlier one. The earlier run's reco.log is kept at
    the start of the new one. One run at a time writes an OUT (a lock `.{name}.lock` beside it while it runs); the next
    run removes what a killed one left behind.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out: {out_dir} exists and is not a folder")
    created = [p for p in [out_dir.parent, *out_dir.parent.parents] if not p.exists()]
    lock_name = f".{out_dir.name}.lock"
    try:
        with folder_lock(out_dir.parent, f"--out {out_dir}", lock_name=lock_name):
            for done in recover_folder(out_dir):
                logger.info("--out: %s", done)
            stage = Path(tempfile.mkdtemp(prefix=staging_prefix(out_dir), dir=out_dir.parent))
            try:
                yield stage
                _close_log_files_under(stage)
                os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes a private folder; give it the usual permissions
                _keep_log_history(out_dir, stage)
                replace_folder(stage, out_dir)
            except BaseException:
                _close_log_files_under(stage)
                shutil.rmtree(stage, ignore_errors=True)
                raise
    except FolderInUseError as e:
        raise ConfigError(str(e)) from None
    except BaseException:
        for folder in created:  # parents this run made for --out (innermost first)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _keep_log_history(out_dir: Path, stage: Path) -> None:
    """The earlier run's reco.log first in the new one (the rest of the earlier OUT is replaced)."""
    old_log, new_log = out_dir / "reco.log", stage / "reco.log"
    if old_log.is_file() and new_log.is_file():
        new_log.write_bytes(old_log.read_bytes() + new_log.read_bytes())


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
