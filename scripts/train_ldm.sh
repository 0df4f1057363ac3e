#!/usr/bin/env bash
# Train the stage-2 latent DDPM on the newest AE (or ae.ckpt=PATH):
#   bash scripts/train_ldm.sh [--out DIR] [section.key=value ...]
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$py" -m diffusion.train --config configs/ldm.yaml "$@"
