#!/usr/bin/env bash
# Train the stage-2 latent DDPM on the newest AE (or ae.ckpt=PATH):
#   bash scripts/train_ldm.sh [--out DIR] [section.key=value ...]
set -euo pipefail
[ -n "${POKEMON_DATA:-}" ] && export POKEMON_DATA="$(cd "$POKEMON_DATA" 2>/dev/null && pwd || echo "$POKEMON_DATA")"
cd "$(dirname "$0")/.."
venv="${POKEDIFFUSION_VENV:-.venv}"
py="$venv/bin/python"; [ -x "$py" ] || py=python3
exec "$py" -m diffusion.train --config configs/ldm.yaml "$@"
