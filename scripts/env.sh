# Sourced by the scripts: absolute POKEMON_DATA, repository root as the working folder, the
# virtual environment set up (instant when it already is), and $py its Python.
[ -n "${POKEMON_DATA:-}" ] && export POKEMON_DATA="$(cd "$POKEMON_DATA" 2>/dev/null && pwd || echo "$POKEMON_DATA")"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh "${POKEDIFFUSION_REQUIREMENTS:-requirements.txt}"
py="${POKEDIFFUSION_VENV:-.venv}/bin/python"
