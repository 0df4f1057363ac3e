"""Run a trainer that sends itself a signal right after one step (tests/helpers.py, signal_patch):

    python -m tests.signal_at_step KILL@8 autoencoder.train --out DIR ...
"""
from __future__ import annotations

import runpy
import sys

from tests.helpers import signal_patch

if __name__ == "__main__":
    spec, module, *args = sys.argv[1:]
    signal_patch(spec)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__")
