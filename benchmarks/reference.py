"""diffusers, the reference we measure against: a benchmark-only dependency (requirements-bench.txt).

The project never imports it; the benchmark modules import it inside the functions that build the
reference models, and ask `diffusers_version()` first so that a machine without it still gets every
other number, with NOT_INSTALLED in the diffusers rows.
"""
from __future__ import annotations

NOT_INSTALLED = "not installed: pip install -r requirements-bench.txt"


def diffusers_version() -> str | None:
    """The installed diffusers version, or None when it cannot be imported."""
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers.__version__
