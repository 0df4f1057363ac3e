#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install the requirements.
#   bash scripts/setup.sh [requirements file]     (default: requirements-dev.txt)
# The venv lives in .venv unless POKEDIFFUSION_VENV names another folder. A stamp file holding the
# hash of the requirements makes a second call instant when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements-dev.txt}"
venv="${POKEDIFFUSION_VENV:-.venv}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "error: pokediffusion needs Python 3.10 or newer ($python is $("$python" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 2
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.pokediffusion-$(cat "$req" requirements.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing $req into $venv (first time: several minutes for PyTorch)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$req"
  touch "$stamp"
fi
