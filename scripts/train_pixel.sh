#!/usr/bin/env bash
# Train the pixel-space DDPM baseline (the same DDPM code as the latent model, on pixels):
#   bash scripts/train_pixel.sh [--out DIR] [section.key=value ...]
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$py" -m diffusion.train --config configs/pixel.yaml "$@"
