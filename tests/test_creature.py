"""PokeNet and the creature measures (reports/pokenet.py, reports/creature.py)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from plumbing.cli import UserError
from reports.creature import block_shuffle, c2st, frechet_distance, frechet_gaussians, recognisability
from reports.pokenet import (SHIPPED_DIR, SHIPPED_NAME, ClassifierData, PokeNetConfig, accuracy, grey,
                             load_pokenet, train, validation_artworks, validation_names, validate)
from plumbing.config import load_config
from sprites.views import augment
import json


# --- the Frechet distance --------------------------------------------------------------------------

def test_frechet_distance_of_gaussians_has_its_closed_form():
    gen = torch.Generator().manual_seed(0)
    d = 6
    f64 = dict(generator=gen, dtype=torch.float64)
    mu1, mu2 = torch.randn(d, **f64), torch.randn(d, **f64)
    a, b = torch.rand(d, **f64) + 0.1, torch.rand(d, **f64) + 0.1
    # diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt a_i - sqrt b_i)^2
    expected = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert frechet_gaussians(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-9)
    # a full covariance against itself, rotated: only the means count
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    s = q @ torch.diag(a) @ q.T
    assert frechet_gaussians(mu1, s, mu2, s) == pytest.approx(float((mu1 - mu2).pow(2).sum()), rel=1e-6)
    # estimated from samples it approaches the closed form
    x = mu1 + a.sqrt() * torch.randn(200_000, d, **f64)
    y = mu2 + b.sqrt() * torch.randn(200_000, d, **f64)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(x[:100_000], x[100_000:]) < 0.01


# --- recognisability ---------------------------------------------------------------------------------

def test_recognisability_counts_confident_samples_and_the_exp_kl_score():
    certain = torch.eye(4)  # four samples, each one species for certain, all species different
    r = recognisability(certain)
    assert r["recognised"] == 1.0 and r["mean_top_probability"] == pytest.approx(1.0)
    assert r["exp_kl"] == pytest.approx(4.0, rel=1e-6)  # exp(log 4): as many species as samples
    unsure = torch.full((4, 4), 0.25)
    r = recognisability(unsure)
    assert r["recognised"] == 0.0 and r["exp_kl"] == pytest.approx(1.0)
    mixed = torch.tensor([[0.6, 0.4], [0.3, 0.7], [0.5, 0.5], [0.45, 0.55]])
    assert recognisability(mixed)["recognised"] == 1.0  # 0.6, 0.7, 0.5, 0.55 all >= 0.5
    assert recognisability(mixed, threshold=0.6)["recognised"] == 0.5


# --- the two-sample test -------------------------------------------------------------------------------

def _discs(n: int, colour_jitter: float, radius: tuple[int, int], seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (16, 16), "white")
        r = int(rng.integers(*radius))
        c = tuple(int(v) for v in np.clip(rng.normal(120, colour_jitter, 3), 0, 255))
        ImageDraw.Draw(img).ellipse([8 - r, 8 - r, 8 + r, 8 + r], fill=c)
        out.append(np.asarray(img).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out)).float() / 127.5 - 1


def test_two_sample_test_is_chance_on_one_distribution_and_sure_on_two():
    same = _discs(120, 30, (3, 6), seed=1)
    r = c2st(same[:60], same[60:], epochs=10)
    assert r["n"] == 60 and len(r["folds"]) == 5
    assert abs(r["accuracy"] - 0.5) < 0.15  # sd under the null: 0.5 / sqrt(120) = 0.046
    squares = torch.ones(60, 3, 16, 16)
    squares[:, :, 4:12, 4:12] = -0.5
    r = c2st(_discs(60, 30, (3, 6), seed=2), squares, epochs=10)
    assert r["accuracy"] > 0.95


def test_block_shuffle_keeps_each_tiles_colours_and_breaks_its_structure():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    y = block_shuffle(x, 8, seed=0)
    assert not torch.equal(x, y)
    for i in (0, 8):
        for j in (0, 8):
            a = x[:, :, i:i + 8, j:j + 8].flatten(2).sort(-1).values
            b = y[:, :, i:i + 8, j:j + 8].flatten(2).sort(-1).values
            assert torch.equal(a, b)
    # the same permutation for the three colours of a pixel: pixels move whole
    moved = y[0, 1] - y[0, 0]
    assert torch.all(moved == 256)


# --- PokeNet ---------------------------------------------------------------------------------------------

def _shapes(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four 'species' of synthetic creatures: disc, square, triangle, cross, in random colours and sizes."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(4):
        for _ in range(n_per_class):
            img = Image.new("RGB", (16, 16), "white")
            d = ImageDraw.Draw(img)
            c = tuple(int(v) for v in rng.integers(0, 200, 3))
            r = int(rng.integers(4, 7))
            box = [8 - r, 8 - r, 8 + r, 8 + r]
            if label == 0:
                d.ellipse(box, fill=c)
            elif label == 1:
                d.rectangle(box, fill=c)
            elif label == 2:
                d.polygon([(8, 8 - r), (8 - r, 8 + r), (8 + r, 8 + r)], fill=c)
            else:
                d.rectangle([8 - r, 7, 8 + r, 9], fill=c)
                d.rectangle([7, 8 - r, 9, 8 + r], fill=c)
            images.append(np.asarray(img).transpose(2, 0, 1))
            labels.append(label)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def test_pokenet_learns_shapes_whatever_their_colour(tmp_path):
    images, labels = _shapes(40, seed=0)
    val_images, val_labels = _shapes(10, seed=1)
    data = ClassifierData(images, labels, torch.tensor([2, 3] * (len(labels) // 2)), [1, 2, 3, 4], val_images,
                          val_labels, [f"v{i}" for i in range(len(val_labels))], "synthetic")
    cfg = load_config(PokeNetConfig, None, ["device=cpu", "data.size=16", "model.widths=[8,16]", "model.stem=8",
                                            "train.steps=150", "train.max_minutes=0", "train.batch_size=32",
                                            "train.warmup_steps=10", "train.log_every=50",
                                            "data.mix.artwork=0", "data.mix.dream_world=0"])
    result = train(cfg, str(tmp_path / "run"), data=data)
    assert result["steps"] == 150
    assert result["validation"]["colour"]["top1"] > 0.6  # chance: 0.25
    assert result["validation"]["grey"]["top1"] > 0.5
    model, ckpt = load_pokenet(tmp_path / "run" / SHIPPED_NAME, trust=True)
    assert ckpt["classes"] == [1, 2, 3, 4]
    assert validate(model, val_images, val_labels)["colour"] == result["validation"]["colour"]
    with pytest.raises(UserError, match="not the shipped ones"):
        load_pokenet(tmp_path / "run" / SHIPPED_NAME)


def test_augment_keeps_white_around_and_flips():
    x = torch.ones(2, 3, 16, 16)
    x[:, :, 4:12, 2:6] = -1  # a dark bar on the left
    same = augment(x, torch.tensor([False, True]), 0.0, 1.0, torch.Generator().manual_seed(0))
    assert torch.allclose(same[0], x[0], atol=1e-5) and torch.allclose(same[1], x[1].flip(-1), atol=1e-5)
    small = augment(x, torch.tensor([False, False]), 0.1, 0.5, torch.Generator().manual_seed(0))
    assert small.min() >= -1 - 1e-5 and small.max() <= 1 + 1e-5
    assert (small[:, :, 0, :] > 0.99).all()  # zooming out brings in white, not black


def test_accuracy_top1_top5_and_grey():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.15, 0.1], [0.5, 0.15, 0.12, 0.1, 0.08, 0.05]])
    r = accuracy(probs, torch.tensor([2, 5]))
    assert r == {"n": 2, "top1": 0.5, "top5": 0.5}
    assert accuracy(probs, torch.tensor([-1, 0]))["n"] == 1
    g = grey(torch.tensor([[[[255]], [[0]], [[0]]]], dtype=torch.uint8))
    assert g.shape == (1, 3, 1, 1) and g.flatten().tolist() == [76, 76, 76]


def test_validation_names_hold_out_whole_species():
    names = ["1", "2", "2-mega", "3", "4", "5"]
    dex = torch.tensor([1, 2, 2, 3, 4, 5])
    val = validation_names(names, dex, torch.tensor([5]), torch.tensor([1, 2, 3, 4]), share=0.5, seed=0)
    assert "5" in val and len(val) >= 3
    assert ("2" in val) == ("2-mega" in val)


REAL = os.environ.get("POKEMON_DATA")
SHIPPED = Path(__file__).resolve().parents[1] / SHIPPED_DIR / SHIPPED_NAME


@pytest.mark.skipif(not REAL or not SHIPPED.is_file(), reason="needs POKEMON_DATA and the shipped PokeNet weights")
def test_shipped_pokenet_matches_its_hash_and_its_recorded_accuracy(tmp_path):
    model, ckpt = load_pokenet(SHIPPED)  # refuses an unknown hash
    record = json.loads((SHIPPED.parent / "pokenet.json").read_text())
    images, labels = validation_artworks(ckpt, REAL, cache_dir=str(tmp_path))
    val = validate(model, images, labels)
    for mode in ("colour", "grey"):
        for k in ("top1", "top5"):
            assert val[mode][k] == pytest.approx(record["validation_float16"][mode][k], abs=1e-9)
    assert math.isclose(val["colour"]["n"], record["validation_float16"]["colour"]["n"])
