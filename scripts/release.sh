#!/usr/bin/env bash
# Half-precision copies of a latent run's AE and LDM in checkpoints/release/ (the shipped weights):
#   bash scripts/release.sh --ldm LDM_RUN [--ae AE_RUN] [--out checkpoints/release]
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$py" -m diffusion.release "$@"
