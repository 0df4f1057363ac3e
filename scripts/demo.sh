#!/usr/bin/env bash
# The demo page in the browser (installs requirements-demo.txt into the venv the first time):
#   bash scripts/demo.sh [--ckpt PATH] [--host 127.0.0.1] [--port 7860] [--threads N]
# then open http://127.0.0.1:7860. Options: python -m demo --help.
set -euo pipefail
export POKEDIFFUSION_REQUIREMENTS=requirements-demo.txt
source "$(dirname "$0")/env.sh"
exec "$py" -m demo "$@"
