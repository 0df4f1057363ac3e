#!/usr/bin/env bash
# Set up the environment and run the test suite:   bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
venv="${POKEDIFFUSION_VENV:-.venv}"
exec "$venv/bin/python" -m pytest -q "$@" tests
