"""Where a benchmark run writes: its run directory, the benchmark's reference pickle, and the
co-segmentation pictures (shared by the paper benchmarks and the open-vocabulary ones)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from reco_api.reference_setting import reference_experiment_name, run_experiment_name
from reco_api.settings import reference_settings
from utils import timing
from utils.config import RecoConfig, config_to_dict
from utils.crf import denormalise_image
from utils.io import save_json
from utils.naming import file_name_part
from utils.visualise import save_cosegmentation

logger = logging.getLogger("reco")


def run_dir_of(config: RecoConfig, split: str) -> Path:
    """{dir_ckpt}/{dataset_name}/{split}/reco/{experiment}[_dc]/k{n_imgs:03d} (SPEC 11).

    The experiment name carries a setting hash unless the setting is the paper's (reco_api.reference_setting).
    """
    experiment = run_experiment_name(reference_settings(config))
    return Path(config.dir_ckpt) / config.dataset_name / split / "reco" / experiment / f"k{config.n_imgs:03d}"


def reference_pickle_path(config: RecoConfig) -> Path:
    """{dir_dataset}/{experiment}_cat_to_img_feature_k{n_imgs}.pkl, the authors' file name for the paper's
    setting (SPEC 8); other settings add their hash to the experiment name."""
    experiment = reference_experiment_name(reference_settings(config))
    return Path(config.dir_dataset) / f"{experiment}_cat_to_img_feature_k{config.n_imgs}.pkl"


def cosegmentation_visualiser(run_dir: Path,
                              enabled: bool = True) -> Optional[Callable[[str, torch.Tensor, torch.Tensor], None]]:
    """on_reference callback: coseg_{category}.png with the first 5 retrieved images and their similarity maps
    (a name that cannot be a file name as it is gets a safe one, utils.naming.file_name_part; the title
    keeps the real name). None when not `enabled` (the config's `cosegmentation_pictures`)."""
    if not enabled:
        return None

    def visualise(name: str, images: torch.Tensor, similarity: torch.Tensor) -> None:
        with timing.stage("writing"):
            size = tuple(images.shape[-2:])
            maps = F.interpolate(similarity[:5, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            save_cosegmentation(run_dir / f"coseg_{file_name_part(name)}.png", denormalise_image(images[:5].cpu()),
                                maps.cpu().numpy(), title=name)

    return visualise


def write_run_record(run_dir: Path, config: RecoConfig, split: str, setting: dict[str, Any]) -> None:
    """config.json: the config, the split and the setting of the run. The co-segmentation pictures of a
    run directory that recorded another setting are removed first: names come from file names, so two
    settings (weights replaced under the same name) share a run directory, and a reference read from the
    cache draws no picture, which would leave the other setting's picture beside this run's results."""
    record = run_dir / "config.json"
    pictures = sorted(run_dir.glob("coseg_*.png"))
    if pictures and _recorded_setting(record) != json.loads(json.dumps(setting)):
        for picture in pictures:
            picture.unlink(missing_ok=True)
        logger.info("removed %d co-segmentation pictures of another setting from %s", len(pictures), run_dir)
    save_json(record, {**config_to_dict(config), "split": split, "setting": setting}, sort_keys=True)


def _recorded_setting(record: Path) -> Optional[Any]:
    try:
        return json.loads(record.read_text()).get("setting")
    except (OSError, ValueError, AttributeError):
        return None  # no record, or not one this version can read: the pictures are of no known setting
