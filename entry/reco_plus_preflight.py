"""Before a ReCo+ run starts: every folder and file it needs, checked at once (one message for all).

Training needs the benchmark (`dir_dataset`), the pseudo-masks (`dir_pseudo_masks`) and the ImageNet
backbone (`weights.backbone`: a file, a torchvision tag or 'random'); evaluating given weights needs the
benchmark and the `--weights` file. The entry point prefixes the message with the config file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from utils.config import ConfigError, RecoPlusConfig, shown_path

BACKBONE_FILE_SUFFIXES = (".pth", ".pt")


def check_reco_plus_inputs(config: RecoPlusConfig, weights: Optional[str] = None) -> None:
    """ConfigError listing every unset or missing input of this run (nothing when all are there)."""
    problems: list[str] = []
    _need_dir(config, "dir_dataset", problems)
    if weights is not None:
        if not Path(weights).expanduser().is_file():
            problems.append(f"--weights: file not found: {shown_path(weights)}")
    else:
        _need_dir(config, "dir_pseudo_masks", problems)
        backbone = config.weights.backbone
        if backbone is None:
            problems.append("weights.backbone: not set (a torchvision ImageNet checkpoint such as "
                            "resnet101-63fe2227.pth, a torchvision tag such as IMAGENET1K_V1 when online, or 'random')")
        elif backbone != "random" and (backbone.endswith(BACKBONE_FILE_SUFFIXES) or "/" in backbone) \
                and not Path(backbone).expanduser().is_file():
            problems.append(f"weights.backbone: file not found: {shown_path(backbone)} "
                            "(expected a torchvision ImageNet checkpoint)")
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} inputs of this run are missing:\n  " + "\n  ".join(problems))


def _need_dir(config: RecoPlusConfig, key: str, problems: list[str]) -> None:
    value = getattr(config, key)
    if value is None:
        problems.append(f"{key}: not set in the config")
    elif not Path(value).expanduser().is_dir():
        problems.append(f"{key}: directory not found: {shown_path(value)}")
