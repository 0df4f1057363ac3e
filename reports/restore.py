"""How much of a real sprite can a trained model restore from step t? (SDEdit, Meng et al. 2022)

    python -m reports.restore --ckpt CKPT [--data DIR] [--t 100 200 400 600 999] [--n 8] [--steps 50] --out DIR

Sampling from pure noise mixes two failures: a wrong global layout and wrong detail. This diagnostic
separates them. For each start step t0 the held-out sprites' x_0 (the checkpoint's space: VAE
latents or pixels) are noised in closed form and run back with deterministic DDIM (eta = 0):

    x_t0 = sqrt(ab_t0) x_0 + sqrt(1 - ab_t0) eps,   eps ~ N(0, I) (the same eps for every t0)
    x_0' = DDIM(x_t0; t0 -> 0), with round(steps * (t0 + 1) / T) steps (the step size of DDIM-`steps`)

A perfect denoiser would return a sprite that keeps what survives the noise at t0 (outline and
colours at small t0, little at SNR(t0) < 0.1) and adds sharp, plausible detail; a model that has
learned the coarse layout but not the detail returns the right silhouette with smeared insides.
Rows of DIR/restore.png: the held-out sprites, their VAE reconstructions (latent space only: the best
any latent model can do), then one row per t0 (labelled with SNR(t0) = ab / (1 - ab)). DIR/restore.json
holds the PSNR of every row against the sprites (and against the reconstructions; the mean
per-image PSNR, as the AE's held-out PSNR): how fast the restoration falls off with t0.
"""
from __future__ import annotations

import argparse
import json

import torch
from PIL import Image

from autoencoder.trainer import psnr
from diffusion.denoiser import make_denoiser
from diffusion.pipeline import Pipeline, load_pipeline
from diffusion.samplers import ddim_sample
from plumbing.cli import UserError, run_main
from plumbing.pictures import grid_array, label_rows
from plumbing.runs import writable_dir
from reports.noising import shown_sprites
from sprites.dataset import load_artworks, artworks_root, to_unit_range


def mean_psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """The mean per-image PSNR in dB (autoencoder.trainer.psnr: the AE's held-out PSNR), rounded to 0.01."""
    return round(float(psnr(images, reference).mean()), 2)


def restore_rows(pipe: Pipeline, x0: torch.Tensor, t_starts: list[int], steps: int, seed: int) -> list[torch.Tensor]:
    """Decoded restorations (pixels in [-1, 1], on the CPU) of the clean x_0 [N, *space.shape], one tensor
    per start step in `t_starts`, by the model without labels (a conditional model's "no label")."""
    schedule, space, device = pipe.schedule, pipe.space, pipe.device
    denoise = make_denoiser(pipe.model, device, use_bf16=False)
    rows = []
    for t0 in t_starts:
        gen = torch.Generator().manual_seed(seed)  # the same eps for every t0: the rows differ only by t0
        eps = torch.randn(x0.shape, generator=gen)
        xt = schedule.q_sample(x0, torch.full((len(x0),), t0), eps)
        n_steps = max(1, round(steps * (t0 + 1) / schedule.T))
        with torch.inference_mode():
            x, _ = ddim_sample(denoise, schedule, tuple(x0.shape), gen, device, space.clip, steps=n_steps,
                               start=(t0, xt))
            rows.append(space.decode(x).cpu())
    return rows


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.restore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="diffusion checkpoint (default: as python -m diffusion.sample)")
    p.add_argument("--ae", default=None, help="AE checkpoint, if not at the path recorded in the diffusion checkpoint")
    p.add_argument("--data", default=None,
                   help="sprite folder (default: $POKEMON_DATA, else the checkpoint's data.root)")
    p.add_argument("--t", type=int, nargs="+", default=[100, 200, 400, 600, 999],
                   help="start steps t0, each in 0..T-1 (default 100 200 400 600 999)")
    p.add_argument("--n", type=int, default=8, help="held-out sprites (default 8)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of a full T-step run (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="restore", help="output folder (default: restore/)")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.n <= 0 or args.steps <= 0:
        raise UserError(f"--n {args.n} and --steps {args.steps} must be positive")
    pipe = load_pipeline(args.ckpt, args.device, args.ae)
    schedule, space, cfg = pipe.schedule, pipe.space, pipe.cfg
    bad = [t for t in args.t if not 0 <= t < schedule.T]
    if bad:
        raise UserError(f"--t {bad[0]}: every start step must lie in 0..{schedule.T - 1}")
    root = artworks_root(args.data, cfg.data.root)
    data = load_artworks(root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    held = data.holdout()
    if len(held) == 0:
        raise UserError(f"{root} has no held-out sprites (data.holdout={cfg.data.holdout}); pass --data with more sprites")
    sprites = to_unit_range(shown_sprites(held, min(args.n, len(held))))

    # In latent space x_0 itself is the VAE's reconstruction: the best any latent model can return.
    latent = space.name == "latent"
    with torch.inference_mode():
        x0 = space.encode(sprites).cpu()
        recon = space.decode(x0).cpu() if latent else sprites
    rows = restore_rows(pipe, x0, args.t, args.steps, args.seed)

    names = ["held-out sprite"] + (["VAE reconstruction"] if latent else [])
    stats = {"checkpoint": str(pipe.source), "space": space.name, "n": len(sprites), "seed": args.seed,
             "reconstruction_psnr": mean_psnr(recon, sprites) if latent else None, "rows": []}
    for t0, row in zip(args.t, rows):
        snr = float(schedule.snr(torch.tensor(t0)))
        names.append(f"from t={t0} (SNR {snr:.2g})")
        stats["rows"].append({"t0": t0, "snr": snr, "psnr_vs_sprite": mean_psnr(row, sprites),
                              "psnr_vs_reconstruction": mean_psnr(row, recon) if latent else None})
    out = writable_dir(args.out)
    # tiles at twice their size: the detail is the point
    grid = grid_array(torch.cat([sprites, *([recon] if latent else []), *rows]), nrow=len(sprites), upscale=2)
    Image.fromarray(label_rows(grid, names, row_height=2 * sprites.shape[-2])).save(out / "restore.png")
    (out / "restore.json").write_text(json.dumps(stats, indent=2) + "\n")
    head = f"reconstruction {stats['reconstruction_psnr']:.2f} dB; " if latent else ""
    print(head + "restored from " + ", ".join(f"t={r['t0']}: {r['psnr_vs_sprite']:.2f} dB" for r in stats["rows"])
          + f" -> {out}/restore.png")


if __name__ == "__main__":
    run_main(main)
