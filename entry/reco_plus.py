"""ReCo+ training stage of main_reco_plus.py, with resumption (entry-side: reads the config and does the file
I/O; the loop itself is reco_plus.trainer.train). Evaluation, also of given weights, is in entry/reco_plus_eval.py."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from datasets import metadata
from datasets.pseudo_masks import PseudoMaskError, build_pseudo_mask_dataset
from entry.cli import Interrupted
from entry.reco_plus_eval import (evaluate_weights, make_crf_fn, run_dir_of, run_evaluation,  # noqa: F401
                                  val_loader, write_config)  # evaluate_weights: re-exported for main_reco_plus
from networks.deeplab import build_segmentor
from reco_plus import (NO_EVALUATION, EvalResult, PolyLR, ResumableBatchSampler, TrainHooks, TrainSettings,
                       build_optimizer, restore_training_state, train)
from reco_plus.ddp import any_rank, gather_rng_states, wrap_ddp
from utils import timing
from utils.config import ConfigError, RecoPlusConfig, require_dir, require_file
from utils.device import effective_workers, resolve_device, seed_everything, setup_logging
from utils.distributed import init_distributed, is_distributed
from utils.file_identity import MEMO_FILE_NAME, content_hash
from utils.file_lock import FolderInUseError, folder_lock
from utils.jsonl import JsonLinesError, read_json_lines
from utils.io import atomic_write, describe_exception, strict_json_value, torch_save
from utils.visualise import plot_training_curves

logger = logging.getLogger("reco")

# The config keys that decide the trained weights. A run directory holds one setting: a re-run with other
# values stops instead of resuming (or reporting "finished") a run it did not make. iter_train and
# min_lr are left out on purpose: the schedule follows the config (training can be extended).
SETTING_KEYS = ("dataset_name", "segmentor_name", "dir_pseudo_masks", "batch_size", "crop_size", "lr",
                "backbone_lr_ratio", "weight_decay", "seed", "amp")


# --------------------------------------------------------------------------------------------- training
class RunHooks(TrainHooks):
    """File outputs of a training run (main rank) and the stop signal."""

    def __init__(self, run_dir: Path, records: Optional[list[dict]], stop_at: Optional[int]) -> None:
        self.run_dir, self.records, self.stop_at = run_dir, records, stop_at
        self.signalled = False
        self.signum = signal.SIGINT
        self.checkpoint_info: dict[str, Any] = {}

    def _append(self, record: dict) -> None:
        self.records.append(record)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(strict_json_value(record), allow_nan=False) + "\n")

    def on_log(self, record: dict) -> None:
        if self.records is not None:
            self._append(record)
            logger.info("iter %d loss %.4f lr %.2e/%.2e train mIoU %.4f", record["iteration"], record["loss"],
                        record["lr_backbone"], record["lr_head"], record["train_miou"])

    def on_evaluation(self, iteration: int, result: EvalResult, record: dict) -> None:
        self._append(record)
        plot_training_curves(self.run_dir / "curves.png", self.records)

    def on_best(self, iteration: int, state_dict: dict) -> None:
        with timing.stage("writing"):
            torch_save(state_dict, self.run_dir / "best_model.pt")
        logger.info("iter %d: new best CRF mIoU, saved %s", iteration, self.run_dir / "best_model.pt")

    def on_checkpoint(self, state: dict) -> None:
        state["extra"].update(self.checkpoint_info)
        with timing.stage("writing"):
            torch_save(state, self.run_dir / "last.pt")

    def should_stop(self, iteration: int) -> bool:
        if self.stop_at is not None and iteration >= self.stop_at:  # the same on every rank
            return True
        if is_distributed() and iteration % 10:  # the vote on a signal synchronises: every 10 iterations
            return False
        return any_rank(self.signalled)


def read_records(run_dir: Path, up_to: int) -> list[dict]:
    """metrics.jsonl records up to iteration `up_to` (later ones belong to a run after the last checkpoint).
    A torn last line (an append cut short by a kill) is dropped with a log line."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        records, torn = read_json_lines(path)
    except JsonLinesError as e:
        raise ConfigError(str(e)) from None
    if torn:
        logger.warning("%s: dropped a torn last line (an interrupted write)", path)
    records = [r for r in records if r.get("iteration", 0) <= up_to]
    with atomic_write(path, "w") as f:
        f.writelines(json.dumps(strict_json_value(r), allow_nan=False) + "\n" for r in records)
    return records


def training_setting(config: RecoPlusConfig) -> dict[str, Any]:
    """The values that decide the weights; a weights file is known by its content hash."""
    setting: dict[str, Any] = {key: getattr(config, key) for key in SETTING_KEYS}
    if config.dir_pseudo_masks is not None:
        setting["dir_pseudo_masks"] = str(Path(config.dir_pseudo_masks).expanduser().resolve())
    backbone = config.weights.backbone
    if backbone is not None and Path(backbone).expanduser().is_file():
        backbone = content_hash(Path(backbone).expanduser(), Path(config.dir_ckpt).expanduser() / MEMO_FILE_NAME)
    setting["weights.backbone"] = backbone
    return setting


def check_same_setting(path: Path, recorded: Optional[dict], current: dict) -> None:
    """ConfigError naming the keys whose values differ from those the checkpoint was trained with."""
    if recorded is None:  # a checkpoint from before settings were recorded: nothing to compare
        logger.warning("%s records no training setting; resuming it with the config's values", path)
        return
    changed = [key for key in sorted(set(recorded) | set(current)) if recorded.get(key) != current.get(key)]
    if changed:
        diff = ", ".join(f"{key}: {recorded.get(key)!r} -> {current.get(key)!r}" for key in changed)
        raise ConfigError(f"{path.parent} holds a ReCo+ run trained with other settings ({diff}); use another "
                          "dir_ckpt, or move the run directory away to start afresh")


def check_backbone_weights(config: RecoPlusConfig) -> Optional[str]:
    value = config.weights.backbone
    if value is None:
        raise ConfigError("weights.backbone: not set (a torchvision ImageNet checkpoint such as "
                          "resnet101-63fe2227.pth, a torchvision tag such as IMAGENET1K_V1 when online, or 'random')")
    if value == "random" and not config.segmentor_name.endswith("_tiny"):
        logger.warning("weights.backbone: random -- training %s from scratch, not from ImageNet weights",
                       config.segmentor_name)
    elif value != "random" and (value.endswith((".pth", ".pt")) or "/" in value):
        require_file("weights.backbone", value, "a torchvision ImageNet checkpoint")
    return value


def resume(run_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           scaler: Optional[torch.amp.GradScaler], rank: int, config: RecoPlusConfig,
           setting: dict[str, Any]) -> tuple[int, float]:
    """(completed iterations, best CRF mIoU) of the run in run_dir, restored from its last.pt if any.
    A last.pt trained with another `setting` is refused (ConfigError naming the keys)."""
    path = run_dir / "last.pt"
    if not path.is_file():
        return 0, NO_EVALUATION
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign last.pt: say so, and how to start afresh
        raise ConfigError(f"{path} cannot be read ({describe_exception(e)}); move it away to start afresh") from None
    extra = state.get("extra") if isinstance(state, dict) else None
    check_same_setting(path, extra.get("setting") if isinstance(extra, dict) else None, setting)
    try:
        start, best = restore_training_state(state, model=model, optimizer=optimizer, scaler=scaler, rank=rank)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ConfigError(f"{path} cannot be resumed with this config (segmentor_name / dataset_name changed?); "
                          f"move it away to start afresh: {e}") from None
    schedule = state.get("scheduler") or {}
    if (schedule.get("max_iters"), schedule.get("min_lr")) != (config.iter_train, config.min_lr):
        logger.warning("iter_train/min_lr changed since last.pt (%s/%s): the schedule now follows the config",
                       schedule.get("max_iters"), schedule.get("min_lr"))
    if not (run_dir / "best_model.pt").is_file():
        best = NO_EVALUATION  # so that the next evaluation writes it
    logger.info("resuming from %s at iteration %d (best CRF mIoU %.4f)", path, start, best)
    return start, best


def train_run(config: RecoPlusConfig, stop_at: Optional[int] = None) -> dict[str, Any]:
    rank, world_size, local_rank = init_distributed()  # rank 0 evaluates while the others wait (2 h timeout)
    is_main = rank == 0
    device = resolve_device(config.device)
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
    if not is_main:
        logger.setLevel(logging.WARNING)  # one copy of the progress messages
    if config.batch_size % world_size:
        raise ConfigError(f"batch_size: {config.batch_size} is not divisible by the {world_size} processes")
    if config.batch_size // world_size < 2 and not (world_size > 1 and device.type == "cuda"):
        # Without SyncBatchNorm the image-pooling BN of the ASPP sees one value per channel and fails.
        raise ConfigError(f"batch_size: {config.batch_size} gives fewer than 2 samples per process")
    seed_everything(config.seed + rank)
    n_classes = len(metadata.eval_categories(config.dataset_name))
    backbone = check_backbone_weights(config)
    try:
        train_set = build_pseudo_mask_dataset(config.dataset_name, require_dir(config, "dir_dataset"),
                                              require_dir(config, "dir_pseudo_masks"), n_classes,
                                              config.crop_size, config.seed)
    except (PseudoMaskError, ConfigError):
        raise
    except ValueError as e:  # missing benchmark folders / files: the message names them
        raise ConfigError(f"dir_dataset: {e}") from None
    run_dir = run_dir_of(config)  # created only once the inputs are known to be there
    with contextlib.ExitStack() as held:
        if is_main:  # one training per run directory: a second one would interleave metrics.jsonl
            try:
                held.enter_context(folder_lock(run_dir, f"the ReCo+ run directory {run_dir}"))
            except FolderInUseError as e:
                raise ConfigError(str(e)) from None
            setup_logging(run_dir / "train.log")
            timing.set_output_dir(run_dir)
        return _train_in(run_dir, config, train_set, n_classes, backbone, device, rank, world_size, stop_at)


def _train_in(run_dir: Path, config: RecoPlusConfig, train_set: Any, n_classes: int, backbone: Optional[str],
              device: torch.device, rank: int, world_size: int, stop_at: Optional[int]) -> dict[str, Any]:
    is_main = rank == 0
    setting = training_setting(config)
    try:
        with timing.stage("models"):
            model = build_segmentor(config.segmentor_name, n_classes, backbone).to(device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    optimizer = build_optimizer(model, config.lr, config.backbone_lr_ratio, config.weight_decay)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    start, best = resume(run_dir, model=model, optimizer=optimizer, scaler=scaler, rank=rank, config=config,
                         setting=setting)
    # Built after resuming, at the resumed iteration: the learning rates follow the config's schedule.
    scheduler = PolyLR(optimizer, config.iter_train, power=0.9, min_lr=config.min_lr, last_epoch=start - 1)
    records = read_records(run_dir, start) if is_main else []
    if is_main:
        write_config(config, run_dir)
    if start >= config.iter_train:
        logger.info("training already finished (%d iterations) in %s", start, run_dir)
        return {"run_dir": run_dir, "iteration": start, "best_miou": best, "stopped": False}
    sampler = ResumableBatchSampler(len(train_set), config.batch_size // world_size, config.seed, start, rank, world_size)
    workers = effective_workers(config.n_workers, device)  # on a CPU: the cores less one at most
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(config.seed))  # keeps the global RNG untouched
    model = wrap_ddp(model, device)
    val = val_loader(config, device) if is_main else None
    crf_fn = make_crf_fn(config, device)

    def evaluate_fn(m: torch.nn.Module, it: int) -> EvalResult:
        return run_evaluation(m, val, config, device, crf_fn, run_dir / f"{it:05d}", f"val {it}")

    hooks = RunHooks(run_dir, records, stop_at) if is_main else _RankHooks(stop_at)
    hooks.checkpoint_info = {"segmentor_name": config.segmentor_name, "dataset_name": config.dataset_name,
                             "n_classes": n_classes, "world_size": world_size, "seed": config.seed,
                             "setting": setting}
    previous = _install_stop_handlers(hooks)
    logger.info("training %s on %d %s pseudo-masks (%s), %d -> %d iterations, batch %d, device %s, %d process(es)",
                config.segmentor_name, len(train_set), config.dataset_name, config.dir_pseudo_masks, start,
                config.iter_train, config.batch_size, device, world_size)
    settings = TrainSettings(config.iter_train, config.iter_val, n_classes, config.log_every, config.amp)
    try:
        with logging_redirect_tqdm(loggers=[logger]), tqdm(total=config.iter_train, initial=start, disable=not is_main,
                                                           desc="ReCo+", unit="it", dynamic_ncols=True) as bar, \
                timing.stage("training"):
            result = train(model=model, optimizer=optimizer, scheduler=scheduler, batches=iter(loader),
                           settings=settings, device=device, evaluate=evaluate_fn, hooks=hooks, start_iteration=start,
                           best_miou=best, scaler=scaler, progress=bar, is_main=is_main, gather_rng=gather_rng_states)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    logger.info("%s at iteration %d; best CRF mIoU %.4f; run dir %s", "stopped" if result.stopped else "finished",
                result.iteration, result.best_miou, run_dir)
    if hooks.signalled:  # Ctrl-C or SIGTERM: the state is saved; the shell is told it was interrupted
        raise Interrupted(f"ReCo+ training stopped at iteration {result.iteration}, last.pt written in {run_dir}; "
                          "run the same command to resume", hooks.signum)
    return {"run_dir": run_dir, "iteration": result.iteration, "best_miou": result.best_miou, "stopped": result.stopped}


def _install_stop_handlers(hooks: RunHooks) -> dict:
    """SIGTERM / first Ctrl-C: finish the current iteration, write last.pt, exit. A second Ctrl-C aborts."""
    def handler(signum: int, frame: Any) -> None:
        if hooks.signalled and signum == signal.SIGINT:
            raise KeyboardInterrupt
        hooks.signalled, hooks.signum = True, signum
        logger.warning("signal %d: stopping after this iteration (last.pt will be written)", signum)

    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: no graceful stop
        pass
    return previous


class _RankHooks(RunHooks):
    """Non-main DDP ranks write nothing; they only take part in the stop vote."""

    def __init__(self, stop_at: Optional[int]) -> None:
        super().__init__(Path("."), None, stop_at)

    def on_log(self, record: dict) -> None:
        pass
