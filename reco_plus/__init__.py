"""ReCo+: DeepLabv3+ trained on ReCo pseudo-masks (SPEC 12). Pure training / evaluation logic.

Models, data iterators and the CRF come in as arguments; the entry script (main_reco_plus.py) builds
them from the config and does all file I/O through the hooks of `train`.

    schedule.PolyLR, schedule.build_optimizer        Adam with backbone / head groups, poly decay with floor
    sampling.ResumableBatchSampler                   data order as a function of (seed, epoch), resumable
    evaluation.evaluate                              plain and CRF scores on a validation loader
    trainer.train, TrainSettings, TrainHooks         the loop (AMP, DDP-aware, periodic validation)
    checkpoint.training_state / restore_training_state / capture_rng_state
"""
from .checkpoint import capture_rng_state, restore_rng_state, restore_training_state, training_state, unwrap
from .evaluation import EvalResult, EvalSample, evaluate, predict_logits
from .sampling import ResumableBatchSampler
from .schedule import PolyLR, build_optimizer
from .trainer import TrainHooks, TrainResult, TrainSettings, train

__all__ = [
    "EvalResult", "EvalSample", "PolyLR", "ResumableBatchSampler", "TrainHooks", "TrainResult", "TrainSettings",
    "build_optimizer", "capture_rng_state", "evaluate", "predict_logits", "restore_rng_state",
    "restore_training_state", "train", "training_state", "unwrap",
]
