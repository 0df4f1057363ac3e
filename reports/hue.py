"""Does type conditioning work? Hue statistics of generated sprites against real ones, per type.

    python -m reports.hue --ckpt CKPT [--types Fire Water Grass] [--guidance 0 1 3 5] [--n 32] --out DIR

No pretrained network is needed: the colour of a sprite says a lot about its type (Fire is warm,
Water blue, Grass green). For each image, the foreground pixels (not near-white background, not
grey) are converted to hue angles, h in [0, 360):

    with M = max(R, G, B), m = min(R, G, B), C = M - m (chroma), pixels in [0, 1]:
        h = 60 * ((G - B) / C mod 6)   if M = R
        h = 60 * ((B - R) / C + 2)     if M = G
        h = 60 * ((R - G) / C + 4)     if M = B
    a pixel counts when its saturation C / M >= 0.25 and it is not background (m < 0.92).

A set of images gives a normalised histogram of the hues of all its counted pixels (12 bins of 30
degrees) and three shares: warm (h < 60 or h >= 330: red, orange, yellow), green (75 <= h < 165)
and blue (180 <= h < 260). The distance between two sets is the total variation distance of their
hue histograms, TV(p, q) = 1/2 sum_k |p_k - q_k| (0: same hues, 1: disjoint).

For each requested type and guidance scale s, `--n` samples are drawn with classifier-free
guidance (s = 0 is the unconditional model, 1 the conditional one) from the same seeds, and
compared with the real training sprites of that type and with all other labelled sprites.
Conditioning works when, as s grows, the samples' TV to their own type falls below their TV to
the other types, and the shares move the right way (Fire warmer, Water bluer, Grass greener).

Limits: hue ignores shape; types that share colours (Normal, Flying, Steel) cannot be told apart
this way, and a model that only learned colour would pass. The real-type rows are the reference.
"""
from __future__ import annotations

import argparse
import json

import torch

from diffusion.labels import training_labels
from diffusion.pipeline import load_pipeline
from plumbing.cli import UserError, run_main
from plumbing.pictures import save_grid
from plumbing.runs import newest_run_file, writable_dir
from sprites.dataset import load_sprites, to_unit_range
from sprites.labels import TYPES, parse_type

BINS = 12
SATURATION_MIN = 0.25
BACKGROUND_MIN = 0.92  # a pixel whose darkest channel is above this is white background


def hue_angles(images: torch.Tensor) -> torch.Tensor:
    """Hue (degrees) of every counted foreground pixel of images [N, 3, H, W] in [-1, 1] (see above)."""
    x = ((images.float().clamp(-1, 1) + 1) / 2).permute(1, 0, 2, 3).reshape(3, -1)
    r, g, b = x
    hi, _ = x.max(dim=0)
    lo, _ = x.min(dim=0)
    chroma = hi - lo
    keep = (lo < BACKGROUND_MIN) & (chroma >= SATURATION_MIN * hi.clamp_min(1e-6)) & (chroma > 1e-6)
    r, g, b, hi, c = r[keep], g[keep], b[keep], hi[keep], chroma[keep]
    h = torch.where(hi == r, torch.remainder((g - b) / c, 6.0),
                    torch.where(hi == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
    return 60.0 * h


def hue_summary(images: torch.Tensor) -> dict:
    """Normalised hue histogram and the warm / green / blue shares of a set of images."""
    h = hue_angles(images)
    n = max(1, len(h))
    hist = torch.histc(h, bins=BINS, min=0.0, max=360.0) / n
    return {
        "pixels": len(h),
        "hist": [round(float(v), 4) for v in hist],
        "warm": float(((h < 60) | (h >= 330)).sum()) / n,
        "green": float(((h >= 75) & (h < 165)).sum()) / n,
        "blue": float(((h >= 180) & (h < 260)).sum()) / n,
    }


def total_variation(p: list[float], q: list[float]) -> float:
    """TV(p, q) = 1/2 sum_k |p_k - q_k| of two normalised histograms."""
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q))


def markdown_table(rows: list[dict]) -> str:
    """The rows of hue.json as a Markdown table (hue.md; reports.compare includes it)."""
    lines = ["| type | set | warm | green | blue | TV to this type | TV to other types |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['type']} | {r['set']} | {r['warm']:.2f} | {r['green']:.2f} | {r['blue']:.2f} | "
                     f"{r['tv_to_type']:.3f} | {r['tv_to_other']:.3f} |")
    return "\n".join(lines)


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

    data = load_sprites(cfg.data.root, cfg.data.size, cfg.data.cache_dir, cfg.data.holdout, cfg.data.split_seed)
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
