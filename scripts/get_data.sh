#!/usr/bin/env bash
# Download the 919 sprites and the type table into data/ (or copy them from a local folder).
#   bash scripts/get_data.sh                 from the internet
#   bash scripts/get_data.sh --from DIR      from a local folder of PNGs (also: POKEMON_DATA=DIR)
set -euo pipefail
[ -n "${POKEMON_DATA:-}" ] && export POKEMON_DATA="$(cd "$POKEMON_DATA" 2>/dev/null && pwd || echo "$POKEMON_DATA")"
cd "$(dirname "$0")/.."
venv="${POKEDIFFUSION_VENV:-.venv}"
py="$venv/bin/python"; [ -x "$py" ] || py=python3
exec "$py" -m sprites.download "$@"
