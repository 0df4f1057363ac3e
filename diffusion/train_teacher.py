"""Train the alignment teacher, or ship a run's teacher (the network and its data: diffusion/teacher.py).

    python -m diffusion.train_teacher [--config configs/teacher.yaml] [--out DIR] [section.key=value ...]   train
    python -m diffusion.train_teacher --ship RUN_DIR      copy a run's teacher to checkpoints/teacher/
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusion.teacher import SHIPPED_DIR, TeacherConfig, ship, train
from plumbing.cli import run_main
from plumbing.config import load_config


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m diffusion.train_teacher", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/teacher.yaml")
    p.add_argument("--out", default=None, help="run folder (default: checkpoints/teacher-<time>)")
    p.add_argument("--ship", default=None, metavar="RUN_DIR", help=f"copy a run's teacher to {SHIPPED_DIR}/")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.steps=500")
    args = p.parse_args(argv)
    if args.ship:
        print(json.dumps(ship(Path(args.ship)), indent=2))
        return
    train(load_config(TeacherConfig, args.config, args.overrides), args.out)


if __name__ == "__main__":
    run_main(main)
