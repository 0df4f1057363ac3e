#!/usr/bin/env bash
# Train the stage-2 latent DDPM on the newest AE (or ae.ckpt=PATH):
#   bash scripts/train_ldm.sh [--out DIR] [section.key=value ...]  |  --resume RUN_DIR
set -euo pipefail
source "$(dirname "$0")/env.sh"
# --resume RUN_DIR continues a stopped run with the config stored in it (no --config then).
case " $* " in *" --resume "*|*" --resume="*) exec "$py" -m diffusion.train "$@" ;; esac
exec "$py" -m diffusion.train --config "$PWD/configs/ldm.yaml" "$@"
