"""The demo page: `python -m demo` (bash scripts/demo.sh) serves demo/page.py on a loaded model."""
