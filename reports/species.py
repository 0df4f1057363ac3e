"""Does a species model draw the species it is asked for? Measures of species-conditioned samples.

The samples come with what they were asked for: `python -m diffusion.sample` writes labels.csv
beside its PNGs (file, pokedex, species, ...; a fusion's pokedex is "4+7"). Against PokeNet
(reports/pokenet.py), trained from scratch to name the species from every view:

    hits            the share of single-species samples whose asked-for species is PokeNet's top-1
                    and top-5, beside the same for real artworks PokeNet never saw (its validation
                    artworks) and beside chance (k / the number of PokeNet's classes)
    fusion_hits     for fusions, the share whose top-5 holds both parents, and each one
    own_species     memorisation per sample against every training image of its own species (all
                    sources, mirrored too): d_own(s) = min over those images of the 16x16-pixel
                    distance (reports.metrics), flagged below the global memorisation threshold;
                    the median d_own beside that of the real training artworks of those species
                    to the other images of their species
    spread          the mean pairwise distance among the samples of one species against the mean
                    pairwise distance among that species' own training images (sprite frames in
                    many poses and the artworks): a ratio near 1 is a species drawn with its real
                    variety, near 0 one picture repeated
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from plumbing.cli import UserError
from reports.manifold import nearest_neighbours, pairwise_distances
from reports.pokenet import PokeNet, predict
from sprites.dataset import to_unit_range

LABELS_CSV = "labels.csv"
SPREAD_REFERENCE_MAX = 256   # training images per species in the spread reference (drawn with a seed)


def read_asked(folder: str | Path, n: int) -> list[list[int]] | None:
    """The Pokedex numbers each of the n samples of a folder was asked for ([] none, [p] one species,
    [p, q] a fusion), from its labels.csv; None without labels.csv or without any species."""
    path = Path(folder) / LABELS_CSV
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    asked = []
    for i in range(n):
        row = rows.get(f"{i:04d}.png")
        if row is None:
            raise UserError(f"{path} has no row for {i:04d}.png; write the samples and labels.csv again with "
                            "python -m diffusion.sample")
        asked.append([int(p) for p in (row.get("pokedex") or "").split("+") if p.strip()])
    return asked if any(asked) else None


def species_hits(probs: torch.Tensor, classes: list[int], asked: list[list[int]], k: int = 5) -> dict:
    """Top-1 and top-k shares of the single-species samples, and for fusions the share whose top-k holds
    both parents (and at least one). `probs` [N, classes] are PokeNet's; `classes` its Pokedex numbers."""
    number = torch.tensor(classes)
    top = number[probs.topk(k, dim=-1).indices]          # [N, k] Pokedex numbers, most probable first
    single = [i for i, a in enumerate(asked) if len(a) == 1]
    fused = [i for i, a in enumerate(asked) if len(a) == 2]
    out = {"n": len(single), "chance_top1": 1 / len(classes), f"chance_top{k}": k / len(classes)}
    if single:
        want = torch.tensor([asked[i][0] for i in single])
        out["top1"] = float((top[single, 0] == want).double().mean())
        out[f"top{k}"] = float((top[single] == want[:, None]).any(-1).double().mean())
    if fused:
        both = [all(p in top[i].tolist() for p in asked[i]) for i in fused]
        either = [any(p in top[i].tolist() for p in asked[i]) for i in fused]
        out["fusions"] = {"n": len(fused), f"both_top{k}": sum(both) / len(fused),
                          f"either_top{k}": sum(either) / len(fused)}
    return out


def real_hits(model: PokeNet, images_u8: torch.Tensor, labels: torch.Tensor, classes: list[int],
              k: int = 5) -> dict:
    """`species_hits` of real artworks PokeNet never saw (class labels >= 0 are scored)."""
    keep = labels >= 0
    _, probs = predict(model, images_u8[keep], "cpu")
    return species_hits(probs, classes, [[classes[int(c)]] for c in labels[keep]], k)


def own_species(samples: torch.Tensor, asked: list[list[int]], images_u8: torch.Tensor, dex: torch.Tensor,
                threshold: float, features, real_idx: torch.Tensor | None = None) -> dict:
    """Memorisation of each single-species sample against the training images of its own species
    (`images_u8` with Pokedex numbers `dex`, and their mirror images): its nearest distance d_own,
    flagged when below `threshold` (the global memorisation threshold, reports.metrics). With
    `real_idx` (rows of `images_u8`: real artworks of the asked-for species) the same distance for
    each of them to the other images of its species, leaving itself and its mirror image out."""
    def nearest(images: torch.Tensor, numbers: list[int], own_rows: list[int] | None = None) -> torch.Tensor:
        d = torch.full((len(images),), float("nan"), dtype=torch.float64)
        for p in sorted(set(numbers)):
            rows = [i for i, q in enumerate(numbers) if q == p]
            members = torch.nonzero(dex == p).flatten()
            for i in rows:
                keep = members if own_rows is None else members[members != own_rows[i]]
                if len(keep) == 0:
                    continue
                x = to_unit_range(images_u8[keep])
                d[i] = nearest_neighbours(features(images[i:i + 1]), features(torch.cat([x, x.flip(-1)])))[0][0]
        return d

    single = [i for i, a in enumerate(asked) if len(a) == 1]
    d = nearest(samples[single], [asked[i][0] for i in single])
    seen = d[~d.isnan()]
    out = {"n": len(seen), "rate": float((seen < threshold).double().mean()) if len(seen) else None,
           "threshold": threshold, "median_distance": float(seen.quantile(0.5)) if len(seen) else None}
    if real_idx is not None and len(real_idx):
        real = to_unit_range(images_u8[real_idx])
        dr = nearest(real, dex[real_idx].tolist(), real_idx.tolist())
        dr = dr[~dr.isnan()]
        out["real_n"], out["real_median_distance"] = len(dr), float(dr.quantile(0.5)) if len(dr) else None
    return out


def spread(samples: torch.Tensor, asked: list[list[int]], images_u8: torch.Tensor, dex: torch.Tensor, features,
           min_samples: int = 2, seed: int = 0) -> dict:
    """Per species with at least `min_samples` single-species samples: the mean pairwise distance of its
    samples over that of its own training images (up to SPREAD_REFERENCE_MAX of them, drawn with `seed`).
    Returns the median ratio, its quartiles and the species measured."""
    def mean_pairwise(x: torch.Tensor) -> float:
        d = pairwise_distances(features(x), features(x))
        n = len(x)
        return float(d.sum() / (n * (n - 1)))

    gen = torch.Generator().manual_seed(seed)
    ratios, per_species = [], {}
    numbers = [a[0] if len(a) == 1 else None for a in asked]
    for p in sorted({q for q in numbers if q is not None}):
        rows = [i for i, q in enumerate(numbers) if q == p]
        own = images_u8[dex == p]
        if len(rows) < min_samples or len(own) < 2:
            continue
        own = to_unit_range(own[torch.randperm(len(own), generator=gen)[:SPREAD_REFERENCE_MAX]])
        ratio = mean_pairwise(samples[rows]) / max(mean_pairwise(own), 1e-8)
        ratios.append(ratio)
        per_species[p] = ratio
    if not ratios:
        return {"species": 0}
    r = torch.tensor(ratios)
    return {"species": len(ratios), "median_ratio": float(r.quantile(0.5)), "q25": float(r.quantile(0.25)),
            "q75": float(r.quantile(0.75)), "per_species": per_species}
