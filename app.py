"""The demo page as Hugging Face Spaces runs it (`python app.py`, SDK gradio): the shipped model in
checkpoints/release, served where $GRADIO_SERVER_NAME and $GRADIO_SERVER_PORT say (Spaces sets
them; elsewhere 127.0.0.1:7860). Locally, `bash scripts/demo.sh` is the same page with options."""
from __future__ import annotations

from pathlib import Path

import torch

from demo.page import build_page, launch
from diffusion.pipeline import load_pipeline

THREADS = min(4, torch.get_num_threads())  # PyTorch threads a request samples with
demo = build_page(load_pipeline(Path(__file__).resolve().parent / "checkpoints" / "release", "cpu"), THREADS)

if __name__ == "__main__":
    launch(demo)
