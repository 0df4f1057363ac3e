"""Sample from a trained diffusion model (latent or pixel space): `python -m diffusion.sample`.

    python -m diffusion.sample [--ckpt PATH] --n 64 --sampler ddpm|ddim --steps 50 --seed 0 --out DIR [--gif]
    python -m diffusion.sample --type Fire [--type Water ...] --guidance 3.0 ...   (a type-conditional model)
    python -m diffusion.sample --type all --n 8 ...    (one row of n samples per type)
    python -m diffusion.sample --style dream_world ... / --style all    (a style-conditional model)
    python -m diffusion.sample --species bulbasaur --species 4 --n 8 ...   (a species model: names or numbers)
    python -m diffusion.sample --species random --n 64 ...   (each sample a species drawn from the trained ones)
    python -m diffusion.sample --fuse charmander squirtle [--fuse-weight 0.5] ...   (a fusion of two species)

Writes DIR/grid.png (one labelled row per species, type and style asked for), one PNG per sample
(DIR/0000.png, ...), DIR/labels.csv (each file's Pokedex number, species, type, style, guidance
and seed) and, with --gif, DIR/reverse.gif: the reverse process x_T -> x_0 for a grid of samples,
each shown x_t decoded to pixels. The same seed gives the same images. A large --n is drawn in
batches of bounded memory (diffusion/pipeline.py: SAMPLE_BATCH), each written as it is done, and
grid.png shows the first GRID_MAX; an --n that would not fit on the disk of DIR, or above
MAX_SAMPLES, is refused before any work, as are a guidance scale above MAX_GUIDANCE and a seed
outside 0 .. 2^64 - 1.

Without --ckpt: the newest checkpoints/*/diffusion.pt of a training run (your own training wins),
and when there is none, as in a fresh clone, the shipped release in checkpoints/release/. It
prints which one it uses. PATH is a release folder, a run folder or a diffusion.pt; a latent
model finds its AE at the recorded path, else as a file of the same name beside the checkpoint,
and its sha256 must match. A style-conditional model draws style artwork unless --style says
otherwise. The Python API behind it is diffusion/pipeline.py.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from diffusion.guidance import DEFAULT_GUIDANCE
from diffusion.labels import write_labels_csv
from diffusion.pipeline import SAMPLE_BATCH, check_request, default_checkpoint, load_pipeline, save_samples
from diffusion.samplers import ddim_timesteps
from plumbing.cli import UserError, run_main, user_path
from plumbing.pictures import grid_array, label_rows, save_gif, save_grid
from plumbing.runs import writable_dir

GRID_MAX = 4096   # samples shown in grid.png (64 x 64 of them); every sample has its own PNG


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m diffusion.sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None,
                   help="release folder, run folder or diffusion.pt (default: the newest checkpoints/*/diffusion.pt "
                        "of a training run, else the shipped checkpoints/release)")
    p.add_argument("--ae", default=None, help="AE checkpoint, if not at the path recorded in the diffusion checkpoint")
    p.add_argument("--n", type=int, default=64, help="number of samples (per type and style asked for; default 64)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddim")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50; DDPM always uses all T)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples", help="output folder (default: samples/)")
    p.add_argument("--gif", action="store_true", help="also write reverse.gif of the reverse process")
    p.add_argument("--gif-n", type=int, default=16, help="samples shown in the GIF (default 16)")
    p.add_argument("--type", action="append", default=None, dest="types",
                   help="Pokemon type to sample (type-conditional models); repeat it for several types, "
                        "each getting --n samples, or 'all' for one row of --n per type")
    p.add_argument("--style", action="append", default=None, dest="styles",
                   help="style to sample (style-conditional models: artwork, dream_world, sprite_front, sprite_back; "
                        "default artwork); repeat it, or 'all' for one row of --n per style")
    p.add_argument("--species", action="append", default=None,
                   help="species to sample (species models): a name in any case or a Pokedex number; repeat it for "
                        "several, each getting --n samples, or 'random' for --n samples of species drawn at random")
    p.add_argument("--fuse", nargs=2, action="append", default=None, metavar=("A", "B"),
                   help="a fusion of two species (species models): their embeddings mixed by --fuse-weight; repeatable")
    p.add_argument("--fuse-weight", type=float, default=0.5,
                   help="how far a fusion goes from A to B (0: A, 1: B; default 0.5)")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help="classifier-free guidance scale (0: unconditional, 1: conditional, >1: stronger; "
                        f"default {DEFAULT_GUIDANCE:g}, docs/results.md measures 1 against 3)")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    args.ckpt, args.ae, args.out = (str(user_path(a)) if a else a for a in (args.ckpt, args.ae, args.out))
    if args.gif and not 1 <= args.gif_n:
        raise UserError(f"--gif-n {args.gif_n}: the number of samples in the GIF must be positive")
    # steps: against T once loaded; n: the whole request's samples on the disk once the rows are known
    check_request(args.n, args.guidance, args.sampler, args.steps, args.eta, cli=True, seed=args.seed, out=args.out)
    if not math.isfinite(args.fuse_weight) or not 0 <= args.fuse_weight <= 1:
        raise UserError(f"--fuse-weight {args.fuse_weight} must lie in [0, 1] (0: the first species, 1: the second)")
    ckpt = Path(args.ckpt) if args.ckpt else default_checkpoint()
    pipe = load_pipeline(ckpt, args.device, args.ae)
    print(f"sampling {ckpt}" + ("" if args.ckpt else " (no --ckpt: the newest run, else the release)"))
    check_request(args.n, args.guidance, args.sampler, args.steps, args.eta, pipe.schedule.T, cli=True)

    fusions = [(a, b, args.fuse_weight) for a, b in args.fuse] if args.fuse else None
    labels, rows = pipe.labels(args.types, args.styles, args.n, args.species, fusions, args.seed)
    n = len(labels) if labels is not None else args.n
    check_request(n, args.guidance, args.sampler, args.steps, args.eta, cli=True, out=args.out)  # every row's
    out = writable_dir(args.out)
    n_steps = pipe.schedule.T if args.sampler == "ddpm" else len(ddim_timesteps(pipe.schedule.T, args.steps))
    batches = -(-n // SAMPLE_BATCH)
    kept, files, start = [], [], time.time()  # the grid's samples (GRID_MAX at most) and every file written
    with tqdm(total=n_steps * batches, desc=f"{args.sampler} sampling" + (f", {batches} batches of {SAMPLE_BATCH}"
              if batches > 1 else ""), unit="step") as bar:
        for first, images, rec in pipe.batches(n, args.seed, labels, args.guidance, args.sampler, args.steps,
                                               args.eta, frames=40 if args.gif else 0, progress=bar):
            if first == 0:  # the GIF shows the first batch's reverse process
                recorded = rec
            files += save_samples(images, out, first)
            kept.append(images[:max(0, GRID_MAX - first)])
    seconds = time.time() - start
    grid = torch.cat(kept)
    if len(rows) > 1 and n <= GRID_MAX:  # one labelled row per type / style
        Image.fromarray(label_rows(grid_array(grid, nrow=args.n), rows, row_height=grid.shape[-2])).save(out / "grid.png")
    else:
        save_grid(grid, out / "grid.png")
    write_labels_csv(out / "labels.csv", files, labels, pipe.species, args.guidance, args.seed)
    what = "" if labels is None else f", {'; '.join(rows)}, guidance {args.guidance}"
    shown = "" if n <= GRID_MAX else f" (the first {GRID_MAX})"
    print(f"{n} samples ({args.sampler}, {n_steps} steps, seed {args.seed}{what}) in {seconds:.1f}s -> "
          f"{out}/grid.png{shown}")
    if args.gif:
        k = min(args.gif_n, len(recorded[0][1]))
        frames = [grid_array(pipe.space.decode(xt[:k]).cpu(), nrow=min(4, k)) for _, xt in recorded]
        save_gif(frames, out / "reverse.gif")
        print(f"reverse process ({len(frames)} frames) -> {out}/reverse.gif")


if __name__ == "__main__":
    run_main(main)
