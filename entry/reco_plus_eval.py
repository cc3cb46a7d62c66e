"""ReCo+ evaluation stage of main_reco_plus.py, also used by training for its validations: the run
directory, the val loader, the CRF function, evaluation with and without CRF into a folder, and the
evaluation of given weights (`--weights`). Entry-side: reads the config and does the file I/O."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import metadata
from datasets.benchmarks import build_benchmark, collate, size_grouped_batches
from networks.deeplab import build_segmentor
from reco_plus import EvalResult, evaluate
from utils import timing
from utils.config import ConfigError, RecoPlusConfig, config_to_dict, effective, require_dir, require_file
from utils.crf import CrfSettings, denormalise_image
from utils.device import effective_workers, resolve_device, setup_logging
from utils.distributed import env_rank
from utils.io import atomic_write, describe_exception, save_json
from utils.metrics import named_scores
from utils.visualise import save_panels

logger = logging.getLogger("reco")


def run_dir_of(config: RecoPlusConfig) -> Path:
    return Path(config.dir_ckpt).expanduser() / config.dataset_name / "val" / "reco_plus" / config.segmentor_name


def make_crf_fn(config: RecoPlusConfig, device: torch.device):
    """crf(images (B,3,H,W) normalised, logits (B,C,H,W)) -> CRF probabilities (utils.crf.crf_refine)."""
    settings = CrfSettings.resolve(config.crf_backend, device, effective(config, "crf_workers"))

    def crf(images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with timing.stage("CRF"):
            return settings.refine(images, logits)
    return crf


def val_loader(config: RecoPlusConfig, device: torch.device) -> DataLoader:
    root = require_dir(config, "dir_dataset")
    try:
        dataset = build_benchmark(config.dataset_name, root, "val")
    except ValueError as e:
        raise ConfigError(f"dir_dataset: {e}") from None
    # KITTI-STEP frames keep their size: batches only group equal sizes.
    batches = size_grouped_batches(dataset.image_sizes(), config.eval_batch_size)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate,
                      num_workers=effective_workers(config.n_workers, device),
                      pin_memory=device.type == "cuda")


def run_evaluation(model: torch.nn.Module, loader: DataLoader, config: RecoPlusConfig, device: torch.device,
                   crf_fn, out_dir: Path, desc: str) -> EvalResult:
    """Evaluate with and without CRF; write results.json, results_crf.json and panels into out_dir."""
    names, palette = metadata.eval_categories(config.dataset_name), metadata.palette(config.dataset_name)
    n_batches = len(loader)
    step = max(1, n_batches // max(config.n_visualisations, 1))
    visualise = set(range(0, n_batches, step)[: config.n_visualisations])
    with tqdm(total=n_batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True) as bar, \
            timing.stage("evaluation (inference, data)"):
        result = evaluate(model, loader, len(names), device, crf_fn, config.amp, visualise, bar)
    with timing.stage("writing"):
        save_json(out_dir / "results.json", named_scores(result.scores, names))
        save_json(out_dir / "results_crf.json", named_scores(result.scores_crf, names))
        for s in result.samples:
            save_panels(out_dir / f"{s.batch_index:04d}.png", denormalise_image(s.image), s.gt, s.pred, s.pred_crf,
                        palette, names)
    logger.info("%s: mIoU %.4f, CRF mIoU %.4f, pixel acc %.4f (CRF %.4f) on %d images -> %s", desc,
                result.scores["Mean IoU"], result.scores_crf["Mean IoU"], result.scores["Pixel Acc"],
                result.scores_crf["Pixel Acc"], result.n_images, out_dir)
    return result


def write_config(config: RecoPlusConfig, run_dir: Path) -> None:
    resolved = config_to_dict(config)
    save_json(run_dir / "config.json", resolved, sort_keys=True)
    with atomic_write(run_dir / "config.yaml", "w") as f:
        yaml.safe_dump(resolved, f, sort_keys=False)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a plain state_dict (or our last.pt) strictly; 'module.' prefixes of DDP checkpoints are dropped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on a file that is not a checkpoint
        raise ConfigError(f"--weights: cannot read {path} as a PyTorch state_dict ({describe_exception(e)}); "
                          "expected a DeepLabv3+ state_dict written by torch.save") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"--weights: {path} does not hold a state_dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ConfigError(f"--weights: {path} does not fit segmentor_name / dataset classes: {e}") from None


def evaluate_weights(config: RecoPlusConfig, weights: str) -> Optional[dict[str, Any]]:
    """Evaluate a state_dict on val with and without CRF into {run}/eval/ (rank 0 only under torchrun)."""
    path = require_file("--weights", weights, "a DeepLabv3+ state_dict (.pt)")
    if env_rank() > 0:
        return None
    device = resolve_device(config.device)
    n_classes = len(metadata.eval_categories(config.dataset_name))
    with timing.stage("models"):
        try:
            model = build_segmentor(config.segmentor_name, n_classes, "random")  # every weight is replaced below
        except ValueError as e:
            raise ConfigError(str(e)) from None
        load_weights(model, path)
        model.to(device)
    loader = val_loader(config, device)
    out_dir = run_dir_of(config) / "eval"
    setup_logging(out_dir / "eval.log")
    timing.set_output_dir(out_dir)
    logger.info("evaluating %s (%s) on %s val, device %s", path, config.segmentor_name, config.dataset_name, device)
    result = run_evaluation(model, loader, config, device, make_crf_fn(config, device), out_dir, "eval")
    return {"results": result.scores, "results_crf": result.scores_crf, "out_dir": out_dir}
