#!/usr/bin/env bash
# The notebook (notebooks/pokediffusion.ipynb):
#   bash scripts/notebook.sh              JupyterLab on it (a venv with requirements-notebook.txt)
#   bash scripts/notebook.sh --execute    run it top to bottom headless (nbclient); a cell's error fails the
#                                         command. POKEDIFFUSION_NOTEBOOK_MINUTES=0.3 shrinks the training
#                                         budgets (CI); the executed copy is notebook_out/pokediffusion.ipynb.
set -euo pipefail
if [ "${1:-}" = "--execute" ]; then
  export POKEDIFFUSION_REQUIREMENTS=requirements-dev.txt   # nbclient and a kernel, as the tests have them
  source "$(dirname "$0")/env.sh"
  exec "$py" -m plumbing.notebook_run notebooks/pokediffusion.ipynb notebook_out/pokediffusion.ipynb
fi
export POKEDIFFUSION_REQUIREMENTS=requirements-notebook.txt
source "$(dirname "$0")/env.sh"
# Jupyter refuses to start as root (containers often run as root) unless told so.
as_root=()
[ "$(id -u)" = 0 ] && as_root=(--allow-root)
exec "$(dirname "$py")/jupyter" lab "${as_root[@]}" notebooks/pokediffusion.ipynb "$@"
