"""Benchmark stage of main_reco.py: reference embeddings, inference, CRF, metrics, pseudo-masks."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets import metadata
from datasets.benchmarks import build_benchmark
from datasets.registry import benchmark_names, get_benchmark
from entry.evaluation_loop import combine_ranks, readable_batches, write_scores
from entry.pseudo_masks import PseudoMaskStore
from entry.reco_index import references_on_rank0
from entry.reco_ovss import run_ovss_benchmark
from entry.run_dirs import cosegmentation_visualiser, reference_pickle_path, run_dir_of, write_run_record
from reco.references import reference_problem, stack_references
from reco_api.models import DenseClipModels, build_dense_clip, build_encoder, inference_models
from reco_api.predictor import Predictor
from reco_api.preflight import check_run_inputs
from reco_api.reference_setting import (is_paper_setting, reference_setting, run_setting, sidecar_differences,
                                        sidecar_path, write_with_sidecar)
from reco_api.references import check_index_size, compute_references
from reco_api.settings import (InferenceSettings, ReferenceSettings, crf_settings, inference_settings,
                               reference_settings)
from utils import distributed, timing
from utils.config import ConfigError, RecoConfig
from utils.crf import denormalise_image
from utils.device import resolve_device, setup_logging
from utils.io import safe_load_pickle
from utils.metrics import RunningScore, named_scores
from utils.visualise import save_panels

logger = logging.getLogger("reco")


def run_benchmark(config: RecoConfig, split: str = "val", references_only: bool = False) -> dict[str, Any]:
    """Evaluate (val) or write the pseudo-masks (train). Under torchrun the processes share the images:
    rank 0 computes missing references and writes the shared files, each rank writes its images' masks."""
    distributed.init_distributed()
    try:
        return _run_benchmark(config, split, references_only)
    finally:
        distributed.cleanup()


def _run_benchmark(config: RecoConfig, split: str, references_only: bool) -> dict[str, Any]:
    if config.dataset_name is None:
        raise ConfigError(f"dataset_name: not set (known: {', '.join(benchmark_names())})")
    if get_benchmark(config.dataset_name).protocol == "ovss":
        return run_ovss_benchmark(config, split, references_only)
    if config.background.mode != "none":
        raise ConfigError(f"background.mode: {config.background.mode!r} applies to the open-vocabulary benchmarks "
                          f"with a background class only; {config.dataset_name} has none")
    device = resolve_device(config.device)  # a missing GPU is reported before the inputs
    settings = reference_settings(config)
    categories = metadata.categories(config.dataset_name)
    pickle_path = reference_pickle_path(config) if config.dir_dataset is not None else None
    stale = reference_pickle_differences(settings, pickle_path)  # None: no pickle; []: it holds this setting
    reusable = stale == []
    check_run_inputs(settings, stage="benchmark", dir_dataset=config.dir_dataset, categories=categories,
                     reference_pickle=pickle_path if reusable else None)
    run_dir = run_dir_of(config, split)
    main = distributed.is_main()
    if main:
        setup_logging(run_dir / "reco.log")
        timing.set_output_dir(run_dir)
    else:  # rank 0 tells the story; the others speak up only for warnings
        setup_logging(level=logging.WARNING)
    logger.info("ReCo on %s %s -> %s (device %s)", config.dataset_name, split, run_dir, device)
    if stale:
        logger.info("recomputing %s: it was made with another setting (%s)", pickle_path.name, "; ".join(stale))
    setting = run_setting(settings)
    masks = PseudoMaskStore(run_dir, setting) if split == "train" else None
    if masks is not None and main:
        masks.record_setting()  # before any mask of this setting
    distributed.barrier()  # the setting is recorded before any rank writes or reads a mask of it
    if main:
        write_run_record(run_dir, config, split, setting)
    dataset = build_benchmark(config.dataset_name, config.dir_dataset, split)  # fails early on a bad tree
    if not reusable:
        check_index_size(settings)  # n_imgs against the index, before minutes of model loading

    logger.info("loading the models")
    encoder = build_encoder(settings.models, device)
    dense = build_dense_clip(settings.models, device, settings.cache_root)
    if reusable:
        references = read_references(pickle_path, categories, encoder.embed_dim)
    else:
        references = references_on_rank0(config, lambda: write_references(
            settings, pickle_path, categories, device, encoder, dense,
            cosegmentation_visualiser(run_dir, config.cosegmentation_pictures)))
    if references_only:
        return {}
    with timing.stage("text"):
        models = inference_models(settings.models.dense_clip_inference, categories, encoder,
                                  stack_references(references, categories).to(device), dense)
    inference = inference_settings(config)
    predictor = Predictor(models, inference, crf_settings(config, device))
    return evaluate(config.dataset_name, dataset=dataset, split=split, run_dir=run_dir, predictor=predictor,
                    inference=inference, n_visualisations=config.n_visualisations, device=device, masks=masks)


def read_references(path: Path, categories: Sequence[str], dim: int) -> dict[str, torch.Tensor]:
    """The reference pickle in dir_dataset (ours or the authors'), checked against the benchmark."""
    logger.info("reading reference embeddings from %s", path)
    with timing.stage("references (pickle)"):
        return check_references(safe_load_pickle(path), categories, dim, path)


def write_references(settings: ReferenceSettings, path: Path, categories: Sequence[str], device: torch.device,
                     encoder: torch.nn.Module, dense: Optional[DenseClipModels],
                     on_reference: Optional[Callable[[str, torch.Tensor, torch.Tensor], None]],
                     ) -> dict[str, torch.Tensor]:
    """Compute the references and write the pickle with its settings record."""
    references = compute_references(settings, categories, device, encoder, dense, on_reference=on_reference)
    with timing.stage("writing"):
        write_with_sidecar({name: references[name].detach().cpu().float() for name in categories}, path,
                           reference_setting(settings))
    logger.info("wrote reference embeddings to %s (setting in %s)", path, sidecar_path(path).name)
    return references


def reference_pickle_differences(settings: ReferenceSettings, path: Optional[Path]) -> Optional[list[str]]:
    """Whether the reference pickle holds this config's setting: None when there is no pickle, [] when it
    does, else how its recorded setting differs (it is then recomputed and overwritten).

    Ours carries its setting in the sidecar {pickle}.meta.json, with the pickle's content hash. A pickle without one can only be the
    authors' published file: [] for the paper's setting, an error naming the file for any other.
    """
    if path is None or not path.is_file():  # no dir_dataset: reported by the preflight check
        return None
    differences = sidecar_differences(path, reference_setting(settings))
    if differences is not None:
        return differences
    if is_paper_setting(settings, strict=True):
        return []
    raise ValueError(
        f"{path} has no settings record ({sidecar_path(path).name}), so it can only be the authors' published "
        "file, which holds the paper's setting (DeiT-S/16-SIN, ViT-L/14@336px, RN50x16, k=50, ImageNet train, "
        "context elimination and text attention with the default contexts and aliases); this config asks for "
        "another setting. Delete or move the file to recompute it")


def check_references(loaded: Any, categories: Sequence[str], dim: int, path: Path) -> dict[str, torch.Tensor]:
    """The published/cached pickle must hold one (dim,) embedding for exactly the benchmark's categories."""
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a dict category -> embedding, got {type(loaded).__name__}")
    names = list(loaded)
    if set(names) != set(categories):
        missing = [c for c in categories if c not in loaded]
        extra = [n for n in names if n not in categories]
        raise ValueError(
            f"{path} holds reference embeddings for other categories than this benchmark's "
            f"{len(categories)} (missing: {missing[:10]}, unexpected: {extra[:10]}); delete it or use the "
            "file published for this benchmark"
        )
    references = {}
    for name in categories:
        value = torch.as_tensor(loaded[name]).float().reshape(-1)
        if value.numel() != dim:
            raise ValueError(f"{path}: embedding of '{name}' has {value.numel()} values but the encoder "
                             f"gives {dim}: the file was computed with another encoder")
        problem = reference_problem(value)
        if problem:
            raise ValueError(f"{path}: the reference embedding of '{name}' {problem}; delete the file to recompute it")
        references[name] = value
    return references


@torch.no_grad()
def evaluate(dataset_name: str, *, dataset: Dataset, split: str, run_dir: Path, predictor: Predictor,
             inference: InferenceSettings, n_visualisations: int, device: torch.device,
             masks: Optional[PseudoMaskStore] = None) -> dict[str, Any]:
    """Predict every image, refine with the CRF, score both and save the pseudo-masks into `masks` (the
    train split), scoring those an earlier run of the same setting left there instead of predicting."""
    lut = metadata.prediction_to_eval(dataset_name)
    lut = None if lut is None else torch.as_tensor(lut, device=device)
    n_classes, palette = len(metadata.eval_categories(dataset_name)), metadata.palette(dataset_name)
    scores, scores_crf = RunningScore(n_classes), RunningScore(n_classes)
    skipped: list[str] = []
    resumed = 0
    shard = (distributed.get_rank(), distributed.get_world_size())  # (0, 1) but under torchrun
    for i, batch in readable_batches(dataset, batch_size=inference.batch_size, n_workers=inference.n_workers,
                                     device=device, desc=f"ReCo {dataset_name} {split}", skipped=skipped,
                                     shard=shard):
        labels = batch["label"]
        saved = masks.load(batch["name"], tuple(labels.shape)) if masks is not None else None
        if saved is not None:  # written by an earlier, interrupted run: score them, skip the models
            pred, pred_crf = saved
            resumed += len(pred)
        else:
            pred, pred_crf = _predict_batch(batch["image"], predictor, lut)
        scores.update(labels, pred)
        scores_crf.update(labels, pred_crf)
        with timing.stage("writing"):
            if masks is not None and saved is None:
                for j, mask_name in enumerate(batch["name"]):
                    masks.save(mask_name, pred[j], pred_crf[j])
            if i < n_visualisations:
                rgb = denormalise_image(batch["image"][:1])[0]
                save_panels(run_dir / f"{i:04d}.png", rgb, labels[0].numpy(), pred[0], pred_crf[0], palette,
                            metadata.eval_categories(dataset_name))

    skipped = combine_ranks([scores, scores_crf], skipped)
    resumed = sum(distributed.gather_lists([resumed]))
    class_names = metadata.eval_categories(dataset_name)
    results = named_scores(scores.scores(), class_names)
    results_crf = named_scores(scores_crf.scores(), class_names)
    if distributed.is_main():
        write_scores(run_dir, results, results_crf, skipped)
    if masks is not None:
        masks.report()
    if resumed:
        logger.info("%d pseudo-masks were already written by an earlier run and were reused", resumed)
    logger.info("mIoU %.4f (CRF %.4f), pixel accuracy %.4f (CRF %.4f)", results["Mean IoU"],
                results_crf["Mean IoU"], results["Pixel Acc"], results_crf["Pixel Acc"])
    return {"results": results, "results_crf": results_crf, "run_dir": run_dir, "skipped": skipped}


def _predict_batch(images: torch.Tensor, predictor: Predictor,
                   lut: Optional[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """ReCo and ReCo + CRF label maps (B, H, W) of images (B, 3, H, W), in the scored classes (numpy int64).

    `lut` maps predicted to scored classes (COCO-Stuff's 171 -> 27) or is None.
    """
    prediction = predictor.predict(images)
    pred, pred_crf = prediction.labels, prediction.crf_labels
    if lut is not None:  # COCO-Stuff: 171 fine predictions scored as 27 coarse classes
        pred, pred_crf = lut[pred], lut[pred_crf]
    return pred.cpu().numpy(), pred_crf.cpu().numpy()
