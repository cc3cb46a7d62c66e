"""ReCo entry point: build the ImageNet index, compute reference embeddings, evaluate a benchmark or
write its pseudo-masks, or segment your own images with your own class names.

    python main_reco.py --demo                                                # every stage on a synthetic world
    python main_reco.py --config configs/reco_cityscapes.yaml                 # evaluate on val
    python main_reco.py --config configs/reco_cityscapes.yaml --split train   # pseudo-masks for ReCo+
    python main_reco.py --config configs/reco_cityscapes.yaml --stage index   # only the ImageNet index
    python main_reco.py --config configs/reco_custom.yaml --images DIR --categories "cat,grass" --out OUT

This script and its stages in entry/ are the only code that reads the config: they build datasets and
networks from it and hand them, as plain arguments, to the algorithm in reco/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Only what checks the command line and the config file is imported here (no torch, open_clip or timm):
# a mistake is answered before the heavy imports, which come with the stage that needs them.
from entry.cli import check_device_argument, run_reporting_errors  # noqa: E402
from utils.config import load_reco_config  # noqa: E402
from utils.logs import setup_logging  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "--p_config", dest="config", help="YAML config file (required unless --demo)")
    p.add_argument("--demo", action="store_true",
                   help="run every stage on a small synthetic world with colour-coded models (offline, seconds); "
                        "writes into --out (default ./reco_demo)")
    p.add_argument("--split", choices=["val", "train"], default="val",
                   help="val: evaluate; train: write pseudo-masks (dt/, dt_crf/) for ReCo+")
    p.add_argument("--stage", choices=["all", "index", "references"], default="all",
                   help="index: only build the ImageNet index (torchrun-aware); references: stop after "
                        "the reference embeddings; all: everything that is missing, then evaluate")
    p.add_argument("--images", help="segment this image file, or the images in this folder (recursively)")
    p.add_argument("--categories", help="own images: comma-separated class names or a text file, one per line")
    p.add_argument("--out", help="own images: output folder")
    p.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:1)")
    p.add_argument("--suffix", help="override the config's experiment-name suffix")
    p.add_argument("--no-crf", action="store_true", help="own images: skip the dense CRF")
    args = p.parse_args(argv)
    if args.config is None and not args.demo:
        p.error("the following arguments are required: --config (or --demo)")
    if args.demo and (args.config or args.images or args.stage != "all" or args.split != "val"):
        p.error("--demo runs on its own world: give only --out (and --device)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_reporting_errors(lambda: run(args), args.config or "--demo")


def run(args: argparse.Namespace) -> None:
    check_device_argument(args.device)
    if args.demo:
        from entry.reco_demo import run_demo

        run_demo(args.out, device=args.device)
        return
    config = load_reco_config(args.config, {"device": args.device, "suffix": args.suffix})
    # The library's loader (reco_api.config_checks.reco_config) makes the same checks in one call; the
    # registries come with the first heavy import, so they are checked after the config file.
    from reco_api.config_checks import check_reco_names
    from utils import timing
    from utils.device import seed_everything

    check_reco_names(config)
    seed_everything(config.seed)
    with timing.run() as timer:
        if args.stage == "index":
            from entry.reco_index import run_index_stage

            run_index_stage(config)
        elif args.images is not None:
            from entry.reco_own_images import run_own_images

            run_own_images(config, args.images, args.categories, args.out, crf=config.crf and not args.no_crf)
        else:
            from entry.reco_benchmark import run_benchmark

            run_benchmark(config, split=args.split, references_only=args.stage == "references")
    timing.report(timer)  # the table in the log, and timings.json in the run directory


if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
