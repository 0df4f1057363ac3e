"""Does type conditioning work? Hue statistics (reports/colour.py) of generated sprites against real
ones, per type.

    python -m reports.hue --ckpt CKPT [--types Fire Water Grass] [--guidance 0 1 3 5] [--n 32] --out DIR

For each requested type and guidance scale s, `--n` samples are drawn with classifier-free
guidance (s = 0 is the unconditional model, 1 the conditional one) from the same seeds, and
compared with the real training sprites of that type and with all other labelled sprites.
Conditioning works when, as s grows, the samples' TV to their own type falls below their TV to
the other types, and the shares move the right way (Fire warmer, Water bluer, Grass greener).
"""
from __future__ import annotations

import argparse
import json

from diffusion.labels import training_labels
from diffusion.pipeline import load_pipeline
from plumbing.cli import UserError, run_main
from plumbing.pictures import save_grid
from plumbing.runs import newest_run_file, writable_dir
from reports.colour import hue_summary, markdown_table, total_variation
from sprites.dataset import load_artworks, to_unit_range
from sprites.labels import TYPES, parse_type


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.hue", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="type-conditional diffusion checkpoint (default: newest)")
    p.add_argument("--types", nargs="+", default=["Fire", "Water", "Grass"])
    p.add_argument("--guidance", nargs="+", type=float, default=[0.0, 1.0, 3.0, 5.0])
    p.add_argument("--n", type=int, default=32, help="samples per type and guidance scale")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/hue", help="output folder")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.n <= 0:
        raise UserError(f"--n {args.n}: the number of samples must be positive")
    ckpt = args.ckpt or newest_run_file("diffusion.pt")
    if ckpt is None:
        raise UserError("no diffusion checkpoint found under checkpoints/; pass --ckpt")
    pipe = load_pipeline(ckpt, args.device)  # once, for every type and scale
    cfg = pipe.cfg
    if not pipe.conditional["type"]:
        raise UserError(f"{ckpt} has no type labels; train with configs/ldm_types.yaml (cond.labels=type1)")
    types = [parse_type(t) for t in args.types]
    out = writable_dir(args.out)

    data = load_artworks(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
    labels = training_labels(cfg, data).type[data.train_idx]
    real = to_unit_range(data.train())
    result = {"checkpoint": str(ckpt), "n": args.n, "steps": args.steps, "seed": args.seed, "rows": []}
    rows = []
    for ti in types:
        name = TYPES[ti]
        same = hue_summary(real[labels == ti])
        other = hue_summary(real[(labels != ti) & (labels < len(TYPES))])
        rows.append((name, "real, this type", same, 0.0, total_variation(same["hist"], other["hist"])))
        rows.append((name, "real, other types", other, total_variation(other["hist"], same["hist"]), 0.0))
        for s in args.guidance:
            # n DDIM samples of this type at guidance s, decoded to pixels; the same seed for every row
            request, _ = pipe.labels([TYPES[ti]], None, args.n)  # a style model: style artwork
            imgs, _, _ = pipe.generate(args.n, args.seed, request, s, steps=args.steps)
            save_grid(imgs[:16], out / f"{name.lower()}_guidance{s:g}.png", nrow=8)
            gen = hue_summary(imgs)
            rows.append((name, f"samples, guidance {s:g}", gen, total_variation(gen["hist"], same["hist"]),
                         total_variation(gen["hist"], other["hist"])))
    for name, what, summ, tv_same, tv_other in rows:
        result["rows"].append({"type": name, "set": what, **summ, "tv_to_type": tv_same, "tv_to_other": tv_other})
    table = markdown_table(result["rows"])
    (out / "hue.md").write_text(table + "\n")
    (out / "hue.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    print(f"wrote {out / 'hue.md'}, {out / 'hue.json'} and sample grids")


if __name__ == "__main__":
    run_main(main)
