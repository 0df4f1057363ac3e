#!/usr/bin/env bash
# Benchmark this machine:   bash scripts/bench.sh [--quick] [--out benchmarks/results/bench.json] [--batch B] [--only SECTIONS]
# Installs requirements-bench.txt (the project's requirements plus diffusers, the reference we measure
# against) and runs `python -m benchmarks`: matmul ceilings, AE and U-Net training steps against
# diffusers, sampling speed, the project's speed targets. Under 10 minutes on 2 cores; run it on a quiet
# machine (other jobs on the cores change every number). --quick checks the code paths in seconds.
set -euo pipefail
export POKEDIFFUSION_REQUIREMENTS=requirements-bench.txt
source "$(dirname "$0")/env.sh"
exec "$py" -m benchmarks "$@"
