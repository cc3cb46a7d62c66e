#!/usr/bin/env bash
# ReCo+ on cityscapes. Usage: bash scripts/reco_plus_cityscapes.sh [weights.pt] [extra main_reco_plus.py options]
#   no weights: train; weights: evaluate them on val. Reads configs/reco_plus_cityscapes.yaml unless CONFIG is set;
#   details (PYTHON, torchrun): scripts/reco_plus.sh.
exec bash "$(dirname "$0")/reco_plus.sh" cityscapes "$@"
