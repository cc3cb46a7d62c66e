"""`python -m entry.ovss_check CONFIG ... [--device D]`: check every open-vocabulary config before any runs.

scripts/reco_ovss.sh calls it first, so that a missing path is reported once per config, all configs
together, in seconds, instead of by each benchmark's run in turn. Exit status 0 when every config is
ready, 2 (and one block per failing config) otherwise.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from entry.cli import EXIT_USER_ERROR, USER_ERRORS, check_device_argument, describe
from entry.reco_ovss import check_ovss_inputs
from reco_api.config_checks import check_reco_names
from utils.config import load_reco_config


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="configs/ovss/reco_<benchmark>.yaml files")
    parser.add_argument("--device", help="the device the runs will use (as main_reco.py --device)")
    args, _ = parser.parse_known_args(argv)  # the other main_reco.py options do not change what is needed
    failed = []
    for path in args.configs:
        try:
            check_device_argument(args.device)
            check_ovss_inputs(check_reco_names(load_reco_config(path, {"device": args.device})))
        except USER_ERRORS as error:
            failed.append(f"error: {describe(error, path)}")
    if failed:
        print("\n".join(failed), file=sys.stderr)
        print(f"{len(failed)} of {len(args.configs)} configs are not ready; nothing was run", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
