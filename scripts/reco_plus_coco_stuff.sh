#!/usr/bin/env bash
# ReCo+ on coco_stuff. Usage: bash scripts/reco_plus_coco_stuff.sh [weights.pt] [extra main_reco_plus.py options]
#   no weights: train; weights: evaluate them on val. Reads configs/reco_plus_coco_stuff.yaml unless CONFIG is set;
#   details (PYTHON, torchrun): scripts/reco_plus.sh.
exec bash "$(dirname "$0")/reco_plus.sh" coco_stuff "$@"
