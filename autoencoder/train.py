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

from autoencoder.config import AEConfig
from autoencoder.trainer import CHECKPOINT_NAME, COMMAND, RESUME_KEYS, STATE_KIND, train
from plumbing.cli import run_main
from plumbing.distributed import shared_errors
from plumbing.resume import Resumed
from plumbing.train_cli import parse_training_args
from sprites.config import check_own_images, own_images


def parse_args(argv: list[str]) -> tuple[AEConfig, str | None, Resumed | None]:
    """The config, the --out folder and, with --resume, the stopped run to continue."""
    return parse_training_args(argv, AEConfig, COMMAND, __doc__, "configs/ae.yaml", RESUME_KEYS, STATE_KIND,
                               CHECKPOINT_NAME, "train on the images in DIR alone (your own pictures): every corpus "
                               "source off", own_images, lambda cfg, folder: check_own_images(cfg.data, folder))


def main(argv: list[str]) -> None:
    """The command line: parse, then train or resume (under torchrun, a user error on one process
    stops every process with it: plumbing/distributed.py, shared_errors)."""
    with shared_errors():
        train(*parse_args(argv))


if __name__ == "__main__":
    run_main(main)
