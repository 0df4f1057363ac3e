# Sourced by the scripts: absolute POKEMON_DATA, the folder the user ran the script from (relative
# paths given as arguments are meant from there: plumbing/cli.py, user_path), the repository root as
# the working folder, the virtual environment set up (instant when it already is), and $py its Python.
[ -n "${POKEMON_DATA:-}" ] && export POKEMON_DATA="$(cd "$POKEMON_DATA" 2>/dev/null && pwd || echo "$POKEMON_DATA")"
export POKEDIFFUSION_CALLER_DIR="${POKEDIFFUSION_CALLER_DIR:-$PWD}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh "${POKEDIFFUSION_REQUIREMENTS:-requirements.txt}"
py="${POKEDIFFUSION_VENV:-.venv}/bin/python"
