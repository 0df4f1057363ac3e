"""Train the stage-1 VAE (the library is autoencoder/trainer.py).

    python -m autoencoder.train --config configs/ae.yaml [--out DIR] [section.key=value ...]
    python -m autoencoder.train --images DIR ...                (your own pictures alone: no corpus)
    python -m autoencoder.train --resume RUN_DIR              (continue a stopped run, plumbing/resume.py)
    torchrun --nproc_per_node=N -m autoencoder.train ...      (N processes, plumbing/distributed.py)

Writes into the run folder (default checkpoints/ae-<timestamp>/): config.yaml, log.txt, loss.png,
reconstructions.png (held-out inputs on odd rows, their reconstructions below them), metrics.json,
ae.pt (weights, resolved config, data fingerprint, latent statistics), and state-<step>.pt
training-state checkpoints for --resume.
"""
from __future__ import annotations

import argparse

from autoencoder.config import AEConfig
from autoencoder.trainer import CHECKPOINT_NAME, COMMAND, RESUME_KEYS, STATE_KIND, train
from plumbing.cli import UserError, run_main, user_path
from plumbing.config import load_config
from plumbing.resume import Resumed, open_resume, resume_config
from sprites.config import check_own_images, own_images


def parse_args(argv: list[str]) -> tuple[AEConfig, str | None, Resumed | None]:
    """The config, the --out folder and, with --resume, the stopped run to continue."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (default: configs/ae.yaml)")
    parser.add_argument("--out", default=None, help="run folder (default: a new folder under checkpoints/)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the stopped run in RUN_DIR from its newest state checkpoint, with its config")
    parser.add_argument("--images", metavar="DIR", default=None,
                        help="train on the images in DIR alone (your own pictures): every corpus source off")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=5")
    args = parser.parse_args(argv)
    # paths the user typed are meant from where the command was run (scripts/env.sh moves to the repository)
    args.config, args.out, args.resume = (str(user_path(a)) if a else None
                                          for a in (args.config, args.out, args.resume))
    if args.resume is None:
        own = own_images(str(user_path(args.images))) if args.images else []
        cfg = load_config(AEConfig, args.config or "configs/ae.yaml", own + args.overrides)
        if args.images:
            check_own_images(cfg.data, args.images)
        return cfg, args.out, None
    if args.config or args.out or args.images:
        raise UserError("--resume continues a run in its own folder with its own config and data; drop --config, "
                        "--out and --images")
    resumed = open_resume(args.resume, STATE_KIND, COMMAND, CHECKPOINT_NAME)
    return resume_config(AEConfig, resumed, args.overrides, RESUME_KEYS), None, resumed



def main(argv: list[str]) -> None:
    """The command line: parse, then train or resume."""
    train(*parse_args(argv))


if __name__ == "__main__":
    run_main(main)
