#!/usr/bin/env bash
# What the demo tests (tests/test_demo.py) need beside requirements-dev.txt, for CI and for anyone who runs them:
# requirements-demo.txt (Gradio, Selenium) in the venv, and Debian's chromium and chromium-driver for the
# browser test. Each apt step is bounded in time; where they cannot be installed (no root, no apt, no
# network) it says so and the browser test skips with that reason, the rest of the suite runs as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-demo.txt
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "warning: chromium and chromium-driver are missing and apt-get cannot install them here (root on Debian): the browser test will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing Debian's chromium and chromium-driver for the browser test"
timeout 300 apt-get update -qq >/dev/null || echo "warning: apt-get update did not finish in 300 s; installing from the package lists there are" >&2
if ! timeout 600 apt-get install -y -qq chromium chromium-driver >/dev/null; then
  echo "warning: apt-get could not install chromium and chromium-driver: the browser test will skip" >&2
fi
