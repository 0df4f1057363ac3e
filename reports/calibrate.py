"""Calibration of the creature measures: sets of known quality, measured the way samples are.

    python -m reports.calibrate [--ldm CKPT] [--ae CKPT] [--n 256] [--sets 5] [--seed 0] --out DIR
                                [--data data/pokemon] [--pokenet WEIGHTS --trust-pokenet]

A measure is useful only if it ranks broken structure below real creatures. Rows, each against the
training artworks of diffusion training (the 873 not held out):

    held-out artworks      PokeNet's validation artworks (never seen by PokeNet): the best a model can do
    training artworks, A   half of the training artworks against the whole: the floor of the
                           distances (PokeNet trained on most of them: it knows them)
    blurred                the held-out artworks blurred (Gaussian, sigma 2 px)
    tiles shuffled         the held-out artworks with their pixels shuffled within 8x8 tiles: the right
                           colours in the right places, no structure inside a tile
    Gaussian latents       N(mean, covariance) of the training artworks' latents (posterior means) under
                           the --ae VAE, decoded: the right spectrum, no structure
    LDM samples            --n DDIM-50 samples of the --ldm model (seed --seed)
    noise                  uniform noise

and, for the LDM, the same measures over --sets disjoint sets of --n samples (mean and spread) and
at n = 64, 128, 256 (how many samples a measure needs). Writes DIR/calibration.json and
DIR/calibration.md (the table docs/evaluation.md shows).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from autoencoder.latents import encode_posterior, load_autoencoder
from diffusion.pipeline import load_pipeline
from plumbing.cli import UserError, run_main
from plumbing.runs import writable_dir
from reports.creature import block_shuffle, creature_scores, spread
from reports.measures import gaussian_blur
from reports.pokenet import SHIPPED_DIR, SHIPPED_NAME, load_pokenet, predict, validation_artworks
from sprites.dataset import load_artworks, to_unit_range

MEASURES = ("recognised", "mean_top_probability", "exp_kl", "frechet_pokenet", "precision", "recall", "c2st")


def gaussian_latents(ae_path: str, train_art: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n images decoded from z ~ N(mean, covariance) of the training artworks' posterior means."""
    vae, _ = load_autoencoder(ae_path)
    mean, _ = encode_posterior(vae, train_art)
    flat = mean.flatten(1).double()
    mu, cov = flat.mean(0), torch.cov(flat.T)
    gen = torch.Generator().manual_seed(seed)
    w, v = torch.linalg.eigh(cov)
    z = mu + (torch.randn(n, len(mu), generator=gen, dtype=torch.float64) * w.clamp_min(0).sqrt()) @ v.T
    with torch.no_grad():
        return torch.cat([vae.decode(part.float().view(-1, *mean.shape[1:])).float()
                          for part in z.split(64)]).clamp(-1, 1)


def table(rows: dict[str, dict]) -> str:
    """The Markdown table of calibration.md."""
    head = ["set", "n", "recognised", "mean top p", "exp-KL", "Frechet (PokeNet)", "precision", "recall", "C2ST"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [name, str(r["n"])] + [f"{r[k]:.3f}" if k != "frechet_pokenet" else f"{r[k]:.1f}" for k in MEASURES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m reports.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ldm", default="checkpoints/release", help="latent diffusion model (release or run)")
    p.add_argument("--ae", default="checkpoints/release/ae.safetensors", help="VAE for the Gaussian-latents row")
    p.add_argument("--data", default="data/pokemon", help="the artworks")
    p.add_argument("--pokenet", default=str(SHIPPED_DIR / SHIPPED_NAME))
    p.add_argument("--trust-pokenet", action="store_true")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--sets", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.n < 16 or args.sets < 2:
        raise UserError("--n must be at least 16 and --sets at least 2")
    out = writable_dir(args.out)
    model, ckpt = load_pokenet(args.pokenet, args.trust_pokenet)
    art = load_artworks(args.data, 64, "data/cache")
    train_art = to_unit_range(art.train())
    val_u8, _ = validation_artworks(ckpt, args.data)
    held = to_unit_range(val_u8)
    ref_features, _ = predict(model, train_art, "cpu")
    gen = torch.Generator().manual_seed(args.seed)
    half = torch.randperm(len(train_art), generator=gen)[:len(train_art) // 2]

    pipe = load_pipeline(args.ldm)
    labels, _ = pipe.labels(None, None, args.n * args.sets)  # a style-conditional model: artworks
    start = time.time()
    samples, _, _ = pipe.generate(args.n * args.sets, args.seed, labels, steps=50)
    print(f"{len(samples)} LDM samples in {time.time() - start:.0f}s")

    sets = {
        "held-out artworks": held,
        "training artworks, half": train_art[half],
        "blurred (sigma 2 px)": gaussian_blur(held, 2.0),
        "tiles shuffled (8x8)": block_shuffle(held, 8, args.seed),
        "Gaussian latents, decoded": gaussian_latents(args.ae, train_art, args.n, args.seed),
        "LDM samples": samples[:args.n],
        "noise": torch.rand(args.n, 3, 64, 64, generator=gen) * 2 - 1,
    }
    rows = {}
    for name, images in sets.items():
        start = time.time()
        rows[name] = creature_scores(model, images, train_art, ref_features, c2st_real=train_art, seed=args.seed)
        print(f"{name}: {rows[name]} ({time.time() - start:.0f}s)")
    disjoint = [creature_scores(model, samples[i * args.n:(i + 1) * args.n], train_art, ref_features,
                                c2st_real=train_art, seed=args.seed) for i in range(args.sets)]
    ldm_spread = {k: spread([d[k] for d in disjoint]) for k in MEASURES}
    by_n = {n: creature_scores(model, samples[:n], train_art, ref_features, c2st_real=train_art, seed=args.seed)
            for n in (64, 128, 256) if n <= len(samples)}
    result = {"ldm": args.ldm, "ae": args.ae, "pokenet": args.pokenet, "n": args.n, "seed": args.seed, "rows": rows,
              "ldm_disjoint_sets": {"sets": args.sets, "n": args.n, **ldm_spread},
              "ldm_by_n": {str(n): r for n, r in by_n.items()}}
    (out / "calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    spread_row = " | ".join(f"{ldm_spread[k]['mean']:.3f} ± {ldm_spread[k]['std']:.3f}" for k in MEASURES)
    by_n_rows = "\n".join(f"| LDM samples | {n} | " + " | ".join(
        f"{r[k]:.3f}" if k != "frechet_pokenet" else f"{r[k]:.1f}" for k in MEASURES) + " |" for n, r in by_n.items())
    md = (table(rows) + f"\n\nLDM, {args.sets} disjoint sets of {args.n}: | {spread_row} |\n\n"
          + "Sample-size dependence:\n\n" + "\n".join(table({}).splitlines()[:2]) + "\n" + by_n_rows + "\n")
    (out / "calibration.md").write_text(md)
    print(md)
    print(f"-> {out / 'calibration.json'}")


if __name__ == "__main__":
    run_main(main)
