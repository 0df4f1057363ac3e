#!/usr/bin/env bash
# Train the stage-1 VAE:   bash scripts/train_ae.sh [--out DIR] [section.key=value ...]
set -euo pipefail
[ -n "${POKEMON_DATA:-}" ] && export POKEMON_DATA="$(cd "$POKEMON_DATA" 2>/dev/null && pwd || echo "$POKEMON_DATA")"
cd "$(dirname "$0")/.."
venv="${POKEDIFFUSION_VENV:-.venv}"
py="$venv/bin/python"; [ -x "$py" ] || py=python3
exec "$py" -m autoencoder.train --config configs/ae.yaml "$@"
