#!/usr/bin/env bash
# The notebook (notebooks/pokediffusion.ipynb):
#   bash scripts/notebook.sh              JupyterLab on it (a venv with requirements-notebook.txt)
#   bash scripts/notebook.sh --execute    run it top to bottom headless (nbclient); a cell's error or a failed
#                                         check of its outputs fails the command. POKEDIFFUSION_NOTEBOOK_MINUTES=0.3
#                                         shrinks the training budgets (CI); the executed copy is
#                                         notebook_out/pokediffusion.ipynb.
#   bash scripts/notebook.sh --publish    the same at the full budgets, and the copy to read,
#                                         docs/notebook/pokediffusion.ipynb (GIFs thinned to a few MB in all)
set -euo pipefail
if [ "${1:-}" = "--execute" ] || [ "${1:-}" = "--publish" ]; then
  publish=()
  [ "$1" = "--publish" ] && publish=(--publish docs/notebook/pokediffusion.ipynb)
  export POKEDIFFUSION_REQUIREMENTS=requirements-dev.txt   # nbclient and a kernel, as the tests have them
  source "$(dirname "$0")/env.sh"
  exec "$py" -m plumbing.notebook_run notebooks/pokediffusion.ipynb notebook_out/pokediffusion.ipynb "${publish[@]}"
fi
export POKEDIFFUSION_REQUIREMENTS=requirements-notebook.txt
source "$(dirname "$0")/env.sh"
# Jupyter refuses to start as root (containers often run as root) unless told so.
as_root=()
[ "$(id -u)" = 0 ] && as_root=(--allow-root)
exec "$(dirname "$py")/jupyter" lab "${as_root[@]}" notebooks/pokediffusion.ipynb "$@"
