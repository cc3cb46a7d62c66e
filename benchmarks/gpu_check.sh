#!/usr/bin/env bash
# The first-GPU acceptance check (README "First GPU run"): every CUDA test, the CRF, index-build and ReCo+
# training benchmarks and an own-images run on the GPU, in under 8.5 minutes; one table; exit 1 if a CUDA
# path fails.  Usage: bash benchmarks/gpu_check.sh [--out DIR] [--dry-run] [--strict-targets] [--parts ...]
set -euo pipefail
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
exec "$PYTHON" "$(dirname "${BASH_SOURCE[0]}")/gpu_check.py" "$@"   # --out is relative to the current directory
