"""Neighbourhoods in a feature space: distances, k-NN balls, improved precision and recall.

Shared by the pixel measures (reports/measures.py, 16x16 pixels as features) and the creature
measures (reports/creature.py, PokeNet's features). Every function takes features [N, D].
"""
from __future__ import annotations

import torch


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[len(a), len(b)] Euclidean distances, computed directly (an exact 0 for identical rows)."""
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")


def knn_radii(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest *other* point of the same set.

    Each row of the distance matrix includes the point itself at distance 0, so the k-th nearest
    other point is the (k+1)-th smallest entry.
    """
    return pairwise_distances(feats, feats).kthvalue(k + 1, dim=1).values


def share_inside_balls(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of `queries` within radius r_j of at least one centre c_j: the union of the balls."""
    inside = pairwise_distances(queries, centres) <= radii[None, :]
    return inside.any(dim=1).double().mean().item()


def manifold_precision_recall(fr: torch.Tensor, ff: torch.Tensor, k: int) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of features `ff` against real `fr`:
    the share of fakes inside the union of the real k-NN balls, and of reals inside the fakes' balls
    (reports/measures.py, precision_recall, has the formula and the limits)."""
    if min(len(fr), len(ff)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per set "
                         f"(got {len(fr)} real, {len(ff)} generated)")
    return {"precision": share_inside_balls(ff, fr, knn_radii(fr, k)),
            "recall": share_inside_balls(fr, ff, knn_radii(ff, k)),
            "k": k}


def nearest_neighbours(queries: torch.Tensor, refs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance to, index of) the nearest row of `refs` for every row of `queries`."""
    d = pairwise_distances(queries, refs)
    return d.min(dim=1)
