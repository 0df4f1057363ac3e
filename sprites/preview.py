"""A picture of the training data as the models see it: one labelled row per source.

    python -m sprites.preview --out docs/images/data_sources.png [--n 12] [--size 64] [--seed 0]

Rows: artworks, Dream World, front sprites, front sprites (shiny), back sprites, back sprites (shiny),
each with --n images drawn at random (seeded) from that source, after crop, pad, composite on white
and resize (sprites/frames.py), exactly as they enter a batch.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from plumbing.cli import UserError, run_main
from plumbing.config import apply_overrides
from plumbing.pictures import grid_array, label_rows
from sprites.config import SOURCES, DataConfig
from sprites.dataset import to_unit_range
from sprites.mixture import load_data

ROWS = [("artwork", False, "artwork"), ("dream_world", False, "Dream World"),
        ("sprite_front", False, "front sprite"), ("sprite_front", True, "front, shiny"),
        ("sprite_back", False, "back sprite"), ("sprite_back", True, "back, shiny")]


@dataclass
class PreviewConfig:
    """The config schema of this command: the data section alone."""
    data: DataConfig = field(default_factory=DataConfig)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m sprites.preview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--n", type=int, default=12, help="images per row (default 12)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="data.KEY=VALUE for the data section, e.g. data.corpus=DIR")
    args = p.parse_args(argv)
    if args.n <= 0:
        raise UserError(f"--n {args.n} must be positive")
    every = [f"data.mix.{name}=1" for name in SOURCES] + [f"data.size={args.size}"]
    data = load_data(apply_overrides(PreviewConfig, {}, every + args.overrides).data)
    gen = torch.Generator().manual_seed(args.seed)
    rows, labels = [], []
    for source, shiny, label in ROWS:
        members = torch.nonzero((data.source == SOURCES.index(source)) & (data.shiny == shiny)).flatten()
        if len(members) == 0:
            continue
        row = data.images[members[torch.randperm(len(members), generator=gen)[:args.n]]]
        blank = torch.full((args.n - len(row), *row.shape[1:]), 255, dtype=torch.uint8)  # a short row, padded
        rows.append(torch.cat([row, blank]))
        labels.append(f"{label} ({len(members):,})")
    grid = grid_array(to_unit_range(torch.cat(rows)), nrow=args.n)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label_rows(grid, labels, row_height=args.size)).save(args.out)
    print(f"{len(rows)} rows of {args.n} -> {args.out}")


if __name__ == "__main__":
    run_main(main)
