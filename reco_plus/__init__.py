"""ReCo+: DeepLabv3+ trained on ReCo pseudo-masks (SPEC 12). Pure training / evaluation logic.

Models, data iterators and the CRF come in as arguments; the entry script (main_reco_plus.py) builds
them from the config and does all file I/O through the hooks of `train`.

    schedule.PolyLR, schedule.build_optimizer        Adam with backbone / head groups, poly decay with floor
    sampling.ResumableBatchSampler                   data order as a function of (seed, epoch), resumable
    evaluation.evaluate                              plain and CRF scores on a validation loader
    trainer.train, TrainSettings, TrainHooks         the loop (AMP, DDP-aware, periodic validation), made of
    trainer.train_step, TrainingMetrics, validate    one step, the training records, one validation
    checkpoint.training_state / restore_training_state / capture_rng_state
"""
from .checkpoint import capture_rng_state, restore_rng_state, restore_training_state, training_state, unwrap
from .evaluation import EvalResult, EvalSample, evaluate, predict_logits
from .sampling import ResumableBatchSampler
from .schedule import PolyLR, build_optimizer
from .trainer import (NO_EVALUATION, TrainHooks, TrainingMetrics, TrainResult, TrainSettings, train, train_step,
                      validate)

__all__ = [
    "NO_EVALUATION", "EvalResult", "EvalSample", "PolyLR", "ResumableBatchSampler", "TrainHooks", "TrainResult", "TrainSettings",
    "build_optimizer", "capture_rng_state", "evaluate", "predict_logits", "restore_rng_state",
    "restore_training_state", "train", "train_step", "training_state", "TrainingMetrics", "unwrap", "validate",
]
