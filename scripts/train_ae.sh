#!/usr/bin/env bash
# Train the stage-1 VAE:   bash scripts/train_ae.sh [--out DIR] [section.key=value ...]
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$py" -m autoencoder.train --config configs/ae.yaml "$@"
