#!/usr/bin/env bash
# The whole pipeline on this machine (a GPU where there is one) into one folder of at most 8 files:
#   bash scripts/gpu_run.sh [--ae-minutes 3] [--ldm-minutes 5] [--out gpu_run] [--n 256]   |   --smoke
# (python -m reports.gpu_run: device and versions, the *_full configs under time budgets, 256
# DDIM-50 samples and their measures, grids, GIF, loss curves, fp16 weights.)
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$py" -m reports.gpu_run "$@"
