#!/usr/bin/env bash
# ReCo+ for one benchmark. Usage: bash scripts/reco_plus.sh DATASET [weights.pt] [extra main_reco_plus.py options]
#   DATASET:    cityscapes | coco_stuff | kitti_step (reads configs/reco_plus_DATASET.yaml unless CONFIG is set)
#   no weights: train DeepLabv3+ on the pseudo-masks (resumes from last.pt in the run directory);
#   weights:    evaluate that state_dict on val (e.g. the authors' reco_plus_dlp_rn101_DATASET.pt) into {run}/eval/.
# Works from the repository root, from scripts/ or from anywhere else. Set CONFIG to use another YAML file,
# PYTHON to use another interpreter. Multi-GPU training: torchrun --nproc_per_node N main_reco_plus.py --config ...
set -euo pipefail
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
dataset="$1"; shift
args=()
if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
    # The weights path is resolved before changing directory, so relative paths keep working.
    weights="$1"; shift
    case "$weights" in /*) ;; *) weights="$(pwd)/$weights" ;; esac
    args=(--weights "$weights")
fi
config="${CONFIG:-configs/reco_plus_${dataset}.yaml}"
case "$config" in /*|configs/*) ;; *) config="$(pwd)/$config" ;; esac
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" main_reco_plus.py --config "$config" "${args[@]}" "$@"
