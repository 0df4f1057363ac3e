"""The proof that the forward process ends in N(0, I), in pictures and numbers (reports/noising.py).

    python -m reports.ends_in_noise --config configs/ldm.yaml --out DIR [--ae PATH] [section.key=value ...]

Writes into DIR: forward_pixels.gif / .png and forward_latent.gif / .png (images going to noise step
by step, the latents shown through the VAE decoder), hist_rgb.png and hist_latent.png (densities
of x_0 and x_T against N(0, 1)), and stats.json (moments and the Kolmogorov-Smirnov statistic).
"""
from __future__ import annotations

import argparse

from diffusion.config import DiffusionConfig
from plumbing.cli import run_main, user_path
from plumbing.config import load_config
from reports.noising import prove


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m reports.ends_in_noise", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ldm.yaml")
    parser.add_argument("--out", default="forward", help="output folder (default: forward/)")
    parser.add_argument("--ae", default=None, help="AE checkpoint for the latent part (default: ae.ckpt or the newest)")
    parser.add_argument("overrides", nargs="*", help="section.key=value")
    args = parser.parse_args(argv)
    args.config, args.out, args.ae = (str(user_path(a)) if a else a for a in (args.config, args.out, args.ae))
    cfg = load_config(DiffusionConfig, args.config, args.overrides + ([f"ae.ckpt={args.ae}"] if args.ae else []))
    prove(cfg, args.out)


if __name__ == "__main__":
    run_main(main)
