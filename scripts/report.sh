#!/usr/bin/env bash
# The latent-against-pixel report (report.md with its figures):
#   bash scripts/report.sh --ldm RUN --pixel RUN --out reports/NAME [--notes FILE] [--hue DIR] [--n 64] ...
set -euo pipefail
source "$(dirname "$0")/env.sh"
exec "$py" -m reports.compare "$@"
