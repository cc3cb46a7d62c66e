"""Open-vocabulary benchmark stage of main_reco.py (voc21 ... ade20k150), under the peers' protocol.

Per batch of equal-size images: the shorter side is resized to `eval_short_side` (long side capped at
`eval_long_side_max`); every query name is scored by ReCo (dense encoder x DenseCLIP text attention) in
sliding windows (`slide_window`, `slide_stride`); every query's scores are resized bilinearly to the
label's full resolution, a class scores the max of its names there, the background is scored by
`background.mode`, and the argmax is scored (the peers' order, reco/ovss.py ovss_labels). The CRF needs one
score map per class on the image it refines: it refines the class scores computed at the inference
resolution, and its probabilities are resized to the label's resolution before the argmax.

Reference embeddings come from the per-category cache (`reference_cache_dir`), so a class name met in
another benchmark (VOC and Context share most) or an own-image run is not recomputed, and only the (C,)
vectors are kept. No reference pickle is written into `dir_dataset`: several benchmarks share a root.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import Dataset

from datasets import metadata
from datasets.benchmarks import AnnotationMismatchError, build_benchmark
from entry.evaluation_loop import combine_ranks, readable_batches, write_scores
from entry.reco_index import references_on_rank0
from entry.run_dirs import cosegmentation_visualiser, run_dir_of, write_run_record
from reco.ovss import (ProbabilityBackground, benchmark_queries, ovss_class_scores, ovss_labels, query_list,
                       upsampled_argmax)
from reco.references import stack_references
from reco.sliding import protocol_size, resize_images
from reco_api.models import build_dense_clip, build_encoder, inference_models
from reco_api.predictor import Predictor
from reco_api.preflight import check_run_inputs
from reco_api.reference_setting import run_setting
from reco_api.references import compute_references
from reco_api.settings import crf_settings, inference_settings, reference_settings
from utils import distributed, timing
from utils.config import ConfigError, RecoConfig
from utils.crf import denormalise_image
from utils.device import resolve_device, setup_logging
from utils.metrics import RunningScore, named_scores
from utils.visualise import save_panels

logger = logging.getLogger("reco")


@dataclass(frozen=True)
class OvssProtocol:
    """What a config asks of one benchmark: classes, the names queried, and how background is scored."""

    class_names: list[str]
    queries: list[str]                  # every name queried, once (reference embeddings are per name)
    members: list[list[int]]            # per class, indices into `queries` (empty: threshold background)
    background_index: Optional[int]
    threshold: Optional[float]          # set in threshold mode
    probability: Optional[ProbabilityBackground] = None  # set in probability mode (the peers' rule)


@dataclass(frozen=True)
class OvssGeometry:
    """The peers' inference size: the shorter side resized to `short_side`, the long one capped."""

    short_side: int
    long_side_max: int


def ovss_protocol(config: RecoConfig) -> OvssProtocol:
    """The benchmark's class list under the config's background mode (a mismatch names the config key)."""
    classes = metadata.ovss_classes(config.dataset_name)
    names = [c.name for c in classes]
    background = metadata.ovss_background(config.dataset_name)
    background_index = None if background is None else names.index(background)
    mode = config.background.mode
    if (background_index is None) != (mode == "none"):
        raise ConfigError(
            f"background.mode: {config.dataset_name} " + (
                f"has a background class: set 'threshold', 'synonyms' or 'probability' (got {mode!r})"
                if background_index is not None
                else f"has no background class: set 'none' (got {mode!r})"))
    per_class = benchmark_queries([c.queries for c in classes], background_index, mode, config.background.synonyms)
    queries, members = query_list(per_class)
    bg = config.background
    probability = ProbabilityBackground(bg.logit_scale, bg.prob_thd, bg.area_thd) if mode == "probability" else None
    return OvssProtocol(names, queries, members, background_index, bg.threshold if mode == "threshold" else None,
                        probability)


def protocol_tag(config: RecoConfig) -> str:
    """Run sub-directory naming the protocol settings, so runs of other settings never overwrite it."""
    tag = f"short{config.eval_short_side}"
    tag += f"_slide{config.slide_window}s{config.slide_stride}" if config.slide_window else "_whole"
    background = config.background
    if background.mode == "threshold":
        tag += f"_bgthr{background.threshold:g}"
    elif background.mode == "synonyms":
        tag += "_bgsyn_" + _synonyms_hash(background.synonyms)
    elif background.mode == "probability":
        tag += f"_bgprob_s{background.logit_scale:g}_p{background.prob_thd:g}"
        tag += f"_a{background.area_thd:g}" if background.area_thd is not None else ""
        tag += "_" + _synonyms_hash(background.synonyms)
    return tag


def _synonyms_hash(synonyms: Optional[list[str]]) -> str:
    names = "\n".join(synonyms) if synonyms is not None else "default"
    return hashlib.sha1(names.encode()).hexdigest()[:6]


def ovss_run_dir(config: RecoConfig, split: str = "val") -> Path:
    """{dir_ckpt}/{dataset_name}/{split}/reco/{experiment}[_dc]/k{n_imgs:03d}/{protocol tag}."""
    return run_dir_of(config, split) / protocol_tag(config)


def check_ovss_inputs(config: RecoConfig) -> OvssProtocol:
    """The benchmark's protocol, once its device and every input it needs are known to be there
    (ConfigError listing all missing inputs). scripts/reco_ovss.sh runs this for every config first."""
    protocol = ovss_protocol(config)
    resolve_device(config.device)  # a missing GPU is reported before the inputs
    # every missing input at once; no reference pickle here (several benchmarks share a root)
    check_run_inputs(reference_settings(config), stage="benchmark", dir_dataset=config.dir_dataset,
                     categories=protocol.queries)
    return protocol


def run_ovss_benchmark(config: RecoConfig, split: str = "val", references_only: bool = False) -> dict[str, Any]:
    protocol = check_ovss_inputs(config)
    device = resolve_device(config.device)
    settings = reference_settings(config)
    run_dir = ovss_run_dir(config, split)
    if distributed.is_main():  # under torchrun rank 0 writes the shared files and the log
        setup_logging(run_dir / "reco.log")
        timing.set_output_dir(run_dir)
        write_run_record(run_dir, config, split, run_setting(settings))
    else:
        setup_logging(level=logging.WARNING)
    logger.info("ReCo on %s %s (%d classes, %d query names) -> %s (device %s)", config.dataset_name, split,
                len(protocol.class_names), len(protocol.queries), run_dir, device)
    dataset = build_benchmark(config.dataset_name, config.dir_dataset, split)  # fails early on a bad tree

    encoder = build_encoder(settings.models, device)
    dense = build_dense_clip(settings.models, device, settings.cache_root)
    references = references_on_rank0(config, lambda: compute_references(
        settings, protocol.queries, device, encoder, dense,
        on_reference=cosegmentation_visualiser(run_dir, config.cosegmentation_pictures)))
    if references_only:
        return {}
    matrix = stack_references(references, protocol.queries).to(device)
    del references
    with timing.stage("text"):
        models = inference_models(settings.models.dense_clip_inference, protocol.queries, encoder, matrix, dense)
    predictor = Predictor(models, inference_settings(config), crf_settings(config, device))
    geometry = OvssGeometry(config.eval_short_side, config.eval_long_side_max)
    return evaluate_ovss(config.dataset_name, dataset=dataset, protocol=protocol, geometry=geometry, run_dir=run_dir,
                         predictor=predictor, batch_size=config.batch_size, n_workers=config.n_workers,
                         n_visualisations=config.n_visualisations, device=device)


@torch.no_grad()
def evaluate_ovss(dataset_name: str, *, dataset: Dataset, protocol: OvssProtocol, geometry: OvssGeometry,
                  run_dir: Path, predictor: Predictor, batch_size: int, n_workers: int, n_visualisations: int,
                  device: torch.device) -> dict[str, Any]:
    """Score every val image with and without the CRF; write results.json, results_crf.json and panels.

    Labels in the peers' order: every query's scores resized to the label's size, then the max over a
    class's names (reco.ovss.ovss_labels); the CRF refines the class scores at the inference size.
    """
    n_classes = len(protocol.class_names)
    palette = metadata.palette(dataset_name)
    scores, scores_crf = RunningScore(n_classes), RunningScore(n_classes)
    skipped: list[str] = []

    def class_scores(query_scores: torch.Tensor) -> torch.Tensor:  # (B, Q, h, w) -> (B, C, h, w), the CRF's
        return ovss_class_scores(query_scores, protocol.members, protocol.background_index, protocol.threshold,
                                 protocol.probability)

    for i, batch in readable_batches(dataset, batch_size=batch_size, n_workers=n_workers, device=device,
                                     desc=f"ReCo {dataset_name}", skipped=skipped, fatal=(AnnotationMismatchError,),
                                     shard=(distributed.get_rank(), distributed.get_world_size())):
        full_size = tuple(batch["image"].shape[-2:])
        with timing.stage("inference"):
            images = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W) full resolution
            resized = resize_images(images, protocol_size(*full_size, geometry.short_side, geometry.long_side_max))
        prediction = predictor.predict(resized, crf_scores=class_scores)  # scores: (B, Q, h, w) per query name
        for j in range(len(images)):  # one image at a time at full resolution bounds memory
            with timing.stage("inference"):
                pred = ovss_labels(prediction.scores[j:j + 1], protocol.members, full_size, protocol.background_index,
                                   protocol.threshold, protocol.probability)[0].cpu().numpy()
            with timing.stage("CRF"):
                pred_crf = upsampled_argmax(prediction.crf_probabilities[j:j + 1], full_size)[0].cpu().numpy()
            label = batch["label"][j]
            scores.update(label, pred)
            scores_crf.update(label, pred_crf)
            if i < n_visualisations and j == 0:
                with timing.stage("writing"):
                    rgb = denormalise_image(batch["image"][:1])[0]
                    save_panels(run_dir / f"{i:04d}.png", rgb, label.numpy(), pred, pred_crf, palette,
                                protocol.class_names)

    skipped = combine_ranks([scores, scores_crf], skipped)
    results = named_scores(scores.scores(), protocol.class_names)
    results_crf = named_scores(scores_crf.scores(), protocol.class_names)
    if distributed.is_main():
        write_scores(run_dir, results, results_crf, skipped)
    logger.info("%s: mIoU %.4f (CRF %.4f), pixel accuracy %.4f (CRF %.4f)", dataset_name,
                results["Mean IoU"], results_crf["Mean IoU"], results["Pixel Acc"], results_crf["Pixel Acc"])
    return {"results": results, "results_crf": results_crf, "run_dir": run_dir, "skipped": skipped}

