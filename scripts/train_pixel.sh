#!/usr/bin/env bash
# Train the pixel-space DDPM baseline (the same DDPM code as the latent model, on pixels):
#   bash scripts/train_pixel.sh [--out DIR] [section.key=value ...]  |  --resume RUN_DIR
set -euo pipefail
source "$(dirname "$0")/env.sh"
# --resume RUN_DIR continues a stopped run with the config stored in it (no --config then).
case " $* " in *" --resume "*|*" --resume="*) exec "$py" -m diffusion.train "$@" ;; esac
exec "$py" -m diffusion.train --config "$PWD/configs/pixel.yaml" "$@"
