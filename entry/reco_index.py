"""Index stage of main_reco.py: embed every image of the retrieval collection (ImageNet, or any folder
given as collection_dir) with CLIP into the on-disk index (torchrun-aware).

    python main_reco.py --config CFG --stage index
    torchrun --nproc_per_node=8 main_reco.py --config CFG --stage index
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F

import networks
from datasets.imagenet import IndexBuildDataset, clip_normalise
from image_index.build import build_index
from image_index.storage import CLIP_WEIGHTS_KEY, IndexNotFoundError
from reco_api.collection import check_index_weights, clip_weights_record
from reco_api.models import clip_precision
from reco_api.preflight import check_run_inputs
from reco_api.references import retrieval_collection
from reco_api.settings import reference_settings
from utils import distributed, timing
from utils.config import RecoConfig
from utils.device import effective_batch_size, effective_workers, extra_log_file, resolve_device

logger = logging.getLogger("reco")
T = TypeVar("T")


def run_index_stage(config: RecoConfig) -> Path:
    """Build the collection's index unless it exists ({dir_imagenet}/index/{tag}_{split}/ or
    {collection_dir}/index/{tag}_{name}/); resumes an interrupted build."""
    settings = reference_settings(config)
    check_run_inputs(settings, stage="index")
    collection = retrieval_collection(settings)
    out_dir = collection.index_dir
    if (out_dir / "meta.json").is_file():
        check_index_weights(collection, settings.models.clip, settings.hash_memo)
        logger.info("index already built: %s", out_dir)
        return out_dir
    published = collection.published_pickle
    joined_here = not distributed.is_initialized()  # the benchmark stage may have joined already
    rank, world_size, _ = distributed.init_distributed()
    try:
        if published is not None and published.is_file():  # convert the authors' pickle once (rank 0)
            if rank == 0:
                with timing.stage("index conversion", log=True):
                    collection.load_index()
            distributed.barrier()
            return out_dir
        device = resolve_device(config.device)
        precision = clip_precision(config.clip_precision, device)
        # the build's own log gets the build's messages; the run's log (reco.log) keeps getting them too
        build_log = out_dir.parent / f"build_{out_dir.name}.log"
        with extra_log_file(build_log) if rank == 0 else contextlib.nullcontext():
            clip_weights = clip_weights_record(settings.models.clip, settings.hash_memo)  # before it is read
            with timing.stage("models"):
                clip_model, _ = networks.build_clip(config.clip_arch, config.weights.clip, device=device,
                                                    precision=precision, key="weights.clip")
            image_size = networks.clip_image_size(clip_model)
            paths = collection.list_images()
            if not paths:
                raise FileNotFoundError(collection.missing_images_message())

            to_model_input = networks.clip_input_adapter(config.clip_arch)  # identity for OpenAI CLIPs
            resize = networks.get_clip(config.clip_arch).index_resize  # "crop" for OpenAI CLIPs (SPEC 2)

            def embed(images: torch.Tensor) -> torch.Tensor:
                # uint8 from the workers; ToTensor + Normalize here, on the device, bit-identical to SPEC 2
                pixels = to_model_input(clip_normalise(images.to(device, non_blocking=True)))
                return F.normalize(clip_model.encode_image(pixels).float(), dim=-1)

            meta = {"clip_arch": config.clip_arch, "split": collection.name, "image_size": image_size,
                    CLIP_WEIGHTS_KEY: clip_weights}  # so shards and indexes of two weights never mix
            if not collection.is_imagenet:
                meta["collection_dir"] = str(collection.root)
            with timing.stage("index build", log=True):
                build_index(
                    paths, embed, out_dir, meta,
                    make_dataset=lambda subset: IndexBuildDataset(subset, image_size, normalise=False, resize=resize),
                    batch_size=effective_batch_size(config.index_batch_size, device),
                    num_workers=index_workers(config, device),
                    shard_size=config.index_shard_size, device=device, rank=rank, world_size=world_size,
                    barrier=distributed.barrier, logger=logger,
                    autocast_dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
                    names=collection.index_names(paths),
                )
    finally:
        if joined_here:
            distributed.cleanup()
    return out_dir


def index_workers(config: RecoConfig, device: torch.device) -> int:
    """DataLoader workers of the build: `index_workers`, else on a GPU all the cores of this process's
    share of the machine but one (JPEG decoding and the bicubic resize must keep up with the GPU), else
    `n_workers` up to the cores less one (on a CPU the workers compete with the model for the cores)."""
    if config.index_workers is not None:
        return config.index_workers
    if device.type != "cuda":
        return effective_workers(config.n_workers, device)
    processes_here = distributed.env_local_world_size()
    return max(1, (os.cpu_count() or 2) // processes_here - 1)


def building_missing_index(config: RecoConfig, compute: Callable[[], T]) -> T:
    """compute(); when it reports that the retrieval collection has no index, build the index (this stage,
    or convert the authors' pickle) and compute again. The library only reports a missing index: building
    one (distributed set-up, its own log file) is the program's decision."""
    try:
        return compute()
    except IndexNotFoundError:
        collection = retrieval_collection(reference_settings(config))
        if collection.index_available():  # the index is there but broken: that error stands
            raise
        logger.info("no index of %s yet: building it (every image is embedded once)", collection.root)
        run_index_stage(config)
        return compute()


def references_on_rank0(config: RecoConfig,
                        compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """building_missing_index(config, compute) in one process. Under torchrun every rank first takes part
    in building a missing index, then rank 0 alone computes (and writes) the references and the others
    receive them: the same values, on the device they were on."""
    if not distributed.is_distributed():
        return building_missing_index(config, compute)
    if not (retrieval_collection(reference_settings(config)).index_dir / "meta.json").is_file():
        run_index_stage(config)
    references = building_missing_index(config, compute) if distributed.is_main() else None
    shared = distributed.broadcast_object(None if references is None else {
        name: (value.detach().cpu(), value.device.type != "cpu") for name, value in references.items()})
    if references is not None:
        return references
    device = resolve_device(config.device)
    return {name: value.to(device) if on_device else value for name, (value, on_device) in shared.items()}
