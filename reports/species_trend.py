"""Does a species model learn identity, and when? PokeNet's species hits along a training run.

    python -m reports.species_trend RUN_DIR [--n 128] [--every 1] [--guidance 1] [--seed 1] [--start-step 0] [--out DIR]

For every training state of the run (state-<step>.pt, its EMA weights; keep them with
train.keep_last) and its final diffusion.pt: n DDIM-50 samples of species drawn at random from the
trained ones (style artwork), the same species and noise at every state, scored by PokeNet
(reports/species.py): the share whose asked-for species is PokeNet's top-1 and top-5. Writes
DIR/trend.json and DIR/trend.png (top-5 and top-1 against the step, with chance and real artworks),
and DIR/grids.png: the first 8 samples at each state, one row per state, the same seeds. A run that
continues another one's weights (train.init) counts its steps from --start-step, the steps those
weights had already trained, so that both runs share one axis.
"""
from __future__ import annotations

import argparse

import matplotlib
import torch
from PIL import Image
from tqdm import tqdm

from diffusion.pipeline import load_pipeline
from plumbing.cli import UserError, run_main, user_path
from plumbing.pictures import grid_array, label_rows
from plumbing.resume import run_points
from plumbing.runs import writable_dir, write_json
from reports.pokenet import SHIPPED_DIR, SHIPPED_NAME, load_pokenet, predict, validation_artworks
from reports.species import real_hits, species_hits

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.species_trend", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder of a species model (configs/ldm_species.yaml)")
    p.add_argument("--n", type=int, default=128, help="samples per state (default 128)")
    p.add_argument("--every", type=int, default=1, help="use every k-th state (default 1: all)")
    p.add_argument("--guidance", type=float, default=1.0, help="guidance scale (default 1)")
    p.add_argument("--seed", type=int, default=1, help="seed of the species and the noise (default 1)")
    p.add_argument("--start-step", type=int, default=0,
                   help="steps the run's starting weights (train.init) had trained; added to each state's step (default 0)")
    p.add_argument("--data", default="data/pokemon", help="the artworks, for PokeNet's real reference row")
    p.add_argument("--out", default=None, help="output folder (default: RUN/species_trend)")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    run = user_path(args.run)
    if args.n <= 0 or args.every <= 0 or args.start_step < 0:
        raise UserError("--n and --every must be positive, --start-step at least 0")
    points = run_points(run)[::-1][::args.every][::-1]  # the newest is always kept
    if not points:
        raise UserError(f"{run} holds no state-*.pt and no diffusion.pt; train with train.keep_last=N to keep the states")
    out = writable_dir(user_path(args.out) if args.out else run / "species_trend")
    pokenet, ckpt = load_pokenet(SHIPPED_DIR / SHIPPED_NAME)
    real = real_hits(pokenet, *validation_artworks(ckpt, args.data), ckpt["classes"])
    rows, grids = [], []
    for step, path in tqdm(points, desc="states", unit="state"):
        pipe = load_pipeline(path)
        if pipe.species is None:
            raise UserError(f"{path} is not a species model (cond.species=false)")
        labels, _ = pipe.labels(None, None, args.n, ["random"], seed=args.seed)
        images, _, _ = pipe.generate(args.n, args.seed, labels, args.guidance)
        asked = [[int(k) + 1] for k in labels.species]
        hits = species_hits(predict(pokenet, images, "cpu")[1], ckpt["classes"], asked)
        at = args.start_step + step
        rows.append({"step": at, "file": path.name, **hits})
        grids.append(images[:8].cpu())
        tqdm.write(f"step {at}: top-1 {hits['top1']:.3f}, top-5 {hits['top5']:.3f}")
    write_json({"run": str(run), "start_step": args.start_step, "n": args.n, "guidance": args.guidance,
                "seed": args.seed, "real_artworks": real, "points": rows}, out / "trend.json")
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [r["top5"] for r in rows], "o-", label="samples, top-5")
    ax.plot(steps, [r["top1"] for r in rows], "s-", label="samples, top-1")
    ax.axhline(rows[0]["chance_top5"], color="grey", ls=":", label="chance, top-5")
    ax.axhline(real["top5"] / 2, color="green", ls="--", label="half of real artworks' top-5")
    ax.set_xlabel("training step")
    ax.set_ylabel("share of samples")
    ax.set_title(f"asked-for species named by PokeNet ({args.n} samples, guidance {args.guidance:g})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "trend.png", dpi=120)
    plt.close(fig)
    sheet = label_rows(grid_array(torch.cat(grids), nrow=8), [f"step {s}" for s in steps], row_height=grids[0].shape[-2])
    Image.fromarray(sheet).save(out / "grids.png")
    print(f"real artworks PokeNet never saw: top-1 {real['top1']:.3f}, top-5 {real['top5']:.3f} -> {out}/trend.png")


if __name__ == "__main__":
    run_main(main)
