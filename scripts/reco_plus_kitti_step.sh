#!/usr/bin/env bash
# ReCo+ on kitti_step. Usage: bash scripts/reco_plus_kitti_step.sh [weights.pt] [extra main_reco_plus.py options]
#   no weights: train; weights: evaluate them on val. Reads configs/reco_plus_kitti_step.yaml unless CONFIG is set;
#   details (PYTHON, torchrun): scripts/reco_plus.sh.
exec bash "$(dirname "$0")/reco_plus.sh" kitti_step "$@"
