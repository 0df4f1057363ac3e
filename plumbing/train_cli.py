"""The command line both trainers share (autoencoder/train.py, diffusion/train.py):

    --config FILE [--out DIR] [--images DIR] [section.key=value ...]    a new run
    --resume RUN_DIR [section.key=value ...]                             a stopped run, with its own config

Paths the user typed are meant from where the command was run (plumbing/cli.py, user_path).
"""
from __future__ import annotations

import argparse
from typing import Callable

from plumbing.cli import UserError, user_path
from plumbing.config import load_config
from plumbing.resume import Resumed, open_resume, resume_config


def parse_training_args(argv: list[str], schema: type, prog: str, doc: str, default_config: str,
                        resume_keys: set[str], state_kind: str, checkpoint_name: str, images_help: str,
                        images_overrides: Callable[[str], list[str]], check_images: Callable) -> tuple:
    """(config, --out folder, the stopped run to continue or None). `images_overrides(DIR)` gives the
    overrides of `--images DIR`, `check_images(cfg, DIR)` refuses a config that would not train on DIR alone."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=f"YAML config (default: {default_config})")
    parser.add_argument("--out", default=None, help="run folder (default: a new folder under checkpoints/)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the stopped run in RUN_DIR from its newest state checkpoint, with its config")
    parser.add_argument("--images", metavar="DIR", default=None, help=images_help)
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=5")
    args = parser.parse_args(argv)
    args.config, args.out, args.resume = (str(user_path(a)) if a else None
                                          for a in (args.config, args.out, args.resume))
    if args.resume is None:
        own = images_overrides(str(user_path(args.images))) if args.images else []
        cfg = load_config(schema, args.config or default_config, own + args.overrides)
        if args.images:
            check_images(cfg, args.images)
        return cfg, args.out, None
    if args.config or args.out or args.images:
        raise UserError("--resume continues a run in its own folder with its own config and data; drop --config, "
                        "--out and --images")
    resumed: Resumed = open_resume(args.resume, state_kind, prog, checkpoint_name)
    return resume_config(schema, resumed, args.overrides, resume_keys), None, resumed
