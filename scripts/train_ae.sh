#!/usr/bin/env bash
# Train the stage-1 VAE:   bash scripts/train_ae.sh [--out DIR] [section.key=value ...]  |  --resume RUN_DIR
set -euo pipefail
source "$(dirname "$0")/env.sh"
# --resume RUN_DIR continues a stopped run with the config stored in it (no --config then).
case " $* " in *" --resume "*|*" --resume="*) exec "$py" -m autoencoder.train "$@" ;; esac
exec "$py" -m autoencoder.train --config "$PWD/configs/ae.yaml" "$@"
