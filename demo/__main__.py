"""The demo page on a trained model, in the browser: `python -m demo` (bash scripts/demo.sh).

    python -m demo [--ckpt PATH] [--host 127.0.0.1] [--port 7860] [--threads N] [--device auto]

PATH is a release folder, a run folder or a diffusion.pt, as for `python -m diffusion.sample`
(default: the newest training run, else the shipped release). It serves on 127.0.0.1 only unless
--host says otherwise (0.0.0.0: every interface), with PyTorch limited to --threads threads
(default: the cores this process may use, at most 4) and one request at a time. Needs
requirements-demo.txt (Gradio).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from diffusion.pipeline import default_checkpoint, load_pipeline
from plumbing.cli import UserError, run_main, user_path


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="release folder, run folder or diffusion.pt (default: the newest "
                                                "checkpoints/*/diffusion.pt of a training run, else checkpoints/release)")
    p.add_argument("--ae", default=None, help="AE checkpoint, if not at the path recorded in the diffusion checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--threads", type=int, default=min(4, len(os.sched_getaffinity(0))),
                   help="PyTorch threads (default: the usable cores, at most 4)")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: use 1 or more")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: use a port between 1 and 65535")
    try:
        from demo.page import build_page, launch
    except ModuleNotFoundError as err:
        raise UserError(f"the demo needs {err.name}; install it: bash scripts/demo.sh does, or "
                        ".venv/bin/pip install -r requirements-demo.txt") from None
    torch.set_num_threads(args.threads)
    ckpt = user_path(args.ckpt) if args.ckpt else default_checkpoint()
    pipe = load_pipeline(Path(ckpt), args.device, str(user_path(args.ae)) if args.ae else None)
    print(f"serving {ckpt} on http://{args.host}:{args.port} ({args.threads} threads); Ctrl+C stops it", flush=True)
    launch(build_page(pipe, args.threads), args.host, args.port)


if __name__ == "__main__":
    run_main(main)
