"""Measures that see creatures: PokeNet's features and probabilities, and a classifier two-sample test.

The pixel measures of reports/measures.py judge colours, patches and layout; a set of coloured
fragments with the right palette and extent scores well there. These judge what PokeNet
(reports/pokenet.py), trained to name the species from many views, makes of an image:

    recognisability   is each sample a creature PokeNet can name? The share of samples whose most
                      probable species gets at least `RECOGNISED` of the probability (the headline:
                      it is per sample), the mean of that top probability, and the exp-KL score of
                      Salimans et al. (2016), exp E_x KL(p(y|x) || p(y)), which is high when every
                      sample is confidently one species and the species vary.
    frechet_pokenet   the Frechet distance between Gaussians fitted to PokeNet's penultimate features
                      of the samples and of the training artworks. The same formula as FID, in
                      another network's features: not comparable with FID numbers, and not called FID.
    precision/recall  Kynkaanniemi et al. (2019), k = 3, in PokeNet's features (reports.measures'
                      precision_recall with these features).
    c2st              a classifier two-sample test (Lopez-Paz & Oquab 2017): a small CNN trained to
                      tell samples from real artworks on 64x64 RGB, k-fold accuracy (0.5: it cannot
                      tell them apart, 1: it always can).

All of them depend on the number of samples; compare rows at equal n (docs/evaluation.md has the
calibration: reference rows, the samples each measure needs, the spread over disjoint sets).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from reports.manifold import manifold_precision_recall
from reports.pokenet import PokeNet, predict

RECOGNISED = 0.5   # a sample is recognised when PokeNet gives one species at least this probability


# --- Frechet distance -----------------------------------------------------------------------------

def sqrtm_psd(s: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_gaussians(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """The Frechet (2-Wasserstein squared) distance between N(mu1, S1) and N(mu2, S2):

        d^2 = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1^1/2 S2 S1^1/2)^1/2)

    (Dowson & Landau 1982). S1^1/2 S2 S1^1/2 is symmetric, so its square root's trace is the sum of
    the square roots of its eigenvalues; everything in float64."""
    mu1, s1, mu2, s2 = (t.double() for t in (mu1, s1, mu2, s2))
    r1 = sqrtm_psd(s1)
    middle = r1 @ s2 @ r1
    root_trace = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * root_trace)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted (mean, unbiased covariance) to feature sets [N, D], [M, D]."""
    a, b = a.double(), b.double()
    return frechet_gaussians(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


# --- recognisability ------------------------------------------------------------------------------

def recognisability(probs: torch.Tensor, threshold: float = RECOGNISED) -> dict:
    """Per-sample confidence of a classifier's probabilities [N, classes]:

        top(x)     = max_y p(y | x)
        recognised = share of x with top(x) >= threshold
        exp_kl     = exp( mean_x KL(p(y | x) || p(y)) ),   p(y) = mean_x p(y | x)
    """
    p = probs.double().clamp_min(1e-12)
    top = p.max(dim=-1).values
    marginal = p.mean(dim=0, keepdim=True)
    kl = (p * (p.log() - marginal.log())).sum(dim=-1)
    return {"recognised": float((top >= threshold).double().mean()), "mean_top_probability": float(top.mean()),
            "exp_kl": float(kl.mean().exp()), "threshold": threshold}


# --- the classifier two-sample test ----------------------------------------------------------------

class TwoSampleNet(nn.Module):
    """A small CNN for the two-sample test: three strided convolutions, global pooling, one logit."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def c2st(real: torch.Tensor, fake: torch.Tensor, folds: int = 5, epochs: int = 15, batch_size: int = 32,
         seed: int = 0) -> dict:
    """Classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017) on images in [-1, 1].

    n = min(len(real), len(fake)) images of each set (a seeded subset of the larger one), labelled
    0 (real) and 1 (fake), are split into `folds` folds; for each fold a fresh TwoSampleNet is
    trained on the other folds (Adam, `epochs` passes, random horizontal flips) and scored on it.
    Returns the mean held-out accuracy, each fold's, and n. Under the null hypothesis (one
    distribution) the accuracy is about 0.5 with a standard deviation of 0.5 / sqrt(2n).
    """
    gen = torch.Generator().manual_seed(seed)
    n = min(len(real), len(fake))
    if n < folds:
        raise ValueError(f"the two-sample test needs at least {folds} images per set, got {len(real)} and {len(fake)}")
    real = real[torch.randperm(len(real), generator=gen)[:n]].float()
    fake = fake[torch.randperm(len(fake), generator=gen)[:n]].float()
    x = torch.cat([real, fake])
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    order = torch.randperm(2 * n, generator=gen)
    x, y = x[order], y[order]
    fold_of = torch.arange(2 * n) % folds
    scores = []
    for k in tqdm(range(folds), desc=f"two-sample test ({2 * n} images)", unit="fold", leave=False):
        train, test = fold_of != k, fold_of == k
        torch.manual_seed(seed * 1000 + k)
        net = TwoSampleNet()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        xt, yt = x[train], y[train]
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                idx = perm[i:i + batch_size]
                xb = xt[idx]
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                loss = F.binary_cross_entropy_with_logits(net(xb), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            scores.append(float(((net(x[test]) > 0).float() == y[test]).double().mean()))
    return {"accuracy": sum(scores) / folds, "folds": scores, "n": n}


# --- everything for one set ------------------------------------------------------------------------

def creature_scores(model: PokeNet, samples: torch.Tensor, reference: torch.Tensor, reference_features=None,
                    c2st_real: torch.Tensor | None = None, seed: int = 0) -> dict:
    """Every measure of this module for `samples` (float [-1, 1] or uint8): recognisability, the Frechet
    distance and precision/recall against `reference` (the training artworks; their features can be
    passed in), and, with `c2st_real`, the two-sample test against those real images."""
    feats, probs = predict(model, samples, "cpu")
    ref = reference_features if reference_features is not None else predict(model, reference, "cpu")[0]
    pr = manifold_precision_recall(ref.double(), feats.double(), k=3)
    out = {"n": len(samples), **recognisability(probs), "frechet_pokenet": frechet_distance(feats, ref),
           "precision": pr["precision"], "recall": pr["recall"]}
    if c2st_real is not None:  # the two-sample test needs at least 2 images per fold and set
        real = c2st_real.float() / 127.5 - 1 if c2st_real.dtype == torch.uint8 else c2st_real
        fake = samples.float() / 127.5 - 1 if samples.dtype == torch.uint8 else samples
        out["c2st"] = c2st(real, fake, seed=seed)["accuracy"] if min(len(real), len(fake)) >= 10 else None
    return out


def block_shuffle(images: torch.Tensor, block: int = 8, seed: int = 0) -> torch.Tensor:
    """Every image's pixels permuted at random within each block x block tile: the colours of each tile
    stay, the structure inside it is destroyed."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = images.shape
    tiles = images.reshape(n, c, h // block, block, w // block, block).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n, h // block, w // block, c, block * block)
    perm = torch.argsort(torch.rand(n, h // block, w // block, 1, block * block, generator=gen), dim=-1)
    shuffled = tiles.gather(-1, perm.expand_as(tiles))
    shuffled = shuffled.reshape(n, h // block, w // block, c, block, block).permute(0, 3, 1, 4, 2, 5)
    return shuffled.reshape(n, c, h, w)


def spread(values: list[float]) -> dict:
    """Mean and standard deviation (n - 1) of a list of numbers."""
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / max(1, len(values) - 1))
    return {"mean": m, "std": sd, "values": values}
