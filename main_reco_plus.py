"""ReCo+ entry point: train DeepLabv3+ on ReCo pseudo-masks, or evaluate given weights (SPEC 12).

    python main_reco_plus.py --config configs/reco_plus_cityscapes.yaml              # train (resumes last.pt)
    python main_reco_plus.py --config configs/reco_plus_cityscapes.yaml --weights W  # evaluate W on val
    torchrun --nproc_per_node 4 main_reco_plus.py --config ...                       # multi-GPU training

Run directory {dir_ckpt}/{dataset_name}/val/reco_plus/{segmentor_name}/: {iteration:05d}/results.json and
results_crf.json per evaluation (+ panels), best_model.pt (plain state_dict, best CRF mIoU), last.pt
(resumable), metrics.jsonl, curves.png, train.log, config.yaml/config.json; --weights writes eval/.
This script parses the command line; its stages (config, file I/O) are in entry/reco_plus.py and the
training loop itself is reco_plus.trainer.train.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Only what checks the command line and the config file is imported here (no torch or timm): a mistake
# is answered before the heavy imports, which come with the stage that needs them.
from entry.cli import check_device_argument, run_reporting_errors  # noqa: E402
from entry.reco_plus_preflight import check_reco_plus_inputs  # noqa: E402
from utils.config import load_reco_plus_config  # noqa: E402
from utils.logs import setup_logging  # noqa: E402


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "--p_config", dest="config", required=True, help="YAML config file")
    p.add_argument("--weights", "--p_state_dict", dest="weights",
                   help="evaluate this state_dict (.pt, e.g. the authors' reco_plus_dlp_rn101_*.pt) instead of training")
    p.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--stop-at", type=int, help="train until this iteration, write last.pt and exit (resume later)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        return run_reporting_errors(lambda: run(args), args.config)
    finally:
        if "torch.distributed" in sys.modules:  # a process group can only exist once torch is imported
            from utils.distributed import cleanup

            cleanup()


def run(args: argparse.Namespace) -> None:
    check_device_argument(args.device)
    config = load_reco_plus_config(args.config, {"device": args.device})
    from entry.reco_plus import evaluate_weights, train_run  # the heavy imports (torch, timm)
    from entry.validation import check_reco_plus_names
    from utils import timing
    from utils.distributed import env_rank

    from utils.device import resolve_device

    config = check_reco_plus_names(config)
    resolve_device(config.device)  # an unusable device is named before the inputs are listed
    check_reco_plus_inputs(config, args.weights)  # every missing input in one message, before any work
    with timing.run() as timer:
        if args.weights is not None:
            evaluate_weights(config, args.weights)
        else:
            train_run(config, stop_at=args.stop_at)
    if env_rank() == 0:
        timing.report(timer)  # the table in the log, timings.json in the run (or eval) directory


if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
