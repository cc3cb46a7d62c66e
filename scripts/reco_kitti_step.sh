#!/usr/bin/env bash
# ReCo on kitti_step. Usage: bash scripts/reco_kitti_step.sh [val|train] [extra main_reco.py options]
#   val (default): evaluate; train: write the pseudo-masks for ReCo+.
# Works from the repository root or from scripts/. Set CONFIG to use another YAML file.
set -euo pipefail
cd "$(dirname "$0")/.."
split="${1:-val}"
shift || true
exec "${PYTHON:-python3}" main_reco.py --config "${CONFIG:-configs/reco_kitti_step.yaml}" --split "$split" "$@"
