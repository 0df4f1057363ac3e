"""Train the stage-2 DDPM (x0-prediction, linear schedule) in latent or pixel space (the library is
diffusion/trainer.py).

    python -m diffusion.train --config configs/ldm.yaml [--out DIR] [section.key=value ...]
    python -m diffusion.train --images DIR ...                (your own pictures alone: no corpus, no labels)
    python -m diffusion.train --resume RUN_DIR                (continue a stopped run, plumbing/resume.py)
    python -m diffusion.train ... train.init=CKPT             (fine-tune a trained model: release or run)
    torchrun --nproc_per_node=N -m diffusion.train ...        (N processes, plumbing/distributed.py)

The training objective and the labels are described in diffusion/trainer.py.

Writes into the run folder (default checkpoints/<run_name>-<timestamp>/): config.yaml, log.txt,
loss.png, samples_epochNNNN.png, samples.png (EMA weights, DDIM), metrics.json, diffusion.pt, and
state-<step>.pt training-state checkpoints for --resume.
"""
from __future__ import annotations

from diffusion.config import DiffusionConfig
from diffusion.pipeline import STATE_KIND
from diffusion.trainer import CHECKPOINT_NAME, COMMAND, NO_LABELS, RESUME_KEYS, train
from plumbing.cli import run_main
from plumbing.distributed import shared_errors
from plumbing.resume import Resumed
from plumbing.train_cli import parse_training_args
from sprites.config import check_own_images, own_images


def parse_args(argv: list[str], default_config: str = "configs/ldm.yaml") -> tuple[DiffusionConfig, str | None,
                                                                                   Resumed | None]:
    """The config, the --out folder and, with --resume, the stopped run to continue."""
    return parse_training_args(argv, DiffusionConfig, COMMAND, __doc__, default_config, RESUME_KEYS, STATE_KIND,
                               CHECKPOINT_NAME, "train on the images in DIR alone (your own pictures): every corpus "
                               "source and label off", lambda folder: own_images(folder) + NO_LABELS,
                               lambda cfg, folder: check_own_images(cfg.data, folder))


def main(argv: list[str]) -> None:
    """The command line: parse, then train or resume (under torchrun, a user error on one process
    stops every process with it: plumbing/distributed.py, shared_errors)."""
    with shared_errors():
        train(*parse_args(argv))


if __name__ == "__main__":
    run_main(main)
