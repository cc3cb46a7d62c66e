#!/usr/bin/env bash
# ReCo on the open-vocabulary benchmarks, then one results table.
# Usage: bash scripts/reco_ovss.sh [benchmark ...] [-- extra main_reco.py options, e.g. --device cuda:1]
#   benchmarks: the registered open-vocabulary ones (datasets/registry.py; default: all), today voc21
#   context60 coco_object voc20 context59 coco_stuff171 cityscapes19 ade20k150
# Each benchmark runs main_reco.py --config configs/ovss/reco_<benchmark>.yaml (CONFIG_DIR: another folder).
# Every config's inputs are checked first (entry/ovss_check.py): if any is missing, all of them are listed
# at once and nothing runs. A failed benchmark does not stop the others. Then ovss_results.md and ovss_results.json are written into
# the configs' dir_ckpt; the exit status is non-zero if any benchmark failed or has no results.
# Works from the repository root or from scripts/.
set -uo pipefail
cd "$(dirname "$0")/.."
all=($("${PYTHON:-python3}" -c 'from datasets.registry import benchmark_names; print(*benchmark_names("ovss"))')) \
    || { echo "error: cannot read the benchmark registry (datasets/registry.py)" >&2; exit 2; }
benchmarks=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do benchmarks+=("$1"); shift; done
[ $# -gt 0 ] && shift   # drop the "--"; what is left goes to main_reco.py
[ ${#benchmarks[@]} -eq 0 ] && benchmarks=("${all[@]}")
configs=()
for benchmark in "${benchmarks[@]}"; do
    config="${CONFIG_DIR:-configs/ovss}/reco_${benchmark}.yaml"
    if [ ! -f "$config" ]; then
        echo "error: no config $config for benchmark '$benchmark' (known: ${all[*]})" >&2
        exit 2
    fi
    configs+=("$config")
done
# every config's inputs first: one report for all of them, before hours of runs
"${PYTHON:-python3}" -m entry.ovss_check "${configs[@]}" "$@" || exit 2
status=0
for config in "${configs[@]}"; do
    echo "=== $config"
    "${PYTHON:-python3}" main_reco.py --config "$config" "$@" || status=1
done
"${PYTHON:-python3}" -m entry.ovss_table "${configs[@]}" || status=1
exit $status
