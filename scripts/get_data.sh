#!/usr/bin/env bash
# Download the 919 sprites and the type table into data/ (or copy them from a local folder).
#   bash scripts/get_data.sh                 from the internet
#   bash scripts/get_data.sh --from DIR      from a local folder of PNGs (also: POKEMON_DATA=DIR)
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$py" -m sprites.download "$@"
