"""Train the stage-2 DDPM (x0-prediction, linear schedule) in latent or pixel space (the library is
diffusion/trainer.py).

    python -m diffusion.train --config configs/ldm.yaml [--out DIR] [section.key=value ...]
    python -m diffusion.train --images DIR ...                (your own pictures alone: no corpus, no labels)
    python -m diffusion.train --resume RUN_DIR                (continue a stopped run, plumbing/resume.py)
    python -m diffusion.train ... train.init=CKPT             (fine-tune a trained model: release or run)
    torchrun --nproc_per_node=N -m diffusion.train ...        (N processes, plumbing/distributed.py)

Training objective, per batch (Ho et al. 2020 with the x0 parameterisation):
    log SNR ~ N(log_snr_mean, log_snr_std^2), t = the step with that log SNR,   eps ~ N(0, I),
    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps
    L = mean_b || f_theta(x_t, t[, labels]) - x_0 ||^2 / D        (D = dimensions of x_0)

With labels (cond.labels, cond.style) each kind is replaced by "no label" with probability
cond.drop_prob, on its own, for classifier-free guidance (diffusion/guidance.py). With
train.augment > 0 the x_0 are augmented without leaking (diffusion/augment.py).

Writes into the run folder (default checkpoints/<run_name>-<timestamp>/): config.yaml, log.txt,
loss.png, samples_epochNNNN.png, samples.png (EMA weights, DDIM), metrics.json, diffusion.pt, and
state-<step>.pt training-state checkpoints for --resume.
"""
from __future__ import annotations

import argparse

from diffusion.config import DiffusionConfig
from diffusion.pipeline import STATE_KIND
from diffusion.trainer import CHECKPOINT_NAME, COMMAND, NO_LABELS, RESUME_KEYS, train
from plumbing.cli import UserError, run_main, user_path
from plumbing.config import load_config
from plumbing.resume import Resumed, open_resume, resume_config
from sprites.config import check_own_images, own_images


def parse_args(argv: list[str], default_config: str = "configs/ldm.yaml") -> tuple[DiffusionConfig, str | None,
                                                                                   Resumed | None]:
    """The config, the --out folder and, with --resume, the stopped run to continue."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=f"YAML config (default: {default_config})")
    parser.add_argument("--out", default=None, help="run folder (default: a new folder under checkpoints/)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the stopped run in RUN_DIR from its newest state checkpoint, with its config")
    parser.add_argument("--images", metavar="DIR", default=None,
                        help="train on the images in DIR alone (your own pictures): every corpus source and label off")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=5")
    args = parser.parse_args(argv)
    # paths the user typed are meant from where the command was run (scripts/env.sh moves to the repository)
    args.config, args.out, args.resume = (str(user_path(a)) if a else None
                                          for a in (args.config, args.out, args.resume))
    if args.resume is None:
        own = own_images(str(user_path(args.images))) + NO_LABELS if args.images else []
        cfg = load_config(DiffusionConfig, args.config or default_config, own + args.overrides)
        if args.images:
            check_own_images(cfg.data, args.images)
        return cfg, args.out, None
    if args.config or args.out or args.images:
        raise UserError("--resume continues a run in its own folder with its own config and data; drop --config, "
                        "--out and --images")
    resumed = open_resume(args.resume, STATE_KIND, COMMAND, CHECKPOINT_NAME)
    return resume_config(DiffusionConfig, resumed, args.overrides, RESUME_KEYS), None, resumed



def main(argv: list[str]) -> None:
    """The command line: parse, then train or resume."""
    train(*parse_args(argv))


if __name__ == "__main__":
    run_main(main)
